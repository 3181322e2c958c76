//! Cleartext HTTP/2 written frame by frame, for what a well-behaved client library refuses
//! to send: uppercase or connection-specific header names, a body longer or shorter than
//! its `content-length`. Header blocks are HPACK literals without indexing or Huffman.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

/// An HTTP/2 connection spoken frame by frame.
pub struct H2Frames {
    stream: TcpStream,
}

/// How the server dealt with one stream.
#[derive(Debug, Default)]
pub struct H2Outcome {
    /// Whether a response header block arrived.
    pub answered: bool,
    /// The response body (DATA frames of the stream).
    pub body: Vec<u8>,
    /// The error code of a `RST_STREAM` for the stream.
    pub reset: Option<u32>,
    /// The error code of a `GOAWAY`.
    pub goaway: Option<u32>,
}

impl H2Outcome {
    /// The response body as JSON, if it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// The HTTP/2 error code `PROTOCOL_ERROR`.
pub const PROTOCOL_ERROR: u32 = 1;

/// Connects to `addr` and sends the preface and empty settings (prior knowledge).
pub async fn h2_frames(addr: SocketAddr) -> H2Frames {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(PREFACE).await.expect("write the preface");
    let mut conn = H2Frames { stream };
    conn.frame(SETTINGS, 0, 0, &[]).await;
    conn
}

impl H2Frames {
    async fn frame(&mut self, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
        let length = u32::try_from(payload.len()).expect("frame length");
        let mut bytes = Vec::with_capacity(9 + payload.len());
        bytes.extend_from_slice(&length.to_be_bytes()[1..]);
        bytes.push(kind);
        bytes.push(flags);
        bytes.extend_from_slice(&stream_id.to_be_bytes());
        bytes.extend_from_slice(payload);
        // The server may already have closed on an earlier frame; what it said is read next.
        let _ = self.stream.write_all(&bytes).await;
    }

    /// Sends a header block (pseudo-headers first, as given) on stream `id`.
    pub async fn headers(&mut self, id: u32, fields: &[(&str, &str)], end_stream: bool) {
        let mut block = Vec::new();
        for (name, value) in fields {
            block.push(0x00);
            hpack_string(&mut block, name.as_bytes());
            hpack_string(&mut block, value.as_bytes());
        }
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        self.frame(HEADERS, flags, id, &block).await;
    }

    /// Sends body bytes on stream `id`.
    pub async fn data(&mut self, id: u32, bytes: &[u8], end_stream: bool) {
        let flags = if end_stream { END_STREAM } else { 0 };
        self.frame(DATA, flags, id, bytes).await;
    }

    /// Reads frames until stream `id` ends, is reset, the connection goes away, or 5 s pass.
    pub async fn outcome(&mut self, id: u32) -> H2Outcome {
        let mut outcome = H2Outcome::default();
        let reading = async {
            loop {
                let mut header = [0u8; 9];
                if self.stream.read_exact(&mut header).await.is_err() {
                    return;
                }
                let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
                let (kind, flags) = (header[3], header[4]);
                let stream =
                    u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
                let mut payload = vec![0u8; length];
                if self.stream.read_exact(&mut payload).await.is_err() {
                    return;
                }
                let code = || {
                    payload
                        .get(..4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                };
                match kind {
                    SETTINGS if flags & ACK == 0 => self.frame(SETTINGS, ACK, 0, &[]).await,
                    PING if flags & ACK == 0 => self.frame(PING, ACK, 0, &payload).await,
                    GOAWAY => {
                        outcome.goaway = payload
                            .get(4..8)
                            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                        return;
                    }
                    RST_STREAM if stream == id => {
                        outcome.reset = code();
                        return;
                    }
                    HEADERS if stream == id => outcome.answered = true,
                    DATA if stream == id => outcome.body.extend_from_slice(&payload),
                    _ => {}
                }
                if stream == id && flags & END_STREAM != 0 && (kind == HEADERS || kind == DATA) {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), reading).await;
        outcome
    }
}

/// An HPACK string literal without Huffman coding: a 7-bit-prefix length, then the bytes.
fn hpack_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut length = bytes.len();
    if length < 0x7f {
        out.push(length as u8);
    } else {
        out.push(0x7f);
        length -= 0x7f;
        while length >= 0x80 {
            out.push((length % 0x80) as u8 | 0x80);
            length /= 0x80;
        }
        out.push(length as u8);
    }
    out.extend_from_slice(bytes);
}
