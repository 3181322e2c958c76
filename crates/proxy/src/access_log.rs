//! One log line per request, written when its response has been sent (or abandoned).

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode, Uri};

use crate::access_line::AccessFields;
use crate::conn::ActiveRequest;
use crate::metrics::RouteKind;
use crate::routes::Route;

/// What the access line of one request says, filled in as the request goes.
#[derive(Debug)]
pub(crate) struct AccessLog {
    start: Instant,
    method: Method,
    uri: Uri,
    peer: IpAddr,
    route: Option<Arc<Route>>,
    status: StatusCode,
    upstream_time: Option<Duration>,
    error: Option<(&'static str, String)>,
    kind: RouteKind,
    written: bool,
    _active: ActiveRequest,
}

/// nginx's status for a request whose client went away before the response was sent.
const CLIENT_CLOSED_REQUEST: u16 = 499;

impl AccessLog {
    pub(crate) fn start(method: &Method, uri: &Uri, peer: IpAddr, active: ActiveRequest) -> Self {
        Self {
            start: Instant::now(),
            method: method.clone(),
            uri: uri.clone(),
            peer: peer.to_canonical(),
            route: None,
            status: StatusCode::from_u16(CLIENT_CLOSED_REQUEST).unwrap_or(StatusCode::BAD_REQUEST),
            upstream_time: None,
            error: None,
            kind: RouteKind::Other,
            written: false,
            _active: active,
        }
    }

    /// The client's address as a header value.
    pub(crate) fn peer_header(&self) -> &http::HeaderValue {
        self._active.peer_header()
    }

    /// The request's connection, for a tunnel that takes it over.
    pub(crate) fn connection(&self) -> Arc<crate::conn::ConnActivity> {
        self._active.connection()
    }

    pub(crate) fn started_at(&self) -> Instant {
        self.start
    }

    pub(crate) fn set_route(&mut self, route: Arc<Route>) {
        self.route = Some(route);
    }

    pub(crate) fn set_kind(&mut self, kind: RouteKind) {
        self.kind = kind;
    }

    pub(crate) fn set_status(&mut self, status: StatusCode) {
        self.status = status;
    }

    pub(crate) fn set_upstream_time(&mut self, elapsed: Duration) {
        self.upstream_time = Some(elapsed);
    }

    /// Records why the gateway answered itself, with the whole chain of causes.
    pub(crate) fn set_error(&mut self, code: &'static str, err: &(dyn StdError + 'static)) {
        self.error = Some((code, error_chain(err)));
    }

    /// Writes the line. `complete` is false when the body stopped early (client gone,
    /// upstream failed mid-stream).
    pub(crate) fn finish(&mut self, bytes: u64, complete: bool) {
        if std::mem::replace(&mut self.written, true) {
            return;
        }
        self._active
            .metrics()
            .request(self.kind, self.status, self.upstream_time);
        let status = self.status.as_u16();
        // A server error the gateway answered itself is a warning; so a filter such as
        // `access=warn` keeps exactly those lines.
        let warn = status >= 500 && self.error.is_some();
        let enabled = if warn {
            tracing::enabled!(target: "access", tracing::Level::WARN)
        } else {
            tracing::enabled!(target: "access", tracing::Level::INFO)
        };
        if !enabled {
            return;
        }
        let fields = AccessFields {
            method: self.method.as_str(),
            path: self.uri.path(),
            route: self.route.as_ref().map(|r| r.key()),
            status,
            upstream: self.upstream_time,
            duration: self.start.elapsed(),
            bytes,
            complete,
            peer: self.peer,
            error: self
                .error
                .as_ref()
                .map(|(code, detail)| (*code, detail.as_str())),
        };
        match self._active.access_sink() {
            Some(sink) => LINE.with_borrow_mut(|line| {
                line.clear();
                fields.line(sink.format(), warn, line);
                sink.write_line(line, warn);
            }),
            None => {
                let mut text = Vec::with_capacity(256);
                fields.text_fields(&mut text);
                let text = String::from_utf8_lossy(&text);
                if warn {
                    tracing::warn!(target: "access", "{text}");
                } else {
                    tracing::info!(target: "access", "{text}");
                }
            }
        }
    }
}

thread_local! {
    /// The line being written: one buffer per thread, reused, instead of one per request.
    static LINE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(512));
}

/// A request dropped before any response was made — its client went away while the
/// upstream was thinking, or shutdown cut it — still gets its line, as a 499.
impl Drop for AccessLog {
    fn drop(&mut self) {
        self.finish(0, false);
    }
}

/// A duration in milliseconds with microsecond precision, for log fields.
pub(crate) fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

/// `err: cause: cause…`, skipping causes whose text the previous one already includes.
pub(crate) fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            let _ = write!(text, ": {part}");
        }
        source = cause.source();
    }
    text
}
