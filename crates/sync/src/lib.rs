//! Keeps the gateway's route table in step with ClearML (CONTRACT §3–§5).
//!
//! A task update's whole path, every poll interval (`run`):
//!
//! 1. `queues` resolves `LISTEN_QUEUE_NAME` to queue ids (again from time to time).
//! 2. `run` lists the running tasks tagged `external_service`, page by page.
//! 3. `plan` turns them into a route table and the write-backs still missing, reading each
//!    task's endpoints with `endpoints` (a broken entry is skipped, never the others).
//! 4. `run` publishes the table in one swap, if it changed, then hands the missing
//!    `endpoint{S}` / `browser_endpoint{S}` to `writer`, which writes them in the background
//!    (`writeback`: keeping every other key), so the next poll is never held up.
//!
//! After a large poll, `memory` hands its freed heap back to the system.
//!
//! ClearML failing leaves the last good table serving; `run` logs the outage when it starts
//! and ends and backs off. Talking to ClearML is `gateway_clearml`'s job; serving the table
//! is `gateway_proxy`'s.

pub mod endpoints;
#[cfg(test)]
mod fuzz;
mod memory;
mod metrics;
pub mod plan;
mod queues;
mod run;
mod sessions;
mod settings;
pub mod writeback;
mod writer;

pub use metrics::SyncMetrics;
pub use queues::queue_ids;
pub use run::{Report, Sync, SyncError};
pub use sessions::TcpContext;
pub use settings::{BrowserEndpoint, SyncSettings};
