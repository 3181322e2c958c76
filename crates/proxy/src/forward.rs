//! Sending a routed request to its upstream, and tunnelling the connection after a `101`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::CONTENT_LENGTH;
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::access_log::{AccessLog, error_chain, millis};
use crate::body::{RequestBody, UploadClock};
use crate::error::ProxyError;
use crate::gateway::Gateway;
use crate::headers::{self, ForwardedFor};
use crate::routes::Route;
use crate::settings::HttpSettings;

/// The pooled keep-alive client every upstream request goes through.
pub(crate) type UpstreamClient = Client<HttpConnector, RequestBody>;

/// Builds the upstream pool: HTTP/1.1 keep-alive, `TCP_NODELAY`, the connect timeout.
pub(crate) fn upstream_client(settings: &HttpSettings) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(settings.connect_timeout));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(settings.upstream_idle_timeout)
        .pool_max_idle_per_host(settings.upstream_max_idle_per_host)
        .pool_timer(TokioTimer::new())
        // The client's own Host header, not the upstream's address: apps such as Jupyter
        // compare it with the browser's Origin.
        .set_host(false)
        .build(connector)
}

/// Forwards `req` to `route`'s upstream and returns its response head with the body
/// still streaming.
pub(crate) async fn forward(
    gateway: &Gateway,
    route: &Arc<Route>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    log: &mut AccessLog,
) -> Result<Response<Incoming>, ProxyError> {
    let settings = gateway.settings();
    let upstream_uri = upstream_uri(route, req.uri())?;
    let upgrade = match req.version() {
        Version::HTTP_11 => headers::requested_upgrade(req.headers()),
        _ => None,
    };
    let downstream_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    check_declared_length(&parts.headers, settings.max_body_bytes)?;

    let forwarded = ForwardedFor {
        peer: peer.ip(),
        proto: settings.client_scheme.as_str(),
        prefix: route.prefix_header(),
        request_authority: parts.uri.authority(),
        upstream_authority: route.upstream().authority(),
    };
    headers::prepare_request(&mut parts.headers, &forwarded, upgrade);
    parts.uri = upstream_uri;
    parts.version = Version::HTTP_11;

    let clock = (!body.is_end_stream()).then(|| UploadClock::new(log.started_at()));
    let body = RequestBody::new(body, settings.max_body_bytes, clock.clone());
    let sent = Instant::now();
    let exchange = gateway.client().request(Request::from_parts(parts, body));
    let upstream_name = || route.upstream().authority().to_string();
    let mut response =
        match response_head(exchange, settings.response_header_timeout, clock.as_deref()).await {
            Some(Ok(response)) => response,
            Some(Err(err)) => {
                return Err(ProxyError::from_upstream(
                    err,
                    upstream_name(),
                    settings.connect_timeout,
                ));
            }
            None => {
                return Err(ProxyError::UpstreamTimeout {
                    upstream: upstream_name(),
                    timeout: settings.response_header_timeout,
                });
            }
        };
    log.set_upstream_time(sent.elapsed());

    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        let Some(downstream) = downstream_upgrade else {
            return Err(ProxyError::UpstreamInvalidResponse {
                upstream: upstream_name(),
                reason: "101 Switching Protocols to a request that asked for no upgrade",
            });
        };
        let upstream = hyper::upgrade::on(&mut response);
        spawn_tunnel(gateway, Arc::clone(route), peer, downstream, upstream);
    }
    headers::prepare_response(response.headers_mut(), switching);
    // The client's connection is the gateway's, not the upstream's: an HTTP/1.0 upstream
    // must not turn the client's keep-alive connection into one that closes.
    *response.version_mut() = Version::HTTP_11;
    Ok(response)
}

/// `http://{upstream}{path after the routed segment}?{query}`.
fn upstream_uri(route: &Route, uri: &Uri) -> Result<Uri, ProxyError> {
    let path = uri.path();
    let forwarded = path
        .strip_prefix("/service/")
        .and_then(|rest| rest.find('/').map(|slash| &rest[slash..]))
        .unwrap_or("/");
    let path_and_query = match uri.query() {
        Some(query) => PathAndQuery::try_from(format!("{forwarded}?{query}")),
        None => PathAndQuery::try_from(forwarded),
    }
    .map_err(|_| ProxyError::NoRoute)?;
    Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(route.upstream().authority().clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| ProxyError::NoRoute)
}

/// Refuses at once a body whose declared length is over the limit.
fn check_declared_length(headers: &http::HeaderMap, limit: Option<u64>) -> Result<(), ProxyError> {
    let Some(limit) = limit else { return Ok(()) };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit => Err(ProxyError::BodyTooLarge { limit }),
        _ => Ok(()),
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

/// Joins the two upgraded connections and copies bytes both ways until either side closes.
fn spawn_tunnel(
    gateway: &Gateway,
    route: Arc<Route>,
    peer: SocketAddr,
    downstream: OnUpgrade,
    upstream: OnUpgrade,
) {
    gateway.tasks().spawn(async move {
        let started = Instant::now();
        let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(
                    target: "access", route = route.key(), peer = %peer.ip(),
                    error = %error_chain(&err), "upgrade failed"
                );
                return;
            }
        };
        let mut downstream = TokioIo::new(downstream);
        let mut upstream = TokioIo::new(upstream);
        let copied = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await;
        let duration_ms = millis(started.elapsed());
        match copied {
            Ok((bytes_up, bytes_down)) => tracing::info!(
                target: "access", route = route.key(), peer = %peer.ip(),
                bytes_up, bytes_down, duration_ms, "tunnel closed"
            ),
            Err(err) => tracing::info!(
                target: "access", route = route.key(), peer = %peer.ip(),
                duration_ms, error = %err, "tunnel ended by an error"
            ),
        }
    });
}
