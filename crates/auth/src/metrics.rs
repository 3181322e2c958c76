//! How the authentication cache does, for `/_gateway/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use gateway_proxy::MetricsSource;
use gateway_proxy::metrics::header;

/// Cache hits and misses, by question.
#[derive(Debug, Default)]
pub struct AuthMetrics {
    pub(crate) identity_hits: AtomicU64,
    pub(crate) identity_misses: AtomicU64,
    pub(crate) visibility_hits: AtomicU64,
    pub(crate) visibility_misses: AtomicU64,
}

impl AuthMetrics {
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl MetricsSource for AuthMetrics {
    fn render(&self, out: &mut String) {
        header(
            out,
            "clearml_gateway_auth_cache_total",
            "counter",
            "Authentication decisions answered from the cache (hit) or not (miss), by question.",
        );
        for (question, hits, misses) in [
            ("identity", &self.identity_hits, &self.identity_misses),
            ("visibility", &self.visibility_hits, &self.visibility_misses),
        ] {
            let (hits, misses) = (hits.load(Ordering::Relaxed), misses.load(Ordering::Relaxed));
            let _ = writeln!(
                out,
                "clearml_gateway_auth_cache_total{{question=\"{question}\",result=\"hit\"}} {hits}"
            );
            let _ = writeln!(
                out,
                "clearml_gateway_auth_cache_total{{question=\"{question}\",result=\"miss\"}} {misses}"
            );
        }
    }
}
