//! Clients for tests: HTTP/1.1 and h2c over a fresh connection per request, raw TCP for
//! what a well-behaved client would never send, and WebSocket.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

/// A whole response, read to its end.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The protocol version the response came over.
    pub version: Version,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON; panics with the body's text if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("body is not JSON ({err}): {:?}", self.text()))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Why a request got no response.
#[derive(Debug)]
pub enum ClientError {
    /// The TCP connection failed.
    Connect(std::io::Error),
    /// The HTTP exchange failed.
    Http(hyper::Error),
}

impl From<std::io::Error> for ClientError {
    fn from(err: std::io::Error) -> Self {
        ClientError::Connect(err)
    }
}

impl From<hyper::Error> for ClientError {
    fn from(err: hyper::Error) -> Self {
        ClientError::Http(err)
    }
}

/// How a [`Client`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    H2c,
}

/// Sends requests to one address, each on a connection of its own.
#[derive(Debug, Clone)]
pub struct Client {
    addr: SocketAddr,
    protocol: Protocol,
    bearer: Option<String>,
}

/// An HTTP/1.1 client for `addr`.
pub fn client(addr: SocketAddr) -> Client {
    Client {
        addr,
        protocol: Protocol::Http1,
        bearer: None,
    }
}

impl Client {
    /// The same client sending `Authorization: Bearer {token}` with every request.
    pub fn bearer(self, token: &str) -> Self {
        Self {
            bearer: Some(token.to_owned()),
            ..self
        }
    }

    /// The same client speaking cleartext HTTP/2 with prior knowledge.
    pub fn h2c(self) -> Self {
        Self {
            protocol: Protocol::H2c,
            ..self
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(
            self.request(Method::GET, path)
                .body(Full::default())
                .expect("request"),
        )
        .await
    }

    /// `POST path` with `body`.
    pub async fn post(&self, path: &str, body: impl Into<Bytes>) -> Reply {
        let request = self.request(Method::POST, path);
        self.send(request.body(Full::new(body.into())).expect("request"))
            .await
    }

    /// A request builder with the target, `Host` and any bearer token filled in.
    pub fn request(&self, method: Method, path: &str) -> http::request::Builder {
        let mut builder = Request::builder().method(method);
        if let Some(token) = &self.bearer {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        match self.protocol {
            Protocol::Http1 => builder.uri(path).header("host", self.addr.to_string()),
            Protocol::H2c => builder
                .uri(format!("http://{}{path}", self.addr))
                .version(Version::HTTP_2),
        }
    }

    /// Sends `request` and reads the whole response.
    pub async fn send<B>(&self, request: Request<B>) -> Reply
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let response = self.open(request).await;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .expect("read the response body")
            .to_bytes();
        Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        }
    }

    /// Sends `request` and returns as soon as the response head arrives, body unread.
    pub async fn open<B>(&self, request: Request<B>) -> Response<Incoming>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.try_open(request).await.expect("send the request")
    }

    /// Like [`open`](Self::open), with the error instead of a panic.
    pub async fn try_open<B>(&self, request: Request<B>) -> Result<Response<Incoming>, ClientError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = TcpStream::connect(self.addr).await?;
        let io = TokioIo::new(stream);
        let response = match self.protocol {
            Protocol::Http1 => {
                let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(conn.with_upgrades());
                sender.send_request(request).await?
            }
            Protocol::H2c => {
                let (mut sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(conn);
                sender.send_request(request).await?
            }
        };
        Ok(response)
    }
}

/// An empty request body.
pub fn empty() -> Empty<Bytes> {
    Empty::new()
}

/// Writes `bytes` on a new connection and reads until the server closes it (or 5 s pass).
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    raw_session(addr, bytes).await.text
}

/// What came back on a raw connection.
#[derive(Debug)]
pub struct RawReply {
    /// Everything the server wrote, as text.
    pub text: String,
    /// Whether the server closed the connection within 5 s.
    pub closed: bool,
}

