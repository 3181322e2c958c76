//! Only ClearML users who may see a task reach it (CONTRACT §7).
//!
//! [`ClearmlAuthorizer`] implements the proxy's `Authorizer`: `identify` asks
//! `users.get_current_user` with the request's token (or, with `AUTH_BASE64_JWKS_KEY`, checks
//! its signature locally), `may_see` asks `tasks.get_all {id: [task]}` as that user. Answers
//! are kept in `cache` under a keyed hash of the token, a yes never past the token's
//! expiry, a no briefly; `flight` makes concurrent requests with one new token share one
//! call; `local` checks HS256 signatures.

mod authorizer;
mod cache;
mod flight;
mod local;
mod metrics;

pub use authorizer::{AuthSettings, ClearmlAuthorizer};
pub use metrics::AuthMetrics;
