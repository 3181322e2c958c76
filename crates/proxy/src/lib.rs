//! HTTP termination, the route table and streaming forwarding for `clearml-gateway`.
//!
//! How a request moves through the modules:
//!
//! - [`server`] accepts a connection (`limit`: or refuses it, beyond the cap) and serves
//!   HTTP/1.1 and cleartext HTTP/2 on it; `conn` closes it when idle or at shutdown.
//! - [`gateway`] is the request path: `checks` refuses heads it cannot forward faithfully,
//!   [`target`] reads the path, the gateway answers its
//!   own `/_gateway/` paths (`login`: the log-in hand-off), [`auth`] finds the request's
//!   token and asks the [`Authorizer`] about it, and [`routes`] finds the route in the
//!   current table (one lock-free load of an immutable snapshot).
//! - `forward` rewrites the head (`headers`: hop-by-hop out, `X-Forwarded-*` in), sends it
//!   through the pooled upstream client with the body streaming behind it (`body`);
//!   `tunnel` joins the two connections after a `101`. `loops` adds the gateway's `Via`
//!   entry, and refuses a request that already carries it.
//! - Every answer, forwarded or the gateway's own ([`error`], `answers`), leaves through
//!   [`ResponseBody`], which counts bytes and writes the access line (`access_log`, its
//!   text by hand in [`access_line`], into an [`AccessSink`]).
//!
//! Whoever owns the routes (the standalone routes file, the ClearML sync) builds a
//! [`RouteTable`] and publishes it with [`RouteStore::replace`]; this crate knows nothing of
//! where routes come from.

pub mod access_line;
mod access_log;
mod answers;
pub mod auth;
pub mod body;
mod checks;
mod conn;
pub mod error;
mod forward;
#[cfg(test)]
mod fuzz;
pub mod gateway;
mod headers;
mod limit;
mod login;
mod loops;
pub mod metrics;
pub mod policy;
mod pool;
pub mod routes;
pub mod server;
pub mod settings;
pub mod target;
pub mod tls;
mod tunnel;

pub use access_line::{AccessFormat, AccessSink};
pub use auth::{Admission, AuthSettings, Authorizer, Denial, Identity, Verdict};
pub use body::{RequestBody, ResponseBody};
pub use error::ProxyError;
pub use gateway::{Gateway, GatewayBuilder, Readiness};
pub use loops::OwnAddresses;
pub use metrics::MetricsSource;
pub use policy::{AddressPolicy, Cidr};
pub use routes::{InvalidUpstream, Route, RouteStore, RouteTable, SERVICE_PREFIX, Upstream};
pub use server::{Drain, Server};
pub use settings::{ClientScheme, DEFAULT_MAX_CONNECTIONS, HttpSettings};
pub use tls::{Tls, TlsError};
