//! One request through the gateway on loopback, in process: a client sends `GET` on one
//! kept-alive connection and reads the whole `200 ok` before sending the next; the gateway
//! (`gateway_proxy::Server`, as the binary builds it) forwards it to a backend over its
//! pooled upstream connection. The same client straight to the backend is the reference,
//! so the difference is what the gateway adds.
//!
//! Variants: HTTP/1.1, h2c (prior knowledge; the gateway speaks HTTP/1.1 upstream), and
//! HTTP/1.1 with authentication on, decided from memory as a warm cache does in production.
//! No tracing subscriber is installed, so access lines are not formatted or written.

use std::convert::Infallible;
use std::future::pending;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use gateway_proxy::{
    AuthSettings, Authorizer, Gateway, Identity, Route, RouteStore, RouteTable, Server, Upstream,
    Verdict,
};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

mod support;
use support::{COOKIE, browser_headers};
const ROUTE: &str = "4f2a9c1e8b7d4a6f9e3c2b1a0d9e8f7c";

/// Answers `200 ok` to everything. Not testkit's backends: they record every request, which
/// over a few hundred thousand requests would grow by hundreds of megabytes and add a lock
/// to each one.
async fn backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the backend");
    let addr = listener.local_addr().expect("the backend's address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            // As the gateway does on its own sockets; without it Nagle's algorithm and
            // delayed ACKs would dominate the latency of small exchanges.
            stream.set_nodelay(true).expect("nodelay on the backend");
            let service = service_fn(|_req| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Answers every question from memory, as `gateway_auth`'s authorizer does once its caches
/// hold the decision (what those cache lookups cost is `benches/auth_decision.rs`).
struct Remembered(Identity);

impl Authorizer for Remembered {
    fn identify(&self, _token: &str) -> Verdict<Identity> {
        Verdict::Ready(Ok(self.0.clone()))
    }

    fn may_see(&self, _: &str, _: &Identity, _: &str, _: Option<&str>) -> Verdict<()> {
        Verdict::Ready(Ok(()))
    }
}

/// The gateway serving one route to `backend`, on a fresh port.
async fn gateway(backend: SocketAddr, authenticated: bool) -> SocketAddr {
    let upstream = Upstream::from_host_port("127.0.0.1", backend.port()).expect("an upstream");
    let route = Route::new(ROUTE, upstream)
        .expect("a route key")
        .with_owner("owner");
    let mut builder = Gateway::builder(Arc::new(RouteStore::new(RouteTable::new([route]))));
    if authenticated {
        let identity = Identity {
            user: "a1b2c3d4e5f60718293a4b5c6d7e8f90".into(),
            expires_at: None,
            token_key: 0x5eed,
        };
        builder = builder.auth(AuthSettings {
            authorizer: Arc::new(Remembered(identity)),
            cookie_name: COOKIE.to_owned(),
            cookie_secure: true,
        });
    }
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the gateway");
    let addr = listener.local_addr().expect("the gateway's address");
    let server = Server::new(builder.build());
    tokio::spawn(async move { server.serve(listener, pending()).await });
    addr
}

/// What a browser that is logged in to ClearML sends, with a token the size of a ClearML
/// JWT (about 500 bytes), whether or not the gateway checks it.
fn headers() -> HeaderMap {
    let token = format!(
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.{}.{}",
        "eyJpZGVudGl0eSI6eyJjb21wYW55Ijoi".repeat(13),
        "c2lnbmF0dXJlLW9mLXRoZS1zZXJ2ZXI".repeat(2),
    );
    browser_headers(&token)
}

enum Sender {
    Http1(http1::SendRequest<Empty<Bytes>>),
    H2c(http2::SendRequest<Empty<Bytes>>),
}

/// One kept-alive client connection, and the request it sends over and over.
struct Connection {
    sender: Sender,
    uri: Uri,
    headers: HeaderMap,
    version: Version,
}

impl Connection {
    async fn open(addr: SocketAddr, path: &str, h2c: bool) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay on the client");
        let io = TokioIo::new(stream);
        let mut headers = headers();
        let (sender, uri, version) = if h2c {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("an h2c handshake");
            tokio::spawn(conn);
            let uri = format!("http://{addr}{path}");
            (Sender::H2c(sender), uri, Version::HTTP_2)
        } else {
            let (sender, conn) = http1::handshake(io).await.expect("an HTTP/1.1 handshake");
            tokio::spawn(conn);
            let host = HeaderValue::from_str(&addr.to_string()).expect("a host header");
            headers.insert(http::header::HOST, host);
            (Sender::Http1(sender), path.to_owned(), Version::HTTP_11)
        };
        let uri = uri.parse().expect("a request target");
        Self {
            sender,
            uri,
            headers,
            version,
        }
    }

    /// Sends the request and reads the response to its end.
    async fn round_trip(&mut self) {
        let mut request = Request::new(Empty::new());
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        let response = match &mut self.sender {
            Sender::Http1(sender) => {
                sender.ready().await.expect("the connection stays open");
                sender.send_request(request).await
            }
            Sender::H2c(sender) => {
                sender.ready().await.expect("the connection stays open");
                sender.send_request(request).await
            }
        }
        .expect("a response");
        let (status, version) = (response.status(), response.version());
        let body = response
            .into_body()
            .collect()
            .await
            .expect("the whole body")
            .to_bytes();
        let expected = (StatusCode::OK, self.version, &b"ok"[..]);
        assert_eq!((status, version, &body[..]), expected);
    }
}

/// Measures sequential round trips on one connection to `addr`, opened for this bench
/// only so that it never idles out while others run.
fn measure(
    group: &mut BenchmarkGroup<'_, WallTime>,
    runtime: &Runtime,
    name: &str,
    addr: SocketAddr,
    path: &str,
    h2c: bool,
) {
    let mut connection = runtime.block_on(Connection::open(addr, path, h2c));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    connection.round_trip().await;
                }
                started.elapsed()
            })
        });
    });
}

fn request(c: &mut Criterion) {
    // criterion's async support is not among the features enabled, so the runtime is
    // driven here: the client on this thread, gateway and backend on the workers.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (backend, plain, authenticated) = runtime.block_on(async {
        let backend = backend().await;
        (
            backend,
            gateway(backend, false).await,
            gateway(backend, true).await,
        )
    });
    let routed = format!("/service/{ROUTE}/");
    let mut group = c.benchmark_group("request");
    measure(&mut group, &runtime, "http1/direct", backend, "/", false);
    measure(&mut group, &runtime, "http1/gateway", plain, &routed, false);
    measure(
        &mut group,
        &runtime,
        "http1/gateway_auth",
        authenticated,
        &routed,
        false,
    );
    measure(&mut group, &runtime, "h2c/direct", backend, "/", true);
    measure(&mut group, &runtime, "h2c/gateway", plain, &routed, true);
    group.finish();
}

criterion_group!(benches, request);
criterion_main!(benches);
