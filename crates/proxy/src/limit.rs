//! The cap on open client connections (`ROUTER__HTTP__MAX_CONNECTIONS`).
//!
//! A connection beyond the cap is accepted, answered `503 too_many_connections` at once and
//! closed: left in the listen queue it would hang until the client gave up, and the client
//! could not tell an overloaded gateway from a dead one. Running out of file descriptors is
//! met the same way, in the room of a descriptor kept spare for it. Either is said in a
//! warning at most every [`WARN_EVERY`], however many connections are refused.

use std::fs::File;
use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::answers::{Audience, error_response};
use crate::error::ProxyError;
use crate::metrics::ProxyMetrics;

/// Refusals and accept failures are logged at most this often.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);

/// How long a refused connection is read from (and what it sends discarded) after the
/// answer: closing a socket with unread data sends a reset, which some clients take before
/// they have read the answer.
const LINGER: Duration = Duration::from_millis(500);

/// At most this many refused connections linger at once; beyond, they are closed at once,
/// so that a flood cannot hold descriptors through the refusals themselves.
const MAX_LINGERING: usize = 256;

/// Why a connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The cap's number of connections are open.
    AtCap,
    /// The process has no file descriptor left (`EMFILE`, `ENFILE`).
    OutOfDescriptors,
}

/// Counts open client connections against the cap and refuses those beyond it.
#[derive(Debug)]
pub(crate) struct ConnectionLimit {
    max: usize,
    open: AtomicUsize,
    lingering: AtomicUsize,
    metrics: Arc<ProxyMetrics>,
    /// The whole `503` response, made once.
    answer: Bytes,
    refusals: Throttle,
    accept_errors: Throttle,
}

/// One open connection's place under the cap, given back when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionSlot(Arc<ConnectionLimit>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionLimit {
    /// A cap of `max` open connections; refusals are counted in `metrics`.
    pub(crate) fn new(max: usize, metrics: Arc<ProxyMetrics>) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: AtomicUsize::new(0),
            lingering: AtomicUsize::new(0),
            metrics,
            answer: refusal_answer(),
            refusals: Throttle::new(),
            accept_errors: Throttle::new(),
        })
    }

    /// A place for one more connection, unless the cap is reached.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let max = self.max;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()
            .map(|_| ConnectionSlot(Arc::clone(self)))
    }

    /// Answers `stream` with the `503` (when the listener speaks plain HTTP: a TLS client
    /// could not read it) and closes it; counts it, and warns now and then.
    pub(crate) fn refuse(self: &Arc<Self>, stream: TcpStream, why: Refusal, plain_http: bool) {
        self.metrics.connection_refused();
        if let Some(refused) = self.refusals.allow() {
            self.warn_refusing(why, refused);
        }
        if !plain_http {
            return;
        }
        // A few hundred bytes into the empty send buffer of a new socket: written whole.
        let _ = stream.try_write(&self.answer);
        // Out of descriptors, the one this connection holds is needed back at once.
        let may_linger = why == Refusal::AtCap
            && self
                .lingering
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < MAX_LINGERING).then_some(n + 1)
                })
                .is_ok();
        if may_linger {
            tokio::spawn(Arc::clone(self).linger(stream));
        }
    }

    /// Ends the answer with a FIN, reads until the client closes or [`LINGER`] passes, then
    /// closes.
    async fn linger(self: Arc<Self>, mut stream: TcpStream) {
        let _ = stream.shutdown().await;
        let mut discard = [0u8; 1024];
        let drain = async { while let Ok(1..) = stream.read(&mut discard).await {} };
        let _ = tokio::time::timeout(LINGER, drain).await;
        drop(stream);
        self.lingering.fetch_sub(1, Ordering::AcqRel);
    }

    fn warn_refusing(&self, why: Refusal, refused: u64) {
        match why {
            Refusal::AtCap => tracing::warn!(
                max_connections = self.max,
                refused,
                "client connections at the cap (ROUTER__HTTP__MAX_CONNECTIONS): new ones are \
                 answered 503 and closed; warned once per {}s",
                WARN_EVERY.as_secs()
            ),
            Refusal::OutOfDescriptors => tracing::warn!(
                refused,
                "out of file descriptors (the open-file limit, RLIMIT_NOFILE, is reached): new \
                 connections are answered 503 and closed; lower ROUTER__HTTP__MAX_CONNECTIONS \
                 or raise the limit; warned once per {}s",
                WARN_EVERY.as_secs()
            ),
        }
    }

    /// Logs an accept failure that no connection could be refused for, now and then.
    pub(crate) fn warn_accept_failed(&self, err: &io::Error) {
        if let Some(failures) = self.accept_errors.allow() {
            tracing::warn!(
                error = %err,
                failures,
                "accepting connections fails; pausing 50 ms after each failure; warned once per {}s",
                WARN_EVERY.as_secs()
            );
        }
    }
}

