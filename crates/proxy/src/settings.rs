//! Timeouts and limits of the HTTP listener and the upstream client.

use std::time::Duration;

use crate::policy::AddressPolicy;

/// The scheme clients used to reach the gateway, sent upstream as `X-Forwarded-Proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientScheme {
    /// Plain HTTP.
    Http,
    /// HTTPS (TLS terminated here or in front of the gateway).
    Https,
}

impl ClientScheme {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientScheme::Http => "http",
            ClientScheme::Https => "https",
        }
    }
}

/// The most client connections a gateway holds by default, however many descriptors it may
/// open: at about 20 KiB each when idle, a gigabyte of memory.
pub const DEFAULT_MAX_CONNECTIONS: usize = 50_000;

/// How the HTTP side behaves; every field has a default that suits a production gateway.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Longest wait for a TCP connection to an upstream.
    pub connect_timeout: Duration,
    /// Longest wait for an upstream's response headers after the request was sent.
    pub response_header_timeout: Duration,
    /// Longest time a client may take to send a request head.
    pub client_header_timeout: Duration,
    /// Longest pause in a request body before the request is given up (408).
    pub client_body_timeout: Duration,
    /// How long a client connection with no request in flight is kept open.
    pub idle_timeout: Duration,
    /// How long an idle pooled upstream connection is kept.
    pub upstream_idle_timeout: Duration,
    /// Most idle pooled connections kept per upstream.
    pub upstream_max_idle_per_host: usize,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// Largest request body, in bytes; `None` for no limit.
    pub max_body_bytes: Option<u64>,
    /// Most client connections open at once; more are answered `503` and closed.
    pub max_connections: usize,
    /// How long requests in flight may run on after shutdown starts.
    pub shutdown_grace: Duration,
    /// The scheme sent upstream in `X-Forwarded-Proto`.
    pub client_scheme: ClientScheme,
    /// Where upstreams may point (`ROUTER__UPSTREAM__ALLOW_CIDRS`).
    pub upstream_policy: AddressPolicy,
    /// The name this gateway gives itself in the `Via` header of requests it forwards; a
    /// request that already carries it has looped back (508).
    pub via_pseudonym: String,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            response_header_timeout: Duration::from_secs(300),
            client_header_timeout: Duration::from_secs(30),
            client_body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            upstream_idle_timeout: Duration::from_secs(60),
            upstream_max_idle_per_host: 256,
            max_header_bytes: 64 * 1024,
            max_body_bytes: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_grace: Duration::from_secs(30),
            client_scheme: ClientScheme::Http,
            upstream_policy: AddressPolicy::default(),
            via_pseudonym: "clearml-gateway".to_owned(),
        }
    }
}
