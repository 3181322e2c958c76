//! The set of open session ports, brought in line with the sessions wanted in one call.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::allocator::PortAllocator;
use std::sync::Arc;

use crate::forward::{ForwardSettings, Target, TcpCounters, serve_port};

/// Which port a session listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortChoice {
    /// This port, outside any range (the standalone routes file).
    Fixed(u16),
    /// A port of the range; `adopt` is the one the session had before a restart, kept if free.
    Allocate {
        /// The port to keep, if any.
        adopt: Option<u16>,
    },
}

/// A session that should be open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Where its connections go.
    pub target: Target,
    /// Which port it listens on.
    pub port: PortChoice,
}

/// Where a wanted session ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Listening on this port.
    Serving(u16),
    /// Every port of the range is taken.
    Exhausted,
    /// The port could not be opened.
    Failed(String),
}

/// The open session ports.
pub struct TcpSessions {
    host: IpAddr,
    settings: ForwardSettings,
    state: Mutex<State>,
}

struct State {
    allocator: Option<PortAllocator>,
    active: HashMap<String, Active>,
}

struct Active {
    port: u16,
    target: Target,
    allocated: bool,
    stop: CancellationToken,
    serving: JoinHandle<()>,
}

impl TcpSessions {
    /// Sessions listening on `host`, with ports allocated from `range` (none: fixed ports only).
    pub fn new(
        host: IpAddr,
        range: Option<RangeInclusive<u16>>,
        settings: ForwardSettings,
    ) -> Self {
        Self {
            host,
            settings,
            state: Mutex::new(State {
                allocator: range.map(PortAllocator::new),
                active: HashMap::new(),
            }),
        }
    }

    /// Opens the wanted sessions that are not open, closes (with their connections) those no
    /// longer wanted or whose target changed, and says where each wanted one is, by key.
    pub async fn apply(&self, wanted: Vec<Wanted>) -> HashMap<String, Placement> {
        let mut state = self.state.lock().await;
        let keep: HashMap<&str, &Wanted> =
            wanted.iter().map(|w| (w.target.key.as_str(), w)).collect();
        let stale: Vec<String> = state
            .active
            .iter()
            .filter(|(key, active)| {
                keep.get(key.as_str())
                    .is_none_or(|w| w.target != active.target)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if let Some(active) = state.active.remove(&key) {
                close(&mut state, active).await;
                self.closed();
                tracing::info!(session = %key, "tcp session port closed");
            }
        }
        let mut placements = HashMap::new();
        for want in &wanted {
            let placement = match state.active.get(&want.target.key) {
                Some(active) => Placement::Serving(active.port),
                None => self.open(&mut state, want).await,
            };
            placements.insert(want.target.key.clone(), placement);
        }
        placements
    }

    /// The keys of the open sessions.
    pub async fn keys(&self) -> Vec<String> {
        self.state.lock().await.active.keys().cloned().collect()
    }

    /// Ports open now.
    pub async fn ports_in_use(&self) -> usize {
        self.state.lock().await.active.len()
    }

    /// Closes every session.
    pub async fn close_all(&self) {
        let mut state = self.state.lock().await;
        let all: Vec<Active> = state.active.drain().map(|(_, a)| a).collect();
        for active in all {
            close(&mut state, active).await;
            self.closed();
        }
    }

    /// What the session ports have done.
    pub fn counters(&self) -> Arc<TcpCounters> {
        Arc::clone(&self.settings.counters)
    }

    fn closed(&self) {
        self.settings
            .counters
            .ports
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    async fn open(&self, state: &mut State, want: &Wanted) -> Placement {
        let (listener, port, allocated) = match want.port {
            PortChoice::Fixed(port) => match self.bind(port).await {
                Ok(listener) => (listener, port, false),
                Err(err) => return Placement::Failed(format!("port {port}: {err}")),
            },
            PortChoice::Allocate { adopt } => match self.allocate(state, adopt).await {
                Ok((listener, port)) => (listener, port, true),
                Err(placement) => return placement,
            },
        };
        let stop = CancellationToken::new();
        let serving = tokio::spawn(serve_port(
            listener,
            want.target.clone(),
            self.settings.clone(),
            stop.clone(),
        ));
        tracing::info!(
            session = %want.target.key, port, upstream = %format!("{}:{}", want.target.host, want.target.port),
            "tcp session port open"
        );
        self.settings
            .counters
            .ports
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        state.active.insert(
            want.target.key.clone(),
            Active {
                port,
                target: want.target.clone(),
                allocated,
                stop,
                serving,
            },
        );
        Placement::Serving(port)
    }

    /// A port of the range, the adopted one if it is free; ports another process holds are
    /// skipped (they go to the back of the line, to be tried again later).
    async fn allocate(
        &self,
        state: &mut State,
        adopt: Option<u16>,
    ) -> Result<(TcpListener, u16), Placement> {
        let Some(allocator) = state.allocator.as_mut() else {
            return Err(Placement::Failed(
                "TCP sessions are off (no port range)".to_owned(),
            ));
        };
        if let Some(port) = adopt.filter(|p| allocator.claim(*p)) {
            match self.bind(port).await {
                Ok(listener) => return Ok((listener, port)),
                Err(err) => {
                    tracing::warn!(port, error = %err, "cannot reopen an adopted session port; allocating another");
                    allocator.release(port);
                }
            }
        }
        let attempts = allocator.free_ports();
        for _ in 0..attempts {
            let Some(port) = allocator.allocate() else {
                break;
            };
            match self.bind(port).await {
                Ok(listener) => return Ok((listener, port)),
                Err(err) => {
                    tracing::warn!(port, error = %err, "session port unavailable (held by another process?); skipping it for now");
                    allocator.release(port);
                }
            }
        }
        Err(Placement::Exhausted)
    }

    async fn bind(&self, port: u16) -> io::Result<TcpListener> {
        TcpListener::bind(SocketAddr::new(self.host, port)).await
    }
}

/// Stops a session: its listener closes at once, its open connections are cut, its port
/// goes back to the range.
async fn close(state: &mut State, active: Active) {
    active.stop.cancel();
    let _ = active.serving.await;
    if active.allocated {
        if let Some(allocator) = state.allocator.as_mut() {
            allocator.release(active.port);
        }
    }
}
