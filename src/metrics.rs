//! TCP session counters on `/_gateway/metrics`: `gateway-tcp` counts, the binary renders, so
//! that the TCP crate need not know the page's format.

use std::fmt::Write as _;
use std::sync::Arc;

use gateway_proxy::MetricsSource;
use gateway_proxy::metrics::{gauge, header};
use gateway_tcp::TcpCounters;

/// Renders the session ports' counters.
#[derive(Debug)]
pub struct TcpMetrics(pub Arc<TcpCounters>);

impl MetricsSource for TcpMetrics {
    fn render(&self, out: &mut String) {
        let counters = &self.0;
        gauge(
            out,
            "clearml_gateway_tcp_sessions_open",
            "TCP session connections open.",
            counters.open_connections(),
        );
        gauge(
            out,
            "clearml_gateway_tcp_ports_in_use",
            "TCP session ports open.",
            counters.ports(),
        );
        let (up, down) = counters.bytes();
        header(
            out,
            "clearml_gateway_tcp_bytes_total",
            "counter",
            "Bytes moved through TCP session ports, by direction.",
        );
        let _ = writeln!(
            out,
            "clearml_gateway_tcp_bytes_total{{direction=\"to_task\"}} {up}"
        );
        let _ = writeln!(
            out,
            "clearml_gateway_tcp_bytes_total{{direction=\"from_task\"}} {down}"
        );
    }
}
