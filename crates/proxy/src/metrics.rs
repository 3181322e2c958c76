//! `/_gateway/metrics` in the Prometheus text format: what the request path counts here
//! (relaxed atomics, no lock), and whatever other parts of the gateway add as
//! [`MetricsSource`]s (the sync, authentication, TCP sessions).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;

/// Something that writes its own metrics into the page.
pub trait MetricsSource: Send + Sync + std::fmt::Debug {
    /// Appends `# HELP`, `# TYPE` and sample lines to `out`.
    fn render(&self, out: &mut String);
}

/// Which kind of path a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteKind {
    /// `/service/…`
    Service,
    /// `/_gateway/…`
    Gateway,
    /// Anything else.
    Other,
}

const KINDS: [(&str, RouteKind); 3] = [
    ("service", RouteKind::Service),
    ("gateway", RouteKind::Gateway),
    ("other", RouteKind::Other),
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Upper bounds of the upstream latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// What the request path counts.
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    requests: [[AtomicU64; 5]; 3],
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    open_connections: AtomicI64,
    open_tunnels: AtomicI64,
    refused_connections: AtomicU64,
    max_connections: AtomicI64,
}

impl ProxyMetrics {
    /// Counts one answered request.
    pub(crate) fn request(&self, kind: RouteKind, status: StatusCode, upstream: Option<Duration>) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        let kind = KINDS.iter().position(|(_, k)| *k == kind).unwrap_or(2);
        self.requests[kind][class].fetch_add(1, Ordering::Relaxed);
        if let Some(latency) = upstream {
            let seconds = latency.as_secs_f64();
            if let Some(bucket) = BUCKETS.iter().position(|bound| seconds <= *bound) {
                self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
            }
            self.latency_count.fetch_add(1, Ordering::Relaxed);
            let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            self.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
        }
    }

    /// A client connection opened (+1) or closed (-1).
    pub(crate) fn connection(&self, delta: i64) {
        self.open_connections.fetch_add(delta, Ordering::Relaxed);
    }

    /// A client connection was refused (the cap was reached, or descriptors ran out).
    pub(crate) fn connection_refused(&self) {
        self.refused_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// The cap on open client connections, as shown on the page.
    pub(crate) fn set_max_connections(&self, max: usize) {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.max_connections.store(max, Ordering::Relaxed);
    }

    /// A tunnel (WebSocket or other upgrade) opened (+1) or closed (-1).
    pub(crate) fn tunnel(&self, delta: i64) {
        self.open_tunnels.fetch_add(delta, Ordering::Relaxed);
    }

    /// Writes the request path's metrics, with the number of routes served.
    pub(crate) fn render(&self, routes: usize, out: &mut String) {
        header(
            out,
            "clearml_gateway_requests_total",
            "counter",
            "Requests answered, by route kind and status class.",
        );
        for (k, (kind, _)) in KINDS.iter().enumerate() {
            for (c, class) in CLASSES.iter().enumerate() {
                let n = self.requests[k][c].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "clearml_gateway_requests_total{{kind=\"{kind}\",class=\"{class}\"}} {n}"
                );
            }
        }
        header(
            out,
            "clearml_gateway_upstream_latency_seconds",
            "histogram",
            "Time from sending a request upstream to its response head.",
        );
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.latency_buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "clearml_gateway_upstream_latency_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let sum = self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "clearml_gateway_upstream_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(out, "clearml_gateway_upstream_latency_seconds_sum {sum}");
        let _ = writeln!(
            out,
            "clearml_gateway_upstream_latency_seconds_count {count}"
        );
        gauge(
            out,
            "clearml_gateway_open_connections",
            "Client connections open (WebSockets included).",
            self.open_connections.load(Ordering::Relaxed),
        );
        gauge(
            out,
            "clearml_gateway_max_connections",
            "The most client connections held open at once (ROUTER__HTTP__MAX_CONNECTIONS).",
            self.max_connections.load(Ordering::Relaxed),
        );
        counter(
            out,
            "clearml_gateway_connections_refused_total",
            "Client connections answered 503 and closed: the cap was reached, or file descriptors ran out.",
            self.refused_connections.load(Ordering::Relaxed),
        );
        gauge(
            out,
            "clearml_gateway_open_websockets",
            "WebSockets (and other upgraded connections) open.",
            self.open_tunnels.load(Ordering::Relaxed),
        );
        gauge(
            out,
            "clearml_gateway_routes",
            "Routes served.",
            routes as i64,
        );
    }
}

/// Writes the `# HELP` and `# TYPE` lines of a metric.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes a gauge with its header.
pub fn gauge(out: &mut String, name: &str, help: &str, value: i64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

/// Writes a counter with its header.
pub fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_latencies_are_counted_by_kind_class_and_bucket() {
        let metrics = ProxyMetrics::default();
        metrics.request(
            RouteKind::Service,
            StatusCode::OK,
            Some(Duration::from_millis(3)),
        );
        metrics.request(RouteKind::Service, StatusCode::BAD_GATEWAY, None);
        metrics.request(RouteKind::Other, StatusCode::NOT_FOUND, None);
        let mut page = String::new();
        metrics.render(7, &mut page);
        assert!(
            page.contains("clearml_gateway_requests_total{kind=\"service\",class=\"2xx\"} 1\n")
        );
        assert!(
            page.contains("clearml_gateway_requests_total{kind=\"service\",class=\"5xx\"} 1\n")
        );
        assert!(page.contains("clearml_gateway_requests_total{kind=\"other\",class=\"4xx\"} 1\n"));
        assert!(
            page.contains("clearml_gateway_upstream_latency_seconds_bucket{le=\"0.0025\"} 0\n")
        );
        assert!(page.contains("clearml_gateway_upstream_latency_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(page.contains("clearml_gateway_upstream_latency_seconds_count 1\n"));
        assert!(page.contains("clearml_gateway_routes 7\n"));
    }
}
