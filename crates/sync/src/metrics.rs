//! What the sync has done, for `/_gateway/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gateway_proxy::MetricsSource;
use gateway_proxy::metrics::{counter, header};

/// Counters of the sync loop and its write-backs.
#[derive(Debug, Default)]
pub struct SyncMetrics {
    polls: AtomicU64,
    errors: AtomicU64,
    last_success_unix: AtomicU64,
    last_duration_micros: AtomicU64,
    writes: AtomicU64,
    write_failures: AtomicU64,
}

impl SyncMetrics {
    pub(crate) fn succeeded(&self, took: Duration) {
        self.polls.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_success_unix.store(now, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.last_duration_micros.store(micros, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn written(&self, ok: bool) {
        let counter = if ok {
            &self.writes
        } else {
            &self.write_failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl MetricsSource for SyncMetrics {
    fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            out,
            "clearml_gateway_sync_polls_total",
            "ClearML polls, successful or not.",
            load(&self.polls),
        );
        counter(
            out,
            "clearml_gateway_sync_errors_total",
            "ClearML polls that failed.",
            load(&self.errors),
        );
        header(
            out,
            "clearml_gateway_sync_last_success_timestamp_seconds",
            "gauge",
            "When the last poll succeeded (Unix time).",
        );
        let _ = writeln!(
            out,
            "clearml_gateway_sync_last_success_timestamp_seconds {}",
            load(&self.last_success_unix)
        );
        header(
            out,
            "clearml_gateway_sync_duration_seconds",
            "gauge",
            "How long the last successful poll took.",
        );
        let _ = writeln!(
            out,
            "clearml_gateway_sync_duration_seconds {}",
            load(&self.last_duration_micros) as f64 / 1e6
        );
        header(
            out,
            "clearml_gateway_writebacks_total",
            "counter",
            "Endpoint write-backs to tasks, by outcome.",
        );
        let _ = writeln!(
            out,
            "clearml_gateway_writebacks_total{{result=\"ok\"}} {}",
            load(&self.writes)
        );
        let _ = writeln!(
            out,
            "clearml_gateway_writebacks_total{{result=\"failed\"}} {}",
            load(&self.write_failures)
        );
    }
}
