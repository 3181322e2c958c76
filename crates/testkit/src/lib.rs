//! Test support for `clearml-gateway`: the real parts a test needs, each in one call.
//!
//! - [`backend`]: upstream apps on `127.0.0.1:0` (echo, byte source, SSE, slow, silent,
//!   fixed raw answers, WebSocket echo) that record what reached them.
//! - [`client`]: HTTP/1.1, h2c, raw TCP and WebSocket clients, and hand-spoken keep-alive
//!   connections by the thousand; [`h2frames`]: HTTP/2 frame by frame, for what client
//!   libraries refuse to send.
//! - [`recording`]: an upstream that records each request's exact bytes and framing.
//! - [`process`]: the built gateway binary as a child process, with its logs and `/proc`.
//! - [`wait`]: polling a condition with a deadline.
//!
//! A test reads as a story:
//! `let app = backend::echo().await;`
//! `let gw = gateway(BIN).route("demo", app.url()).start().await;`
//! `let reply = client(gw.addr()).get("/service/demo/x").await;`

pub mod backend;
pub mod client;
pub mod h2frames;
pub mod process;
pub mod recording;
pub mod tempdir;
pub mod wait;

pub use client::client;
pub use process::gateway;
pub mod clearml;
