//! Sending a routed request to its upstream and bringing back the response head.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{CONTENT_LENGTH, UPGRADE};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::access_log::AccessLog;
use crate::auth::{self, Admission};
use crate::body::{RequestBody, UploadClock};
use crate::error::ProxyError;
use crate::gateway::Gateway;
use crate::headers::{self, ForwardedFor};
use crate::policy::PolicyResolver;
use crate::pool::{Lease, UpstreamPool};
use crate::routes::Route;
use crate::settings::HttpSettings;
use crate::target::TargetError;
use crate::tunnel;

/// Builds the upstream pool: HTTP/1.1 keep-alive, `TCP_NODELAY`, the connect timeout, and
/// names resolved only to allowed addresses. The request's own `Host` goes upstream, not
/// the upstream's address: apps such as Jupyter compare it with the browser's `Origin`.
pub(crate) fn upstream_pool(settings: &HttpSettings) -> Arc<UpstreamPool> {
    let resolver = PolicyResolver::new(settings.upstream_policy.clone());
    let mut connector = HttpConnector::new_with_resolver(resolver);
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(settings.connect_timeout));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    UpstreamPool::new(
        connector,
        settings.upstream_max_idle_per_host,
        settings.upstream_idle_timeout,
    )
}

/// A request on its way upstream, with what is needed to finish the exchange.
struct Outgoing {
    request: Request<RequestBody>,
    /// The protocols the client offered, when the connection is to be tunnelled.
    offered_upgrade: Option<(HeaderValue, OnUpgrade)>,
    upload: Option<Arc<UploadClock>>,
}

/// A client's request that was admitted to a route.
pub(crate) struct Inbound<'a> {
    /// The request as the client sent it.
    pub(crate) req: Request<Incoming>,
    /// The path the upstream is to see.
    pub(crate) forwarded_path: &'a str,
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// The client's address as a header value.
    pub(crate) peer_header: HeaderValue,
    /// Who the client is and where its token was, when authentication is on.
    pub(crate) admission: Option<&'a Admission>,
}

/// Forwards the request to `route`'s upstream and returns its response head with the body
/// still streaming.
pub(crate) async fn forward(
    gateway: &Gateway,
    route: &Arc<Route>,
    inbound: Inbound<'_>,
    log: &mut AccessLog,
) -> Result<(Response<Incoming>, Option<Lease>), ProxyError> {
    let settings = gateway.settings();
    let peer = inbound.peer;
    let outgoing = prepare(gateway, route, inbound, log.started_at())?;
    let upstream_name = || route.upstream().authority().to_string();
    let sent = Instant::now();
    let exchange = gateway
        .pool()
        .send(route.upstream().authority(), outgoing.request);
    let timeout = settings.response_header_timeout;
    let (mut response, lease) =
        match response_head(exchange, timeout, outgoing.upload.as_deref()).await {
            Some(Ok(exchange)) => exchange,
            Some(Err(err)) => {
                let connect_timeout = settings.connect_timeout;
                return Err(ProxyError::from_upstream(
                    err,
                    upstream_name(),
                    connect_timeout,
                ));
            }
            None => {
                let upstream = upstream_name();
                return Err(ProxyError::UpstreamTimeout { upstream, timeout });
            }
        };
    log.set_upstream_time(sent.elapsed());

    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        let downstream =
            accepted_upgrade(&response, outgoing.offered_upgrade).map_err(|reason| {
                ProxyError::UpstreamInvalidResponse {
                    upstream: upstream_name(),
                    reason,
                }
            })?;
        let upstream = hyper::upgrade::on(&mut response);
        let connection = log.connection();
        let upgrades = (downstream, upstream);
        tunnel::spawn(gateway, Arc::clone(route), peer, upgrades, connection);
    }
    headers::prepare_response(response.headers_mut(), switching);
    if let Some(cookie_name) = gateway.auth_cookie() {
        auth::drop_auth_set_cookies(response.headers_mut(), cookie_name);
    }
    // The client's connection is the gateway's, not the upstream's: an HTTP/1.0 upstream
    // must not turn the client's keep-alive connection into one that closes.
    *response.version_mut() = Version::HTTP_11;
    // After a `101` the connection belongs to the tunnel, never to the pool.
    if switching {
        lease.hand_over();
        return Ok((response, None));
    }
    Ok((response, Some(lease)))
}

