//! The request path: from a parsed request to the response the client gets.
//!
//! `Gateway::handle` reads the target, answers the gateway's own paths, looks the route up
//! in the current table and hands the request to [`forward`](crate::forward). Every answer,
//! forwarded or not, leaves through [`ResponseBody`], which writes the access line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio_util::task::TaskTracker;

use crate::access_line::AccessSink;
use crate::access_log::AccessLog;
use crate::answers::{Audience, add_trailing_slash, error_response, json_response};
use crate::auth::{Admission, AuthSettings, find_token};
use crate::body::ResponseBody;
use crate::checks::{check_framing, check_head_size, check_host};
use crate::conn::ActiveRequest;
use crate::error::ProxyError;
use crate::forward;
use crate::login;
use crate::loops::Via;
use crate::metrics::{MetricsSource, ProxyMetrics, RouteKind};
use crate::pool::{Lease, UpstreamPool};
use crate::routes::{Route, RouteStore};
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
    pool: Arc<UpstreamPool>,
    /// `None` serves everyone (standalone mode).
    auth: Option<AuthSettings>,
    metrics: Arc<ProxyMetrics>,
    metrics_sources: Vec<Arc<dyn MetricsSource>>,
    access_sink: Option<Arc<dyn AccessSink>>,
    /// This gateway's `Via` entry.
    via: Via,
    /// Connections and tunnels, so that shutdown can wait for them.
    tasks: TaskTracker,
}

/// Assembles a [`Gateway`].
#[derive(Debug)]
pub struct GatewayBuilder {
    routes: Arc<RouteStore>,
    readiness: Arc<Readiness>,
    settings: HttpSettings,
    auth: Option<AuthSettings>,
    metrics_sources: Vec<Arc<dyn MetricsSource>>,
    access_sink: Option<Arc<dyn AccessSink>>,
}

impl GatewayBuilder {
    /// Writes access lines to `sink` (by default they are `tracing` events).
    pub fn access_sink(mut self, sink: Arc<dyn AccessSink>) -> Self {
        self.access_sink = Some(sink);
        self
    }

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

    /// Lets only requests that `auth` admits reach a route, and serves `/_gateway/login`.
    pub fn auth(mut self, auth: AuthSettings) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Adds `source`'s metrics to `/_gateway/metrics`.
    pub fn metrics_source(mut self, source: Arc<dyn MetricsSource>) -> Self {
        self.metrics_sources.push(source);
        self
    }

