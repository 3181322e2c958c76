//! Request and response bodies as they stream through the gateway, frame by frame.
//!
//! Neither is ever buffered whole: each frame is handed on as it arrives, and hyper's
//! flow control (TCP windows, HTTP/2 windows) carries backpressure end to end.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::access_log::AccessLog;
use crate::pool::Lease;

/// Why the request body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// The body grew past the configured limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// The downstream client sent nothing for longer than the client body timeout.
    #[error("the client sent no body data for {0:?}")]
    TimedOut(Duration),
    /// The downstream client failed to deliver the rest of the body.
    #[error("client body: {0}")]
    Client(#[source] hyper::Error),
}

/// When the request body last made progress, so that the response header timeout counts
/// from the end of a long upload rather than from its start.
#[derive(Debug)]
pub(crate) struct UploadClock {
    epoch: Instant,
    last_progress_ms: AtomicU64,
}

impl UploadClock {
    pub(crate) fn new(epoch: Instant) -> Arc<Self> {
        Arc::new(Self {
            epoch,
            last_progress_ms: AtomicU64::new(0),
        })
    }

    fn tick(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_progress_ms.store(ms, Ordering::Relaxed);
    }

    /// The instant the body last delivered a frame (or the epoch, if none yet).
    pub(crate) fn last_progress(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_progress_ms.load(Ordering::Relaxed))
    }
}

/// The downstream body on its way upstream, cut off at the configured limit and when the
/// client stalls.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    limit: Option<u64>,
    seen: u64,
    /// Present while a body is expected: fires when the client stalls.
    stall: Option<(Pin<Box<Sleep>>, Duration)>,
    clock: Option<Arc<UploadClock>>,
}

impl RequestBody {
    pub(crate) fn new(
        inner: Incoming,
        limit: Option<u64>,
        stall_timeout: Duration,
        clock: Option<Arc<UploadClock>>,
    ) -> Self {
        let stall = (!inner.is_end_stream())
            .then(|| (Box::pin(tokio::time::sleep(stall_timeout)), stall_timeout));
        Self {
            inner,
            limit,
            seen: 0,
            stall,
            clock,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if let Some((timer, timeout)) = &mut this.stall {
                    if timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Some(Err(RequestBodyError::TimedOut(*timeout))));
                    }
                }
                return Poll::Pending;
            }
        };
        if let Some(clock) = &this.clock {
            clock.tick();
        }
        if let Some((timer, timeout)) = &mut this.stall {
            timer.as_mut().reset(tokio::time::Instant::now() + *timeout);
        }
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(err)) => return Poll::Ready(Some(Err(RequestBodyError::Client(err)))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref() {
            this.seen += data.len() as u64;
            if let Some(limit) = this.limit.filter(|limit| this.seen > *limit) {
                return Poll::Ready(Some(Err(RequestBodyError::TooLarge { limit })));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response on its way to the client: the upstream's streamed body, or a short answer of
/// the gateway's own. Counts the bytes sent and writes the access log line when done.
#[derive(Debug)]
pub struct ResponseBody {
    source: Source,
    sent: u64,
    complete: bool,
    log: AccessLog,
    /// The upstream connection, back to the pool once its response has been read whole.
    lease: Option<Lease>,
}

#[derive(Debug)]
enum Source {
    Upstream(Incoming),
    Local(Option<Bytes>),
}

impl ResponseBody {
    pub(crate) fn upstream(body: Incoming, lease: Option<Lease>, log: AccessLog) -> Self {
        let mut this = Self::with_source(Source::Upstream(body), log);
        this.lease = lease;
        this
    }

    pub(crate) fn local(bytes: Bytes, log: AccessLog) -> Self {
        let bytes = (!bytes.is_empty()).then_some(bytes);
        Self::with_source(Source::Local(bytes), log)
    }

    fn with_source(source: Source, log: AccessLog) -> Self {
        Self {
            source,
            sent: 0,
            complete: false,
            log,
            lease: None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = match &mut this.source {
            Source::Upstream(body) => ready!(Pin::new(body).poll_frame(cx)),
            Source::Local(bytes) => bytes.take().map(|b| Ok(Frame::data(b))),
        };
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                }
            }
            Some(Err(_)) => {}
            None => this.complete = true,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Upstream(body) => body.is_end_stream(),
            Source::Local(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Upstream(body) => body.size_hint(),
            Source::Local(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let complete = self.complete || self.is_end_stream();
        self.log.finish(self.sent, complete);
        // Only a response read whole leaves its connection fit for another request; the
        // body goes first, so that the connection is done with it.
        self.source = Source::Local(None);
        if let (true, Some(lease)) = (complete, self.lease.take()) {
            lease.release();
        }
    }
}