/// Rewrites the client's request into the upstream's: target, version, headers, body.
fn prepare(
    gateway: &Gateway,
    route: &Route,
    inbound: Inbound<'_>,
    started: Instant,
) -> Result<Outgoing, ProxyError> {
    let settings = gateway.settings();
    let Inbound {
        mut req,
        forwarded_path,
        peer_header,
        admission,
        ..
    } = inbound;
    if let Some(ip) = route.upstream().ip() {
        if !settings.upstream_policy.permits(ip) {
            return Err(ProxyError::UpstreamNotAllowed {
                upstream: route.upstream().authority().to_string(),
                reason: format!("{ip} is outside ROUTER__UPSTREAM__ALLOW_CIDRS"),
            });
        }
    }
    let upstream_uri = upstream_uri(forwarded_path, req.uri().query())?;
    let upgrade = match req.version() {
        Version::HTTP_11 => headers::requested_upgrade(req.headers()),
        _ => None,
    };
    let offered_upgrade = upgrade
        .clone()
        .map(|protocols| (protocols, hyper::upgrade::on(&mut req)));
    let (mut parts, body) = req.into_parts();
    check_declared_length(&parts, settings.max_body_bytes)?;
    let forwarded = ForwardedFor {
        peer: &peer_header,
        proto: settings.client_scheme.as_str(),
        prefix: route.prefix_header(),
        request_authority: parts.uri.authority(),
        upstream_authority: route.upstream().authority(),
        merge_cookies: parts.version == Version::HTTP_2,
    };
    headers::prepare_request(&mut parts.headers, &forwarded, upgrade);
    if let (Some(admission), Some(cookie_name)) = (admission, gateway.auth_cookie()) {
        auth::strip_token(&mut parts.headers, cookie_name, admission.source);
    }
    headers::set_user(&mut parts.headers, admission.map(|a| &a.identity));
    gateway.via().add_to(&mut parts.headers, parts.version);
    parts.uri = upstream_uri;
    parts.version = Version::HTTP_11;

    let upload = (!body.is_end_stream()).then(|| UploadClock::new(started));
    let body = RequestBody::new(
        body,
        settings.max_body_bytes,
        settings.client_body_timeout,
        upload.clone(),
    );
    Ok(Outgoing {
        request: Request::from_parts(parts, body),
        offered_upgrade,
        upload,
    })
}

/// `http://{upstream}{forwarded_path}?{query}`.
/// The target the upstream sees, in origin form (`/path?query`): the connection already
/// says which upstream it is.
fn upstream_uri(forwarded_path: &str, query: Option<&str>) -> Result<Uri, ProxyError> {
    let path_and_query = match query {
        Some(query) => {
            let mut text = String::with_capacity(forwarded_path.len() + query.len() + 1);
            text.push_str(forwarded_path);
            text.push('?');
            text.push_str(query);
            PathAndQuery::try_from(text)
        }
        None => PathAndQuery::try_from(forwarded_path),
    };
    // Both parts come from a target hyper already parsed, so this only fails on a bug.
    path_and_query
        .map(Uri::from)
        .map_err(|_| ProxyError::BadTarget(TargetError::Unforwardable))
}

/// Refuses at once a body whose declared length is over the limit.
fn check_declared_length(parts: &Parts, limit: Option<u64>) -> Result<(), ProxyError> {
    let Some(limit) = limit else { return Ok(()) };
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit => Err(ProxyError::BodyTooLarge { limit }),
        _ => Ok(()),
    }
}

/// The client's half of the upgrade, when the upstream switched to a protocol the client
/// offered; otherwise why the `101` cannot be passed on.
fn accepted_upgrade(
    response: &Response<Incoming>,
    offered: Option<(HeaderValue, OnUpgrade)>,
) -> Result<OnUpgrade, &'static str> {
    let Some((protocols, downstream)) = offered else {
        return Err("101 Switching Protocols to a request that asked for no upgrade");
    };
    let chosen = response
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok());
    let offered_one = |chosen: &str| {
        protocols.to_str().is_ok_and(|list| {
            list.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case(chosen.trim()))
        })
    };
    match chosen {
        Some(chosen) if offered_one(chosen) => Ok(downstream),
        _ => Err("101 Switching Protocols to a protocol the client did not offer"),
    }
}

/// Waits for the upstream's response head. `None` once `timeout` has passed since the
/// request was sent and since the upload last made progress: a long upload is not a slow
/// upstream.
async fn response_head<F: Future>(
    exchange: F,
    timeout: Duration,
    upload: Option<&UploadClock>,
) -> Option<F::Output> {
    let mut exchange = pin!(exchange);
    let mut deadline = Instant::now() + timeout;
    loop {
        if let Ok(output) = tokio::time::timeout_at(deadline.into(), exchange.as_mut()).await {
            return Some(output);
        }
        let extended = upload.map(|clock| clock.last_progress() + timeout);
        match extended {
            Some(later) if later > Instant::now() => deadline = later,
            _ => return None,
        }
    }
}
