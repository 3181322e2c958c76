//! The ClearML API as `clearml-gateway` uses it (CONTRACT §2).
//!
//! - `client`: the `{service}.{action}` call over HTTP, the meta/data envelope, and the
//!   gateway's session — login with its keys, refresh before the token expires and once
//!   after a 401.
//! - `api`: the calls themselves, typed: tasks, queues, users.
//! - `token`: what the gateway reads from a token (expiry, API version, identity).
//! - `error`: every failure says which call failed, and how.

mod api;
mod client;
mod error;
pub mod token;

pub use api::{GetAllTasks, ListedTask, Queue, Runtime, User};
pub use client::{ClearmlClient, ClientSettings};
pub use error::ClearmlError;
pub use token::{ApiVersion, Claims, Identity};
