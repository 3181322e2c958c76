//! Keep-alive connections to the tasks' apps: a list of idle connections per upstream
//! `host:port`.
//!
//! A request takes an idle connection that is ready (or opens one), and the connection
//! rides along with the response body as a [`Lease`]; when the body has been sent whole it
//! goes back to its list, ready for the next request. hyper-util's pooled client did the
//! same with more work per request (the pool key cloned and hashed twice, a task spawned per
//! response to wait for the connection to be free again), which the profile showed.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service as _;

use crate::body::RequestBody;
use crate::policy::PolicyResolver;

/// Why an exchange with an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection: refused, unreachable, timed out, or an address the policy refuses.
    #[error("connect: {0}")]
    Connect(#[source] Box<dyn StdError + Send + Sync>),
    /// The connection failed during the exchange (or the client's body did).
    #[error(transparent)]
    Exchange(#[from] hyper::Error),
}

/// The sending half of one upstream connection. Dropping it closes the connection, even
/// in the middle of an exchange: hyper would otherwise keep writing a request body to an
/// app that stopped reading it, holding the connection, the client's body and its
/// connection for as long as the app stays up.
struct Sender {
    send: SendRequest<RequestBody>,
    /// The task driving the connection; `None` once it is handed over to a tunnel.
    connection: Option<tokio::task::AbortHandle>,
}

impl Drop for Sender {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            connection.abort();
        }
    }
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// FNV-1a: `Authority` hashes byte by byte, which SipHash makes the pool's biggest cost.
/// The keys are the tasks' own `host:port`s, few and not chosen by clients.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

type FnvState = std::hash::BuildHasherDefault<Fnv>;

/// The idle connections of every upstream, and how to open new ones.
pub(crate) struct UpstreamPool {
    connector: HttpConnector<PolicyResolver>,
    idle: Mutex<HashMap<Authority, Vec<Idle>, FnvState>>,
    max_idle_per_host: usize,
    idle_timeout: Duration,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("max_idle_per_host", &self.max_idle_per_host)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl UpstreamPool {
    /// A pool opening connections with `connector`; starts the task that closes
    /// connections idle for longer than `idle_timeout` (so it needs a tokio runtime).
    pub(crate) fn new(
        connector: HttpConnector<PolicyResolver>,
        max_idle_per_host: usize,
        idle_timeout: Duration,
    ) -> Arc<Self> {
        let pool = Arc::new(Self {
            connector,
            idle: Mutex::default(),
            max_idle_per_host,
            idle_timeout,
        });
        tokio::spawn(sweep(Arc::downgrade(&pool)));
        pool
    }

    /// Sends `request` (its target in origin form) to `authority`, on an idle connection
    /// when one is ready, and returns the response head with the connection's lease.
    pub(crate) async fn send(
        self: &Arc<Self>,
        authority: &Authority,
        mut request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        if let Some(mut sender) = self.checkout(authority) {
            match sender.send.try_send_request(request).await {
                Ok(response) => return Ok((response, self.lease(sender, authority))),
                // The app closed the kept-alive connection before it took the request:
                // the request is untouched, so it goes on a new connection.
                Err(mut err) => match err.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(UpstreamError::Exchange(err.into_error())),
                },
            }
        }
        let mut sender = self.connect(authority).await?;
        let response = sender.send.send_request(request).await?;
        Ok((response, self.lease(sender, authority)))
    }

    /// The most recently used idle connection that is ready; closed ones are dropped.
    fn checkout(&self, authority: &Authority) -> Option<Sender> {
        let mut idle = self.idle();
        let list = idle.get_mut(authority)?;
        while let Some(entry) = list.pop() {
            if entry.sender.send.is_ready() && entry.since.elapsed() < self.idle_timeout {
                return Some(entry.sender);
            }
        }
        None
    }

    async fn connect(&self, authority: &Authority) -> Result<Sender, UpstreamError> {
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|err| UpstreamError::Connect(Box::new(err)))?;
        let stream = self
            .connector
            .clone()
            .call(uri)
            .await
            .map_err(|err| UpstreamError::Connect(Box::new(err)))?;
        let (send, connection) = http1::handshake(stream)
            .await
            .map_err(|err| UpstreamError::Connect(Box::new(err)))?;
        // The connection's own errors reach the exchange through the sender.
        let connection = tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        let mut sender = Sender {
            send,
            connection: Some(connection.abort_handle()),
        };
        sender
            .send
            .ready()
            .await
            .map_err(|err| UpstreamError::Connect(Box::new(err)))?;
        Ok(sender)
    }

    fn lease(self: &Arc<Self>, sender: Sender, authority: &Authority) -> Lease {
        Lease {
            sender: Some(sender),
            authority: authority.clone(),
            pool: Arc::downgrade(self),
        }
    }

    fn put_back(&self, authority: Authority, sender: Sender) {
        let mut idle = self.idle();
        let list = idle.entry(authority).or_default();
        if list.len() < self.max_idle_per_host {
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    fn idle(&self) -> MutexGuard<'_, HashMap<Authority, Vec<Idle>, FnvState>> {
        // The map holds whole entries at every step: a panic elsewhere leaves it usable.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Closes connections idle for too long, and forgets upstreams with none left.
async fn sweep(pool: Weak<UpstreamPool>) {
    let every = match pool.upgrade() {
        Some(pool) => (pool.idle_timeout / 2).max(Duration::from_secs(1)),
        None => return,
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        let timeout = pool.idle_timeout;
        pool.idle().retain(|_, list| {
            list.retain(|entry| entry.since.elapsed() < timeout && !entry.sender.send.is_closed());
            !list.is_empty()
        });
    }
}

/// A connection lent to one exchange. [`Lease::release`] gives it back once the response
/// has been read whole; dropped otherwise, it closes with its unfinished exchange.
pub(crate) struct Lease {
    sender: Option<Sender>,
    authority: Authority,
    pool: Weak<UpstreamPool>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// The response was read whole: the connection can take the next request.
    pub(crate) fn release(self) {
        let Lease {
            sender,
            authority,
            pool,
        } = self;
        let (Some(mut sender), Some(pool)) = (sender, pool.upgrade()) else {
            return;
        };
        if sender.send.is_ready() {
            pool.put_back(authority, sender);
        } else if !sender.send.is_closed() {
            // The connection has not yet seen the end of the exchange (the response came
            // before the request body was sent whole); it will in a moment, or close, which
            // `ready` reports. An app that never reads the rest has it closed.
            let wait = pool.idle_timeout;
            tokio::spawn(async move {
                if let Ok(Ok(())) = tokio::time::timeout(wait, sender.send.ready()).await {
                    pool.put_back(authority, sender);
                }
            });
        }
    }

    /// The exchange switched protocols: the connection is the tunnel's from now on, so it
    /// is neither closed nor pooled.
    pub(crate) fn hand_over(mut self) {
        if let Some(sender) = self.sender.as_mut() {
            // Left running, the connection task finishes the upgrade and ends.
            sender.connection = None;
        }
    }
}
