//! The request path: from a parsed request to the response the client gets.
//!
//! `Gateway::handle` reads the target, answers the gateway's own paths, looks the route up
//! in the current table and hands the request to [`forward`](crate::forward). Every answer,
//! forwarded or not, leaves through [`ResponseBody`], which writes the access line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, TRANSFER_ENCODING};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio_util::task::TaskTracker;

use crate::access_log::AccessLog;
use crate::body::ResponseBody;
use crate::conn::ActiveRequest;
use crate::error::ProxyError;
use crate::forward::{self, UpstreamClient};
use crate::routes::RouteStore;
use crate::settings::HttpSettings;
use crate::target::Target;

/// Whether the gateway has the route table it should serve (for `/_gateway/ready`).
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    /// Marks the gateway ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Whether the gateway is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Everything a request needs: the route table, the upstream pool and the settings.
#[derive(Debug)]
pub struct Gateway {
    routes: Arc<RouteStore>,
    readiness: Arc<Readiness>,
    settings: HttpSettings,
    client: UpstreamClient,
    /// Connections and tunnels, so that shutdown can wait for them.
    tasks: TaskTracker,
}

/// Assembles a [`Gateway`].
#[derive(Debug)]
pub struct GatewayBuilder {
    routes: Arc<RouteStore>,
    readiness: Arc<Readiness>,
    settings: HttpSettings,
}

impl GatewayBuilder {
    /// Uses these timeouts and limits instead of the defaults.
    pub fn settings(mut self, settings: HttpSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Reports readiness from this flag (by default a new one, not ready).
    pub fn readiness(mut self, readiness: Arc<Readiness>) -> Self {
        self.readiness = readiness;
        self
    }

    /// Builds the gateway; it must be created inside a tokio runtime.
    pub fn build(self) -> Arc<Gateway> {
        Arc::new(Gateway {
            client: forward::upstream_client(&self.settings),
            routes: self.routes,
            readiness: self.readiness,
            settings: self.settings,
            tasks: TaskTracker::new(),
        })
    }
}

impl Gateway {
    /// Starts a gateway serving the routes of `routes`.
    pub fn builder(routes: Arc<RouteStore>) -> GatewayBuilder {
        GatewayBuilder {
            routes,
            readiness: Arc::default(),
            settings: HttpSettings::default(),
        }
    }

    /// The route table this gateway serves from.
    pub fn routes(&self) -> &Arc<RouteStore> {
        &self.routes
    }

    /// The readiness flag behind `/_gateway/ready`.
    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }

    /// The settings in force.
    pub fn settings(&self) -> &HttpSettings {
        &self.settings
    }

    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    pub(crate) fn client(&self) -> &UpstreamClient {
        &self.client
    }

    /// Answers one request; never fails: trouble becomes a status and a JSON body.
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        active: ActiveRequest,
    ) -> Response<ResponseBody> {
        let mut log = AccessLog::start(req.method(), req.uri(), peer.ip(), active);
        match self.dispatch(req, peer, &mut log).await {
            Ok(Answer::Upstream(response)) => {
                log.set_status(response.status());
                response.map(|body| ResponseBody::upstream(body, log))
            }
            Ok(Answer::Local(response)) => {
                log.set_status(response.status());
                response.map(|body| ResponseBody::local(body, log))
            }
            Err(err) => {
                log.set_status(err.status());
                log.set_error(err.code(), &err);
                error_response(&err).map(|body| ResponseBody::local(body, log))
            }
        }
    }

    async fn dispatch(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        log: &mut AccessLog,
    ) -> Result<Answer, ProxyError> {
        check_head_size(&req, self.settings.max_header_bytes)?;
        check_framing(&req)?;
        match Target::parse(req.uri().path())? {
            Target::Gateway(name) => Ok(Answer::Local(self.own_path(name))),
            Target::Unrouted => Err(ProxyError::NoRoute),
            Target::ServiceRoot { key } => {
                self.routes.lookup(key).ok_or(ProxyError::NoRoute)?;
                Ok(Answer::Local(add_trailing_slash(key, req.uri().query())))
            }
            Target::Service {
                key,
                forwarded_path,
            } => {
                let route = self.routes.lookup(key).ok_or(ProxyError::NoRoute)?;
                log.set_route(Arc::clone(&route));
                // The target borrows from the request, which `forward` takes whole.
                let forwarded_path = forwarded_path.to_owned();
                forward::forward(self, &route, req, &forwarded_path, peer, log)
                    .await
                    .map(Answer::Upstream)
            }
        }
    }

    fn own_path(&self, name: &str) -> Response<Bytes> {
        match name {
            "health" => json_response(StatusCode::OK, r#"{"status":"ok"}"#.into()),
            "ready" if self.readiness.is_ready() => {
                let body =
                    serde_json::json!({"status": "ready", "routes": self.routes.snapshot().len()});
                json_response(StatusCode::OK, body.to_string().into())
            }
            "ready" => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"status":"starting"}"#.into(),
            ),
            _ => error_response(&ProxyError::NoRoute),
        }
    }
}

/// A response on its way out: streamed from the upstream, or made here.
pub(crate) enum Answer {
    Upstream(Response<Incoming>),
    Local(Response<Bytes>),
}

/// Refuses heads larger than `limit`, counted as on the wire (`name: value\r\n`).
fn check_head_size<B>(req: &Request<B>, limit: usize) -> Result<(), ProxyError> {
    let uri = req.uri();
    let target = uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len() + 8);
    let request_line = req.method().as_str().len() + target + 12;
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let size = request_line + headers;
    if size > limit {
        return Err(ProxyError::HeadersTooLarge { size, limit });
    }
    Ok(())
}

/// Refuses what cannot be forwarded faithfully: `CONNECT` (a tunnel to anywhere) and
/// `TRACE` (it echoes credentials back), and transfer codings other than plain `chunked`,
/// which the upstream would receive still encoded.
fn check_framing<B>(req: &Request<B>) -> Result<(), ProxyError> {
    if req.method() == Method::CONNECT || req.method() == Method::TRACE {
        return Err(ProxyError::MethodNotAllowed(req.method().clone()));
    }
    for coding in req.headers().get_all(TRANSFER_ENCODING) {
        let text = coding.to_str().unwrap_or_default();
        if !text.trim().eq_ignore_ascii_case("chunked") {
            return Err(ProxyError::UnsupportedTransferEncoding(
                String::from_utf8_lossy(coding.as_bytes()).into_owned(),
            ));
        }
    }
    Ok(())
}

/// `/service/{key}` → `308 /service/{key}/`: apps resolve relative links against their root.
fn add_trailing_slash(key: &str, query: Option<&str>) -> Response<Bytes> {
    let location = match query {
        Some(query) => format!("/service/{key}/?{query}"),
        None => format!("/service/{key}/"),
    };
    let mut response = json_response(
        StatusCode::PERMANENT_REDIRECT,
        Bytes::from(serde_json::json!({ "location": location }).to_string()),
    );
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

/// The short JSON body of an answer the gateway gives itself.
pub(crate) fn error_response(err: &ProxyError) -> Response<Bytes> {
    let body = serde_json::json!({
        "error": err.code(),
        "message": err.public_message(),
        "status": err.status().as_u16(),
    });
    json_response(err.status(), Bytes::from(body.to_string()))
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Bytes> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
