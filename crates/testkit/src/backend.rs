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
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake;

mod raw;

pub use raw::{
    RawBackend, ResetAt, Unaccepting, deaf, early_answer, fixed, resetting, silent, unaccepting,
};

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
    open: AtomicUsize,
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
                task_record.open.fetch_add(1, Ordering::SeqCst);
                let record = Arc::clone(&task_record);
                let handler = Arc::clone(&handler);
                tokio::spawn(async move {
                    let open = Arc::clone(&record);
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
                    open.open.fetch_sub(1, Ordering::SeqCst);
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

    /// How many of them are still open: a connection the client closed (or reset) is
    /// counted out as soon as the server notices, even in the middle of a response.
    pub fn open_connections(&self) -> usize {
        self.record.open.load(Ordering::SeqCst)
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
            event_stream(body)
        }
    })
    .await
}

/// An endless server-sent-events stream, `data: tick N` every `interval`, as a model
/// streaming tokens: it stops only when the client's side of the connection is gone.
pub async fn ticker(interval: Duration) -> Backend {
    Backend::start(move |_req| async move {
        let (mut sender, body) = Channel::<Bytes, Infallible>::new(1);
        tokio::spawn(async move {
            for n in 0u64.. {
                let event = Bytes::from(format!("data: tick {n}\n\n"));
                if sender.send_data(event).await.is_err() {
                    return;
                }
                tokio::time::sleep(interval).await;
            }
        });
        event_stream(body)
    })
    .await
}

/// A `200 text/event-stream` response streaming `body`.
fn event_stream(body: Channel<Bytes, Infallible>) -> Response<BackendBody> {
    let mut response = Response::new(body.boxed());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    response
}

/// Answers `200 slow` after `delay`.
pub async fn slow(delay: Duration) -> Backend {
    Backend::start(move |_req| async move {
        tokio::time::sleep(delay).await;
        reply(StatusCode::OK, "slow")
    })
    .await
}

/// A WebSocket server that echoes every text and binary message and answers a close.
/// Returns the backend and the request paths its handshakes saw.
pub async fn websocket_echo() -> (RawBackend, Arc<Mutex<Vec<String>>>) {
    let paths = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&paths);
    let backend = RawBackend::spawn(move |stream, _| {
        let callback = RecordPath(Arc::clone(&record));
        async move {
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                let echo = message.is_text() || message.is_binary();
                if echo && ws.send(message).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
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
