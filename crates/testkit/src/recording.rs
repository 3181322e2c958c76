//! An upstream that records the exact bytes of each request it receives, to prove what
//! reached it: which framing the request carried and the body that framing delimited.
//!
//! It reads requests the way a strict HTTP/1.1 server would (RFC 9112 §6.3): a head, then a
//! `Transfer-Encoding: chunked` body, or a `Content-Length` body, or none; answers each
//! `200 ok` and keeps the connection for the next. What it cannot read as one request
//! ends the connection and is kept as it arrived.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One request as it arrived on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRequest {
    /// The request line and headers, without the blank line that ends them.
    pub head: String,
    /// The body as its framing delimited it (chunks joined, chunk syntax removed).
    pub body: Vec<u8>,
}

impl RawRequest {
    /// The values of every header line named `name` (case-insensitive), trimmed.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }

    /// The request line.
    pub fn request_line(&self) -> &str {
        self.head.split("\r\n").next().unwrap_or_default()
    }

    /// How the body was framed: `"content-length"`, `"chunked"` or `"none"`; panics if the
    /// request carried more than one framing, which is what this backend exists to catch.
    pub fn framing(&self) -> &'static str {
        let lengths = self.header_values("content-length").len();
        let codings = self.header_values("transfer-encoding").len();
        assert!(
            lengths + codings <= 1,
            "more than one framing reached the upstream:\n{}",
            self.head
        );
        match (lengths, codings) {
            (1, _) => "content-length",
            (_, 1) => "chunked",
            _ => "none",
        }
    }
}

#[derive(Default)]
struct Record {
    requests: Vec<RawRequest>,
    /// Bytes that could not be read as a request, per connection that sent them.
    unreadable: Vec<Vec<u8>>,
    connections: usize,
}

/// A running recording backend; stops when dropped.
pub struct Recording {
    addr: SocketAddr,
    record: Arc<Mutex<Record>>,
    task: JoinHandle<()>,
}

impl Drop for Recording {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recording {
    /// `http://127.0.0.1:port`, as a route's upstream.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every complete request received so far, in order.
    pub fn requests(&self) -> Vec<RawRequest> {
        self.record.lock().expect("record").requests.clone()
    }

    /// Bytes that arrived but were not a readable request (one entry per connection).
    pub fn unreadable(&self) -> Vec<Vec<u8>> {
        self.record.lock().expect("record").unreadable.clone()
    }

    /// How many TCP connections were accepted.
    pub fn connections(&self) -> usize {
        self.record.lock().expect("record").connections
    }
}

/// Starts a recording backend on a fresh port.
pub async fn recording() -> Recording {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a backend port");
    let addr = listener.local_addr().expect("backend address");
    let record = Arc::new(Mutex::new(Record::default()));
    let accepting = Arc::clone(&record);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            accepting.lock().expect("record").connections += 1;
            tokio::spawn(serve(stream, Arc::clone(&accepting)));
        }
    });
    Recording { addr, record, task }
}

/// Reads requests off one connection until it closes or sends something unreadable.
async fn serve(mut stream: TcpStream, record: Arc<Mutex<Record>>) {
    let mut buffer = Vec::new();
    loop {
        match parse_request(&buffer) {
            Parsed::Complete(request, used) => {
                buffer.drain(..used);
                record.lock().expect("record").requests.push(request);
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if stream.write_all(answer).await.is_err() {
                    return;
                }
                continue;
            }
            Parsed::Invalid => break,
            Parsed::Partial => {}
        }
        let mut chunk = [0u8; 16 * 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    if !buffer.is_empty() {
        record.lock().expect("record").unreadable.push(buffer);
    }
}

enum Parsed {
    Complete(RawRequest, usize),
    Partial,
    Invalid,
}

fn parse_request(buffer: &[u8]) -> Parsed {
    let Some(head_end) = find(buffer, b"\r\n\r\n") else {
        return Parsed::Partial;
    };
    let Ok(head) = std::str::from_utf8(&buffer[..head_end]) else {
        return Parsed::Invalid;
    };
    let mut request = RawRequest {
        head: head.to_owned(),
        body: Vec::new(),
    };
    let rest = &buffer[head_end + 4..];
    let chunked = request
        .header_values("transfer-encoding")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("chunked"));
    let length = request.header_values("content-length").first().cloned();
    let used = if chunked {
        match dechunk(rest) {
            Some(Ok((body, used))) => {
                request.body = body;
                used
            }
            Some(Err(())) => return Parsed::Invalid,
            None => return Parsed::Partial,
        }
    } else if let Some(length) = length {
        let Ok(length) = length.parse::<usize>() else {
            return Parsed::Invalid;
        };
        if rest.len() < length {
            return Parsed::Partial;
        }
        request.body = rest[..length].to_vec();
        length
    } else {
        0
    };
    Parsed::Complete(request, head_end + 4 + used)
}

/// A chunked body: `None` while incomplete, the body and the bytes it took when complete.
fn dechunk(mut input: &[u8]) -> Option<Result<(Vec<u8>, usize), ()>> {
    let total = input.len();
    let mut body = Vec::new();
    loop {
        let line_end = find(input, b"\r\n")?;
        let line = std::str::from_utf8(&input[..line_end]).ok();
        let size_text = line.map(|l| l.split(';').next().unwrap_or_default().trim());
        let Some(size) = size_text.and_then(|s| usize::from_str_radix(s, 16).ok()) else {
            return Some(Err(()));
        };
        input = &input[line_end + 2..];
        if size == 0 {
            // Trailer fields, then the blank line.
            loop {
                let end = find(input, b"\r\n")?;
                input = &input[end + 2..];
                if end == 0 {
                    return Some(Ok((body, total - input.len())));
                }
            }
        }
        if input.len() < size + 2 {
            return None;
        }
        if &input[size..size + 2] != b"\r\n" {
            return Some(Err(()));
        }
        body.extend_from_slice(&input[..size]);
        input = &input[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