/// Whether `err` means the process (or the system) has no file descriptor left.
pub(crate) fn out_of_descriptors(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// A descriptor held in reserve: when the open-file limit is reached, letting it go makes
/// room to accept the waiting connection and refuse it, instead of leaving it hanging.
#[derive(Debug)]
pub(crate) struct SpareDescriptor {
    file: Option<File>,
    /// Given up for a refusal and not yet taken back.
    owed: bool,
}

impl SpareDescriptor {
    /// Takes the spare descriptor (if one is free).
    pub(crate) fn new() -> Self {
        Self {
            file: open_spare(),
            owed: false,
        }
    }

    /// Whether the spare was given up for a refusal and could not be taken back yet: the
    /// next free descriptor must go to it, not to a connection accepted as if all were well.
    pub(crate) fn owed(&self) -> bool {
        self.owed
    }

    /// Lets the spare go and accepts one waiting connection in its place; `None` without a
    /// spare, or when no connection could be taken. Call [`restore`](Self::restore) once
    /// the connection is closed.
    pub(crate) async fn accept_in_its_room(&mut self, listener: &TcpListener) -> Option<TcpStream> {
        drop(self.file.take()?);
        self.owed = true;
        poll_fn(|cx| match listener.poll_accept(cx) {
            Poll::Ready(accepted) => Poll::Ready(accepted.ok().map(|(stream, _)| stream)),
            Poll::Pending => Poll::Ready(None),
        })
        .await
    }

    /// Takes a spare descriptor again, if it was given up and one is free.
    pub(crate) fn restore(&mut self) {
        if self.file.is_none() {
            self.file = open_spare();
        }
        self.owed = self.owed && self.file.is_none();
    }
}

fn open_spare() -> Option<File> {
    File::open("/dev/null").ok()
}

/// The refusal as bytes on the wire: the gateway's usual JSON answer, closing.
fn refusal_answer() -> Bytes {
    let response = error_response(&ProxyError::TooManyConnections, Audience::Program);
    let body = response.body();
    let mut wire = format!("HTTP/1.1 {}\r\n", response.status()).into_bytes();
    for (name, value) in response.headers() {
        wire.extend_from_slice(name.as_str().as_bytes());
        wire.extend_from_slice(b": ");
        wire.extend_from_slice(value.as_bytes());
        wire.extend_from_slice(b"\r\n");
    }
    let framing = format!(
        "connection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    wire.extend_from_slice(framing.as_bytes());
    wire.extend_from_slice(body);
    Bytes::from(wire)
}

/// Lets an event through at most once per [`WARN_EVERY`], counting those held back.
#[derive(Debug)]
struct Throttle {
    started: Instant,
    /// Milliseconds since `started` before which nothing is let through.
    next_ms: AtomicU64,
    /// Events since the last one let through.
    held: AtomicU64,
}

impl Throttle {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            next_ms: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// Records an event; `Some(events since the last one let through, this one included)`
    /// when this one is let through.
    fn allow(&self) -> Option<u64> {
        self.held.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        let period = u64::try_from(WARN_EVERY.as_millis()).unwrap_or(u64::MAX);
        if now < next {
            return None;
        }
        self.next_ms
            .compare_exchange(
                next,
                now.saturating_add(period),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .ok()?;
        Some(self.held.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_gives_out_slots_up_to_its_size_and_takes_them_back_when_dropped() {
        let limit = ConnectionLimit::new(2, Arc::default());
        let first = limit.try_acquire().expect("a first slot");
        let _second = limit.try_acquire().expect("a second slot");
        assert!(limit.try_acquire().is_none());
        drop(first);
        assert!(limit.try_acquire().is_some());
    }

    #[test]
    fn a_throttle_lets_the_first_event_through_and_holds_back_the_rest_of_the_period() {
        let throttle = Throttle::new();
        assert_eq!(throttle.allow(), Some(1));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        // The next period: the events held back are reported with the one let through.
        throttle.next_ms.store(0, Ordering::Relaxed);
        assert_eq!(throttle.allow(), Some(3));
    }

    #[test]
    fn the_refusal_is_a_closing_503_with_the_gateways_json_body() {
        let wire = refusal_answer();
        let text = std::str::from_utf8(&wire).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(head.contains("\r\nretry-after: "), "{head}");
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "too_many_connections");
        assert_eq!(json["status"], 503);
    }

    #[test]
    fn emfile_and_enfile_are_out_of_descriptors_and_other_errors_are_not() {
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(
            libc::ENFILE
        )));
        assert!(!out_of_descriptors(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
        assert!(!out_of_descriptors(&io::Error::other("other")));
    }
}
