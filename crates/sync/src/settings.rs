//! How the sync runs.

use std::time::Duration;

use gateway_proxy::{AddressPolicy, OwnAddresses};

/// How `browser_endpoint` is written (CONTRACT §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrowserEndpoint {
    /// The same URL as `endpoint`.
    Direct,
    /// The enterprise server's `auth.redirect_to_router` form.
    Redirect,
}

/// Everything the sync needs to know besides the ClearML client.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// `ROUTER_NAME`.
    pub router_name: String,
    /// `ROUTER_URL`, without a trailing `/`.
    pub router_url: String,
    /// `CLEARML_API_HOST`, without a trailing `/`.
    pub api_host: String,
    /// How often ClearML is polled.
    pub poll_interval: Duration,
    /// The form of `browser_endpoint`.
    pub browser_endpoint: BrowserEndpoint,
    /// `LISTEN_QUEUE_NAME`, split; empty for every queue.
    pub listen_queues: Vec<String>,
    /// Where task addresses may point.
    pub policy: AddressPolicy,
    /// The gateway's own addresses, which no endpoint may point at.
    pub own: OwnAddresses,
    /// Tasks per `tasks.get_all` page.
    pub page_size: u32,
    /// The longest pause between retries while ClearML is failing.
    pub max_backoff: Duration,
    /// How often queue names are resolved to ids again.
    pub queue_refresh: Duration,
    /// Write-backs in flight at once.
    pub write_concurrency: usize,
    /// TCP sessions; `None` when they are off.
    pub tcp: Option<crate::sessions::TcpContext>,
}

impl SyncSettings {
    /// Settings with the defaults for everything but what only the operator knows.
    pub fn new(router_name: String, router_url: String, api_host: String) -> Self {
        Self {
            router_name,
            router_url,
            api_host,
            poll_interval: Duration::from_secs(2),
            browser_endpoint: BrowserEndpoint::Direct,
            listen_queues: Vec::new(),
            policy: AddressPolicy::default(),
            own: OwnAddresses::default(),
            page_size: 500,
            max_backoff: Duration::from_secs(30),
            queue_refresh: Duration::from_secs(60),
            write_concurrency: 8,
            tcp: None,
        }
    }
}
