//! Upstreams at the TCP level, for what no HTTP server library would do: never answer,
//! answer fixed bytes, never read, reset the connection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::bind;

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

    /// Accepts connections on a fresh port and hands each to `serve`, with the record of
    /// received bytes.
    pub(super) async fn spawn<F, Fut>(serve: F) -> RawBackend
    where
        F: Fn(TcpStream, Arc<Mutex<Vec<u8>>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = bind().await;
        let addr = listener.local_addr().expect("backend address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&received);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve(stream, Arc::clone(&record)));
            }
        });
        RawBackend {
            addr,
            received,
            task,
        }
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
    RawBackend::spawn(move |mut stream, record| async move {
        let head_read = read_head(&mut stream, &record).await;
        match (response, head_read) {
            (Some(response), true) => {
                let _ = stream.write_all(response).await;
                let _ = stream.shutdown().await;
            }
            // Silent: whatever else comes is read and kept, and never answered.
            (None, true) => while read_chunk(&mut stream, &record).await.is_some() {},
            (_, false) => {}
        }
    })
    .await
}

/// Reads into `record` until this connection's request head is complete; false if the
/// connection ends first.
async fn read_head(stream: &mut TcpStream, record: &Mutex<Vec<u8>>) -> bool {
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match read_chunk(stream, record).await {
            Some(chunk) => head.extend_from_slice(&chunk),
            None => return false,
        }
    }
    true
}

/// Reads what is there and adds it to `record`; `None` once the connection has ended.
async fn read_chunk(stream: &mut TcpStream, record: &Mutex<Vec<u8>>) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 16 * 1024];
    match stream.read(&mut buf).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.truncate(n);
            record.lock().expect("record").extend_from_slice(&buf);
            Some(buf)
        }
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

/// Where a [`resetting`] backend resets its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetAt {
    /// As soon as the connection is accepted.
    Accept,
    /// Once the request head has arrived, before any answer.
    Head,
    /// After a `200` head announcing 1 MiB and the first 64 KiB of its body.
    Body,
}

/// Resets every connection (RST, not FIN: the peer's next read or write fails with
/// "connection reset") at `at`.
pub async fn resetting(at: ResetAt) -> RawBackend {
    RawBackend::spawn(move |mut stream, record| async move {
        if at != ResetAt::Accept && !read_head(&mut stream, &record).await {
            return;
        }
        if at == ResetAt::Body {
            let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n";
            let written = stream.write_all(head).await;
            if written.is_err() || stream.write_all(&[b'x'; 64 * 1024]).await.is_err() {
                return;
            }
            let _ = stream.flush().await;
        }
        reset(stream);
    })
    .await
}

/// Closes `stream` with a reset: a zero linger time makes `close` send RST.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Reads a request head, writes `response`, then neither reads nor closes: an app that
/// answers before the request body has come (a `413`, say) and ignores the rest of it.
pub async fn early_answer(response: &'static [u8]) -> RawBackend {
    RawBackend::spawn(move |mut stream, record| async move {
        if read_head(&mut stream, &record).await && stream.write_all(response).await.is_ok() {
            std::future::pending::<()>().await;
        }
    })
    .await
}

/// Accepts connections and never reads from them, so a request body fills the socket
/// buffers and stalls; after `close_after`, if given, closes them with the body unread.
pub async fn deaf(close_after: Option<Duration>) -> RawBackend {
    RawBackend::spawn(move |stream, _| async move {
        match close_after {
            Some(after) => tokio::time::sleep(after).await,
            None => std::future::pending().await,
        }
        drop(stream);
    })
    .await
}
