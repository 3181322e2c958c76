//! Upstream services for tests: real HTTP servers on `127.0.0.1:0` that stand for the apps
//! inside tasks (model servers, notebooks) and record what reached them.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, channel::Channel};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake;

/// The body type backends answer with.
pub type BackendBody = BoxBody<Bytes, Infallible>;

/// What a backend saw of one request.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// The method.
    pub method: http::Method,
    /// The request target as received (path and query).
    pub uri: String,
    /// The headers as received.
    pub headers: HeaderMap,
}

#[derive(Default)]
struct Record {
    seen: Mutex<Vec<SeenRequest>>,
    connections: AtomicUsize,
}

/// A running backend; stops when dropped.
pub struct Backend {
    addr: SocketAddr,
    record: Arc<Record>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    /// Serves `handler` (HTTP/1.1 and h2c) on a fresh port.
    pub async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<BackendBody>> + Send + 'static,
    {
        let listener = bind().await;
        let addr = listener.local_addr().expect("backend address");
        let record = Arc::new(Record::default());
        let handler = Arc::new(handler);
        let task_record = Arc::clone(&record);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                task_record.connections.fetch_add(1, Ordering::SeqCst);
                let record = Arc::clone(&task_record);
                let handler = Arc::clone(&handler);
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        record.seen.lock().expect("record").push(SeenRequest {
                            method: req.method().clone(),
                            uri: req.uri().to_string(),
                            headers: req.headers().clone(),
                        });
                        let reply = handler(req);
                        async move { Ok::<_, Infallible>(reply.await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, record, task }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`, as a route's upstream.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request seen so far, in order.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.record.seen.lock().expect("record").clone()
    }

    /// How many TCP connections were accepted.
    pub fn connections(&self) -> usize {
        self.record.connections.load(Ordering::SeqCst)
    }
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a backend port")
}

/// A complete response with `body`.
pub fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<BackendBody> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    response
}

/// Answers every request with JSON describing it: method, target, headers, body length,
/// and the body itself when it is short. Bodies are read as they stream, never kept whole.
pub async fn echo() -> Backend {
    Backend::start(|req: Request<Incoming>| async move {
        let (parts, mut body) = req.into_parts();
        let mut length = 0u64;
        let mut kept = Vec::new();
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                length += data.len() as u64;
                if kept.len() < 64 * 1024 {
                    kept.extend_from_slice(data);
                }
            }
        }
        let headers: serde_json::Map<String, serde_json::Value> = parts
            .headers
            .keys()
            .map(|name| {
                let values: Vec<String> = parts
                    .headers
                    .get_all(name)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect();
                (name.to_string(), values.into())
            })
            .collect();
        let description = serde_json::json!({
            "method": parts.method.as_str(),
            "uri": parts.uri.to_string(),
            "version": format!("{:?}", parts.version),
            "headers": headers,
            "body_length": length,
            "body": if length <= 64 * 1024 { String::from_utf8_lossy(&kept).into_owned() } else { String::new() },
        });
        reply(StatusCode::OK, description.to_string())
    })
    .await
}

/// Answers every request with `total` bytes, streamed in 64 KiB chunks.
pub async fn source(total: u64) -> Backend {
    Backend::start(move |_req| async move {
        let (mut sender, body) = Channel::<Bytes, Infallible>::new(4);
        tokio::spawn(async move {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let mut left = total;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                if sender.send_data(chunk.slice(..n)).await.is_err() {
                    return;
                }
                left -= n as u64;
            }
        });
        let mut response = Response::new(body.boxed());
        response
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, total.into());
        response
    })
    .await
}

/// A server-sent-events stream: `data: first`, then — only once `gate` is notified —
/// `data: second`, then the end. A client that sees `first` before opening the gate proves
/// the stream was not buffered on the way.
pub async fn sse(gate: Arc<Notify>) -> Backend {
    Backend::start(move |_req| {
        let gate = Arc::clone(&gate);
        async move {
            let (mut sender, body) = Channel::<Bytes, Infallible>::new(1);
            tokio::spawn(async move {
                let _ = sender
                    .send_data(Bytes::from_static(b"data: first\n\n"))
                    .await;
                gate.notified().await;
                let _ = sender
                    .send_data(Bytes::from_static(b"data: second\n\n"))
                    .await;
            });
            let mut response = Response::new(body.boxed());
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/event-stream"),
            );
            response
        }
    })
    .await
}

/// Answers `200 slow` after `delay`.
pub async fn slow(delay: Duration) -> Backend {
    Backend::start(move |_req| async move {
        tokio::time::sleep(delay).await;
        reply(StatusCode::OK, "slow")
    })
    .await
}

/// A raw TCP service; stops when dropped.
pub struct RawBackend {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
    task: JoinHandle<()>,
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawBackend {
    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every byte received so far, over all connections.
    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().expect("record")).into_owned()
    }
}

/// Accepts connections, reads what comes, and never answers.
pub async fn silent() -> RawBackend {
    raw(None).await
}

/// Reads a request head, then writes `response` byte for byte and closes.
pub async fn fixed(response: &'static [u8]) -> RawBackend {
    raw(Some(response)).await
}

async fn raw(response: Option<&'static [u8]>) -> RawBackend {
    let listener = bind().await;
    let addr = listener.local_addr().expect("backend address");
    let received = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&received);
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let mut buf = [0u8; 16 * 1024];
                loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    let head_done = {
                        let mut seen = record.lock().expect("record");
                        seen.extend_from_slice(&buf[..n]);
                        seen.windows(4).any(|w| w == b"\r\n\r\n")
                    };
                    if let (Some(response), true) = (response, head_done) {
                        let _ = stream.write_all(response).await;
                        let _ = stream.shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    RawBackend {
        addr,
        received,
        task,
    }
}

/// A WebSocket server that echoes every text and binary message and answers a close.
/// Returns the backend and the request paths its handshakes saw.
pub async fn websocket_echo() -> (RawBackend, Arc<Mutex<Vec<String>>>) {
    let listener = bind().await;
    let addr = listener.local_addr().expect("backend address");
    let paths = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&paths);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let callback = RecordPath(record);
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    let echo = message.is_text() || message.is_binary();
                    if echo && ws.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let backend = RawBackend {
        addr,
        received: Arc::default(),
        task,
    };
    (backend, paths)
}

/// Records the request target of each WebSocket handshake.
struct RecordPath(Arc<Mutex<Vec<String>>>);

impl handshake::server::Callback for RecordPath {
    fn on_request(
        self,
        request: &handshake::server::Request,
        response: handshake::server::Response,
    ) -> Result<handshake::server::Response, handshake::server::ErrorResponse> {
        self.0
            .lock()
            .expect("record")
            .push(request.uri().to_string());
        Ok(response)
    }
}

/// A port whose listen queue is full: connections to it neither succeed nor fail, so a
/// connect attempt runs into its timeout. Dropped, it closes.
pub struct Unaccepting {
    addr: SocketAddr,
    _listener: std::net::TcpListener,
    _queued: std::net::TcpStream,
}

impl Unaccepting {
    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A listener with a backlog of 0 that never accepts, its one queue slot already taken.
pub fn unaccepting() -> Unaccepting {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    socket.bind(&any.into()).expect("bind");
    socket.listen(0).expect("listen");
    let listener: std::net::TcpListener = socket.into();
    let addr = listener.local_addr().expect("address");
    let queued = std::net::TcpStream::connect(addr).expect("fill the listen queue");
    Unaccepting {
        addr,
        _listener: listener,
        _queued: queued,
    }
}

/// A raw TCP echo service (what an SSH server stands for in tests): everything read is
/// written back; when the client shuts down its write side, the service finishes writing
/// and shuts down its own. Stops when dropped.
pub struct TcpEcho {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TcpEcho {
    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Starts a TCP echo service on a fresh port.
pub async fn tcp_echo() -> TcpEcho {
    let listener = bind().await;
    let addr = listener.local_addr().expect("echo address");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.into_split();
                if tokio::io::copy(&mut reader, &mut writer).await.is_ok() {
                    let _ = writer.shutdown().await;
                }
            });
        }
    });
    TcpEcho { addr, task }
}