    /// Builds the gateway; it must be created inside a tokio runtime.
    pub fn build(self) -> Arc<Gateway> {
        let metrics = Arc::new(ProxyMetrics::default());
        metrics.set_max_connections(self.settings.max_connections);
        Arc::new(Gateway {
            pool: forward::upstream_pool(&self.settings),
            via: Via::new(&self.settings.via_pseudonym),
            routes: self.routes,
            readiness: self.readiness,
            settings: self.settings,
            auth: self.auth,
            metrics,
            metrics_sources: self.metrics_sources,
            access_sink: self.access_sink,
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
            auth: None,
            metrics_sources: Vec::new(),
            access_sink: None,
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

    pub(crate) fn access_sink(&self) -> Option<Arc<dyn AccessSink>> {
        self.access_sink.clone()
    }

    pub(crate) fn metrics(&self) -> &Arc<ProxyMetrics> {
        &self.metrics
    }

    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    pub(crate) fn pool(&self) -> &Arc<UpstreamPool> {
        &self.pool
    }

    pub(crate) fn via(&self) -> &Via {
        &self.via
    }

    /// Answers one request; never fails: trouble becomes a status and a JSON body.
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
        active: ActiveRequest,
    ) -> Response<ResponseBody> {
        let mut log = AccessLog::start(req.method(), req.uri(), peer.ip(), active);
        let audience = Audience::of(req.headers());
        match self.dispatch(req, peer, &mut log).await {
            Ok(Answer::Upstream(response, lease)) => {
                log.set_status(response.status());
                response.map(|body| ResponseBody::upstream(body, lease, log))
            }
            Ok(Answer::Local(response)) => {
                log.set_status(response.status());
                response.map(|body| ResponseBody::local(body, log))
            }
            Err(err) => {
                log.set_status(err.status());
                log.set_error(err.code(), &err);
                error_response(&err, audience).map(|body| ResponseBody::local(body, log))
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
        check_host(&req)?;
        let target = Target::parse(req.uri().path())?;
        log.set_kind(match target {
            Target::Gateway(_) => RouteKind::Gateway,
            Target::Unrouted => RouteKind::Other,
            Target::Service { .. } | Target::ServiceRoot { .. } => RouteKind::Service,
        });
        match target {
            Target::Gateway(name) => self
                .own_path(name, req.uri().query())
                .await
                .map(Answer::Local),
            Target::Unrouted => Err(ProxyError::NoRoute),
            Target::ServiceRoot { key } => {
                self.admit(&req, key).await?;
                Ok(Answer::Local(add_trailing_slash(key, req.uri().query())))
            }
            Target::Service {
                key,
                forwarded_path,
            } => {
                // Before authentication: the token was removed on the first pass.
                if self.via.is_in(req.headers()) {
                    return Err(ProxyError::LoopDetected);
                }
                let (route, admission) = self.admit(&req, key).await?;
                log.set_route(Arc::clone(&route));
                // The target borrows from the request, which `forward` takes whole.
                let forwarded_path = forwarded_path.to_owned();
                let request = forward::Inbound {
                    req,
                    forwarded_path: &forwarded_path,
                    peer,
                    peer_header: log.peer_header().clone(),
                    admission: admission.as_ref(),
                };
                forward::forward(self, &route, request, log)
                    .await
                    .map(|(response, lease)| Answer::Upstream(response, lease))
            }
        }
    }

    /// The route at `key`, if the request may reach it. With authentication on: no token
    /// or a refused one is a 401 whether or not the route exists; then the route is looked
    /// up (404), then whether its task is visible to the user (403).
    async fn admit<B>(
        &self,
        req: &Request<B>,
        key: &str,
    ) -> Result<(Arc<Route>, Option<Admission>), ProxyError> {
        let Some(auth) = &self.auth else {
            let route = self.routes.lookup(key).ok_or(ProxyError::NoRoute)?;
            return Ok((route, None));
        };
        let (token, source) = find_token(req.headers(), &auth.cookie_name)
            .ok_or(ProxyError::Unauthenticated("no ClearML token"))?;
        let identity = auth.authorizer.identify(token).resolve().await?;
        let route = self.routes.lookup(key).ok_or(ProxyError::NoRoute)?;
        auth.authorizer
            .may_see(token, &identity, route.task_id(), route.owner())
            .resolve()
            .await?;
        Ok((route, Some(Admission { identity, source })))
    }

    async fn own_path(
        &self,
        name: &str,
        query: Option<&str>,
    ) -> Result<Response<Bytes>, ProxyError> {
        match name {
            "health" => Ok(json_response(StatusCode::OK, r#"{"status":"ok"}"#.into())),
            "ready" if self.readiness.is_ready() => {
                let routes = self.routes.snapshot().len();
                let body = serde_json::json!({"status": "ready", "routes": routes});
                Ok(json_response(StatusCode::OK, body.to_string().into()))
            }
            "ready" => Ok(json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"status":"starting"}"#.into(),
            )),
            "metrics" => Ok(self.metrics_page()),
            "login" => match &self.auth {
                Some(auth) => login::hand_off(auth, query).await,
                None => Err(ProxyError::NoRoute),
            },
            _ => Err(ProxyError::NoRoute),
        }
    }

    fn metrics_page(&self) -> Response<Bytes> {
        let mut page = String::with_capacity(8 * 1024);
        self.metrics.render(self.routes.snapshot().len(), &mut page);
        for source in &self.metrics_sources {
            source.render(&mut page);
        }
        let mut response = Response::new(Bytes::from(page));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        response
    }

    /// The cookie the auth token travels in, when authentication is on.
    pub(crate) fn auth_cookie(&self) -> Option<&str> {
        self.auth.as_ref().map(|a| a.cookie_name.as_str())
    }
}

/// A response on its way out: streamed from the upstream, or made here.
pub(crate) enum Answer {
    Upstream(Response<Incoming>, Option<Lease>),
    Local(Response<Bytes>),
}
