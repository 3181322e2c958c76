//! One client connection from accept to close: idle timeout and graceful shutdown.

use std::future::Future;
use std::net::IpAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::HeaderValue;
use tokio::time::{Instant as TokioInstant, sleep_until};

use crate::access_line::AccessSink;
use crate::limit::ConnectionSlot;
use crate::metrics::ProxyMetrics;
use tokio_util::sync::CancellationToken;

/// Whether a connection has requests in flight, and since when it has had none. Lives as
/// long as the connection: its requests and a tunnel it became hold it too.
#[derive(Debug)]
pub(crate) struct ConnActivity {
    opened: Instant,
    in_flight: AtomicUsize,
    idle_since_ms: AtomicU64,
    metrics: Arc<ProxyMetrics>,
    access_sink: Option<Arc<dyn AccessSink>>,
    /// The peer's address as `X-Real-IP` / `X-Forwarded-For` carry it, made once.
    peer_header: HeaderValue,
    /// The connection's place under the cap, given back when it closes.
    _slot: ConnectionSlot,
}

impl ConnActivity {
    /// A connection just opened; counted open until the last reference to it goes.
    pub(crate) fn new(
        metrics: Arc<ProxyMetrics>,
        access_sink: Option<Arc<dyn AccessSink>>,
        peer: IpAddr,
        slot: ConnectionSlot,
    ) -> Arc<Self> {
        metrics.connection(1);
        Arc::new(Self {
            _slot: slot,
            peer_header: crate::headers::ip_value(peer),
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            metrics,
            access_sink,
        })
    }

    /// The metrics the connection's requests are counted in.
    pub(crate) fn metrics(&self) -> &ProxyMetrics {
        &self.metrics
    }

    /// Marks a request as started; it ends when the returned guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> ActiveRequest {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        ActiveRequest(Arc::clone(self))
    }

    /// When the connection became idle, or `None` while a request is in flight.
    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ms = self.idle_since_ms.load(Ordering::Acquire);
        Some(self.opened + Duration::from_millis(ms))
    }
}

impl Drop for ConnActivity {
    fn drop(&mut self) {
        self.metrics.connection(-1);
    }
}

/// Held by a request from its head to the end of its response body.
#[derive(Debug)]
pub(crate) struct ActiveRequest(Arc<ConnActivity>);

impl ActiveRequest {
    /// The metrics of the request's connection.
    pub(crate) fn metrics(&self) -> &ProxyMetrics {
        self.0.metrics()
    }

    /// Where the request's access line goes; `None`: through `tracing`.
    pub(crate) fn access_sink(&self) -> Option<&dyn AccessSink> {
        self.0.access_sink.as_deref()
    }

    /// The client's address as a header value.
    pub(crate) fn peer_header(&self) -> &HeaderValue {
        &self.0.peer_header
    }

    /// The connection itself, for a tunnel that takes it over: it stays counted (and under
    /// the cap) until the tunnel closes.
    pub(crate) fn connection(&self) -> Arc<ConnActivity> {
        Arc::clone(&self.0)
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        let ms = self.0.opened.elapsed().as_millis() as u64;
        self.0.idle_since_ms.store(ms, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Drives `conn` until it closes; closes it gracefully once it has been idle for
/// `idle_timeout` or when `shutdown` is cancelled.
pub(crate) async fn drive<C>(
    conn: C,
    graceful_shutdown: impl Fn(Pin<&mut C>),
    activity: Arc<ConnActivity>,
    idle_timeout: Duration,
    shutdown: CancellationToken,
) -> C::Output
where
    C: Future,
{
    let mut conn = pin!(conn);
    let mut idle_check = pin!(sleep_until(TokioInstant::now() + idle_timeout));
    let mut closing = false;
    loop {
        tokio::select! {
            output = conn.as_mut() => return output,
            _ = shutdown.cancelled(), if !closing => {
                graceful_shutdown(conn.as_mut());
                closing = true;
            }
            _ = idle_check.as_mut(), if !closing => {
                let now = Instant::now();
                match activity.idle_since() {
                    Some(since) if now.duration_since(since) >= idle_timeout => {
                        graceful_shutdown(conn.as_mut());
                        closing = true;
                    }
                    Some(since) => idle_check.as_mut().reset((since + idle_timeout).into()),
                    None => idle_check.as_mut().reset((now + idle_timeout).into()),
                }
            }
        }
    }
}