impl RawReply {
    /// How many HTTP responses the text holds, read one after the other by their
    /// `content-length` (every answer in these tests has one, or no body).
    pub fn responses(&self) -> usize {
        let mut rest = self.text.as_str();
        let mut count = 0;
        while rest.starts_with("HTTP/1.") {
            let Some(end) = rest.find("\r\n\r\n") else {
                break;
            };
            let length = rest[..end]
                .lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, value)| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            count += 1;
            rest = rest.get(end + 4 + length..).unwrap_or_default();
        }
        count
    }
}

/// Writes `bytes` on a new connection and reads until the server closes it, or 5 s pass.
pub async fn raw_session(addr: SocketAddr, bytes: &[u8]) -> RawReply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // A server that refuses early may close before all is written: what it answered counts.
    let _ = stream.write_all(bytes).await;
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    });
    let closed = read.await.is_ok();
    RawReply {
        text: String::from_utf8_lossy(&received).into_owned(),
        closed,
    }
}

/// Connects to `port` of 127.0.0.1 (a TCP session port, say), writes `message`, shuts its
/// side down, and returns everything read back until the other side closes.
pub async fn tcp_round_trip(port: u16, message: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the port");
    stream.write_all(message).await.expect("write");
    stream.shutdown().await.expect("shut down the write side");
    let mut back = Vec::new();
    stream.read_to_end(&mut back).await.expect("read back");
    back
}

/// Opens a WebSocket to `path` on `addr`.
pub async fn websocket(addr: SocketAddr, path: &str) -> WebSocketStream<TcpStream> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let url = format!("ws://{addr}{path}");
    let (ws, response) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("WebSocket handshake");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

/// One HTTP/1.1 connection kept open between requests, spoken by hand: thousands of them
/// cost little more than their sockets.
#[derive(Debug)]
pub struct KeptAlive {
    stream: TcpStream,
}

/// A response read off a [`KeptAlive`] connection.
#[derive(Debug)]
pub struct KeptAliveReply {
    /// The status code.
    pub status: u16,
    /// The status line and headers, as received.
    pub head: String,
    /// The body (framed by `Content-Length`).
    pub body: Vec<u8>,
}

impl KeptAliveReply {
    /// The value of header `name` (any case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Opens a connection to `addr` to send requests on one after the other.
pub async fn kept_alive(addr: SocketAddr) -> std::io::Result<KeptAlive> {
    Ok(KeptAlive {
        stream: TcpStream::connect(addr).await?,
    })
}

impl KeptAlive {
    /// `GET path` on this connection; the response must carry `Content-Length`.
    pub async fn get(&mut self, path: &str) -> std::io::Result<KeptAliveReply> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: gateway\r\n\r\n");
        self.stream.write_all(request.as_bytes()).await?;
        self.reply().await
    }

    /// Reads one response, whether or not a request was sent for it.
    pub async fn reply(&mut self) -> std::io::Result<KeptAliveReply> {
        let mut received = Vec::with_capacity(1024);
        let head_end = loop {
            if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if self.stream.read_buf(&mut received).await? == 0 {
                return Err(unexpected("the connection closed before a response head"));
            }
        };
        let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
        let mut reply = KeptAliveReply {
            status: head
                .split(' ')
                .nth(1)
                .and_then(|code| code.parse().ok())
                .ok_or_else(|| unexpected("no status code"))?,
            body: received.split_off(head_end),
            head,
        };
        let length: usize = reply
            .header("content-length")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| unexpected("no Content-Length"))?;
        while reply.body.len() < length {
            if self.stream.read_buf(&mut reply.body).await? == 0 {
                return Err(unexpected("the connection closed inside the body"));
            }
        }
        Ok(reply)
    }

    /// Whether the server closes the connection within `timeout` (reading nothing more).
    pub async fn closed_within(&mut self, timeout: Duration) -> bool {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(timeout, self.stream.read(&mut byte)).await;
        matches!(read, Ok(Ok(0) | Err(_)))
    }
}

fn unexpected(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}
