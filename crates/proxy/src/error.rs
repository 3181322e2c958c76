//! The answers the gateway gives of its own when a request cannot be forwarded.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use http::StatusCode;

use crate::body::RequestBodyError;
use crate::target::TargetError;

/// Why a request got an answer from the gateway instead of from its upstream.
///
/// Each variant says where the trouble came from: the downstream client's request, the
/// route table, or the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The path names no route (or no gateway path).
    #[error("no route")]
    NoRoute,
    /// The request target is malformed.
    #[error("bad request target: {0}")]
    BadTarget(#[from] TargetError),
    /// The request carries no token the server accepts.
    #[error("not authenticated: {0}")]
    Unauthenticated(&'static str),
    /// The token is valid, but its user may not see the task.
    #[error("the user may not see this task")]
    Forbidden,
    /// Authentication could not be decided: the server could not be asked.
    #[error("authentication is unavailable: ClearML cannot be asked and no decision is cached")]
    AuthUnavailable,
    /// A `/_gateway/login` request without a usable `token` or `next`.
    #[error("invalid login hand-off: {0}")]
    BadLogin(&'static str),
    /// The method cannot be forwarded (`CONNECT`, `TRACE`).
    #[error("method {0} is not forwarded")]
    MethodNotAllowed(http::Method),
    /// The request uses a transfer coding other than plain `chunked`.
    #[error("unsupported Transfer-Encoding {0:?}")]
    UnsupportedTransferEncoding(String),
    /// An HTTP/1.1 request without `Host`, with several, or with one that is not a host.
    #[error("invalid Host: {0}")]
    BadHost(&'static str),
    /// The request target alone is longer than the head limit.
    #[error("request target of {size} bytes exceeds the limit of {limit}")]
    UriTooLong {
        /// Bytes in the request target.
        size: usize,
        /// The configured head limit.
        limit: usize,
    },
    /// The request already passed through this gateway (its own `Via` entry): the route
    /// leads back into the gateway.
    #[error("the request already carries this gateway's Via entry: the route loops back")]
    LoopDetected,
    /// The request head is larger than the configured limit.
    #[error("request headers of {size} bytes exceed the limit of {limit}")]
    HeadersTooLarge {
        /// Bytes in the request head.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The request body is larger than the configured limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// The downstream client stopped sending its body.
    #[error("the client sent no body data for {timeout:?}")]
    ClientBodyTimeout {
        /// The configured client body timeout.
        timeout: Duration,
    },
    /// The downstream client failed while sending its body (it went away, or sent garbage).
    #[error("client request body failed")]
    ClientBody {
        /// The upstream exchange's error, whose causes include the client's.
        #[source]
        source: crate::pool::UpstreamError,
    },
    /// The upstream could not be connected to (refused, unreachable, name not resolved).
    #[error("upstream {upstream} unreachable")]
    UpstreamUnreachable {
        /// `host:port` of the upstream.
        upstream: String,
        /// The connector's error.
        #[source]
        source: crate::pool::UpstreamError,
    },
    /// The upstream's address is outside `ROUTER__UPSTREAM__ALLOW_CIDRS`.
    #[error("upstream {upstream} not allowed: {reason}")]
    UpstreamNotAllowed {
        /// `host:port` of the upstream.
        upstream: String,
        /// Which address was refused.
        reason: String,
    },
    /// Connecting to the upstream took longer than the connect timeout.
    #[error("upstream {upstream} did not accept a connection within {timeout:?}")]
    UpstreamConnectTimeout {
        /// `host:port` of the upstream.
        upstream: String,
        /// The configured connect timeout.
        timeout: Duration,
    },
    /// The upstream sent no response headers within the response header timeout.
    #[error("upstream {upstream} sent no response headers within {timeout:?}")]
    UpstreamTimeout {
        /// `host:port` of the upstream.
        upstream: String,
        /// The configured response header timeout.
        timeout: Duration,
    },
    /// The upstream answered with something the gateway cannot pass on.
    #[error("upstream {upstream} sent an invalid response: {reason}")]
    UpstreamInvalidResponse {
        /// `host:port` of the upstream.
        upstream: String,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// The gateway holds as many client connections as `ROUTER__HTTP__MAX_CONNECTIONS` allows,
    /// or has no file descriptor left for another.
    #[error("too many open client connections")]
    TooManyConnections,
    /// The upstream connection failed before a complete response head arrived.
    #[error("upstream {upstream} failed")]
    UpstreamFailed {
        /// `host:port` of the upstream.
        upstream: String,
        /// The client's error.
        #[source]
        source: crate::pool::UpstreamError,
    },
}

impl ProxyError {
    /// The status code the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute | ProxyError::BadTarget(TargetError::NotARouteKey) => {
                StatusCode::NOT_FOUND
            }
            ProxyError::BadTarget(_)
            | ProxyError::ClientBody { .. }
            | ProxyError::BadLogin(_)
            | ProxyError::BadHost(_) => StatusCode::BAD_REQUEST,
            ProxyError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ProxyError::LoopDetected => StatusCode::LOOP_DETECTED,
            ProxyError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ProxyError::Forbidden => StatusCode::FORBIDDEN,
            ProxyError::AuthUnavailable | ProxyError::TooManyConnections => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::UnsupportedTransferEncoding(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::ClientBodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::UpstreamUnreachable { .. }
            | ProxyError::UpstreamFailed { .. }
            | ProxyError::UpstreamInvalidResponse { .. }
            | ProxyError::UpstreamNotAllowed { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamConnectTimeout { .. } | ProxyError::UpstreamTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
        }
    }

    /// A short, stable name for the error, sent to clients and written to logs.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::NoRoute | ProxyError::BadTarget(TargetError::NotARouteKey) => "no_route",
            ProxyError::BadTarget(TargetError::EncodedSlash) => "encoded_slash_in_route",
            ProxyError::BadTarget(TargetError::DotSegment) => "dot_segment_in_path",
            ProxyError::BadTarget(TargetError::BadPercentEncoding) => "invalid_percent_encoding",
            ProxyError::BadTarget(TargetError::Unforwardable) => "invalid_target",
            ProxyError::Unauthenticated(_) => "unauthenticated",
            ProxyError::Forbidden => "forbidden",
            ProxyError::AuthUnavailable => "auth_unavailable",
            ProxyError::TooManyConnections => "too_many_connections",
            ProxyError::BadLogin(_) => "invalid_login",
            ProxyError::MethodNotAllowed(_) => "method_not_allowed",
            ProxyError::UnsupportedTransferEncoding(_) => "unsupported_transfer_encoding",
            ProxyError::HeadersTooLarge { .. } => "headers_too_large",
            ProxyError::BadHost(_) => "invalid_host",
            ProxyError::UriTooLong { .. } => "uri_too_long",
            ProxyError::LoopDetected => "loop_detected",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::ClientBodyTimeout { .. } => "client_body_timeout",
            ProxyError::ClientBody { .. } => "client_body_failed",
            ProxyError::UpstreamUnreachable { .. } => "upstream_unreachable",
            ProxyError::UpstreamNotAllowed { .. } => "upstream_not_allowed",
            ProxyError::UpstreamConnectTimeout { .. } => "upstream_connect_timeout",
            ProxyError::UpstreamTimeout { .. } => "upstream_timeout",
            ProxyError::UpstreamFailed { .. } => "upstream_failed",
            ProxyError::UpstreamInvalidResponse { .. } => "upstream_invalid_response",
        }
    }

    /// The message a client may see: no upstream address, nothing internal.
    pub fn public_message(&self) -> &'static str {
        match self {
            ProxyError::NoRoute | ProxyError::BadTarget(TargetError::NotARouteKey) => {
                "no service is routed at this path"
            }
            ProxyError::BadTarget(TargetError::EncodedSlash) => {
                "the service segment of the path holds an encoded '/'"
            }
            ProxyError::BadTarget(TargetError::DotSegment) => {
                "the path holds a '.' or '..' segment"
            }
            ProxyError::BadTarget(TargetError::Unforwardable) => {
                "the request target cannot be forwarded"
            }
            ProxyError::BadTarget(TargetError::BadPercentEncoding) => {
                "the service segment of the path holds an invalid percent-encoding"
            }
            ProxyError::Unauthenticated(_) => "log in to ClearML to reach this service",
            ProxyError::Forbidden => "your ClearML user may not see this task",
            ProxyError::AuthUnavailable => {
                "ClearML cannot be reached to check your login; try again shortly"
            }
            ProxyError::TooManyConnections => {
                "the gateway has too many open connections; try again shortly"
            }
            ProxyError::BadLogin(reason) => reason,
            ProxyError::MethodNotAllowed(_) => "this method is not forwarded",
            ProxyError::UnsupportedTransferEncoding(_) => {
                "only the chunked transfer coding is supported"
            }
            ProxyError::HeadersTooLarge { .. } => "the request headers are too large",
            ProxyError::BadHost(reason) => reason,
            ProxyError::UriTooLong { .. } => "the request target is too long",
            ProxyError::LoopDetected => {
                "the request came back to this gateway: the service's address leads to the gateway itself"
            }
            ProxyError::BodyTooLarge { .. } => "the request body is too large",
            ProxyError::ClientBodyTimeout { .. } => "the request body stopped arriving",
            ProxyError::ClientBody { .. } => "the request body could not be read",
            ProxyError::UpstreamUnreachable { .. } => "the service is not reachable",
            ProxyError::UpstreamNotAllowed { .. } => {
                "the service's address is outside the networks this gateway may reach"
            }
            ProxyError::UpstreamConnectTimeout { .. } => {
                "the service did not accept a connection in time"
            }
            ProxyError::UpstreamTimeout { .. } => "the service did not answer in time",
            ProxyError::UpstreamFailed { .. } | ProxyError::UpstreamInvalidResponse { .. } => {
                "the service failed to answer"
            }
        }
    }

    /// Sorts out a failed upstream exchange by what is found along the error's source chain:
    /// a failure of the client's body is the client's, not the upstream's.
    pub(crate) fn from_upstream(
        err: crate::pool::UpstreamError,
        upstream: String,
        connect_timeout: Duration,
    ) -> Self {
        match find_source::<RequestBodyError>(&err) {
            Some(RequestBodyError::TooLarge { limit }) => {
                return ProxyError::BodyTooLarge { limit: *limit };
            }
            Some(RequestBodyError::TimedOut(timeout)) => {
                return ProxyError::ClientBodyTimeout { timeout: *timeout };
            }
            Some(RequestBodyError::Client(_)) => return ProxyError::ClientBody { source: err },
            None => {}
        }
        if let Some(refused) = find_not_allowed(&err) {
            let reason = refused.to_string();
            return ProxyError::UpstreamNotAllowed { upstream, reason };
        }
        if matches!(err, crate::pool::UpstreamError::Connect(_)) {
            let timed_out = find_source::<io::Error>(&err)
                .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut);
            return if timed_out {
                ProxyError::UpstreamConnectTimeout {
                    upstream,
                    timeout: connect_timeout,
                }
            } else {
                ProxyError::UpstreamUnreachable {
                    upstream,
                    source: err,
                }
            };
        }
        ProxyError::UpstreamFailed {
            upstream,
            source: err,
        }
    }
}

impl From<crate::auth::Denial> for ProxyError {
    fn from(denial: crate::auth::Denial) -> Self {
        match denial {
            crate::auth::Denial::Unauthenticated(why) => ProxyError::Unauthenticated(why),
            crate::auth::Denial::Forbidden => ProxyError::Forbidden,
            crate::auth::Denial::Unavailable => ProxyError::AuthUnavailable,
        }
    }
}

/// The address policy's refusal along the chain; it travels inside an `io::Error`, whose
/// `source()` skips the error it wraps.
fn find_not_allowed<'a>(
    err: &'a (dyn StdError + 'static),
) -> Option<&'a crate::policy::AddressNotAllowed> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        let wrapped = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref);
        if let Some(found) = wrapped.and_then(|inner| inner.downcast_ref()) {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// The first error of type `T` along `err`'s chain of sources, `err` included.
pub(crate) fn find_source<'a, T: StdError + 'static>(
    err: &'a (dyn StdError + 'static),
) -> Option<&'a T> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}
