//! One session port: accept connections and join each to the task's port, byte for byte.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the session ports have done, for metrics.
#[derive(Debug, Default)]
pub struct TcpCounters {
    open: AtomicI64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    pub(crate) ports: AtomicI64,
}

impl TcpCounters {
    /// Connections open now.
    pub fn open_connections(&self) -> i64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Bytes moved from clients to tasks, and from tasks to clients, so far.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.bytes_up.load(Ordering::Relaxed),
            self.bytes_down.load(Ordering::Relaxed),
        )
    }

    /// Session ports open now.
    pub fn ports(&self) -> i64 {
        self.ports.load(Ordering::Relaxed)
    }
}

/// Which addresses a session may connect to.
pub type AddressCheck = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// How connections are made and kept.
#[derive(Clone)]
pub struct ForwardSettings {
    /// Longest wait for the task's port to accept.
    pub connect_timeout: Duration,
    /// Bytes buffered per direction when copying through user space.
    pub buffer: usize,
    /// Move bytes with `splice(2)` (Linux) instead of copying them through user space.
    pub splice: bool,
    /// Whether an upstream address may be connected to.
    pub allow: AddressCheck,
    /// Where connections and bytes are counted.
    pub counters: Arc<TcpCounters>,
}

impl std::fmt::Debug for ForwardSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardSettings")
            .field("connect_timeout", &self.connect_timeout)
            .field("buffer", &self.buffer)
            .finish_non_exhaustive()
    }
}

impl Default for ForwardSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            buffer: 64 * 1024,
            splice: cfg!(target_os = "linux"),
            allow: Arc::new(|_| true),
            counters: Arc::default(),
        }
    }
}

/// Where a port's connections go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The session's name in logs (`{task_id}` or `{task_id}__{name}`).
    pub key: String,
    /// The task's host (an IP address or a name).
    pub host: String,
    /// The task's port.
    pub port: u16,
}

/// Serves `listener` until `stop` is cancelled; then closes it and every open connection.
pub async fn serve_port(
    listener: TcpListener,
    target: Target,
    settings: ForwardSettings,
    stop: CancellationToken,
) {
    let connections = TaskTracker::new();
    let target = Arc::new(target);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    let (target, settings, stop) = (Arc::clone(&target), settings.clone(), stop.clone());
                    connections.spawn(async move {
                        tokio::select! {
                            () = join(client, peer, &target, &settings) => {}
                            () = stop.cancelled() => {}
                        }
                    });
                }
                Err(err) => {
                    tracing::warn!(session = %target.key, error = %err, "accept failed on a session port");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Joins one client connection to the task's port and copies both ways until both are done;
/// one direction's end shuts down the other side's write and the other direction goes on.
async fn join(
    mut client: TcpStream,
    peer: SocketAddr,
    target: &Target,
    settings: &ForwardSettings,
) {
    let started = Instant::now();
    let peer_ip = peer.ip().to_canonical();
    let mut upstream = match connect(target, settings).await {
        Ok(upstream) => upstream,
        Err(reason) => {
            tracing::warn!(target: "access", session = %target.key, peer = %peer_ip, error = %reason, "tcp session could not reach the task");
            let _ = client.shutdown().await;
            return;
        }
    };
    configure(&client);
    configure(&upstream);
    let counters = &settings.counters;
    counters.open.fetch_add(1, Ordering::Relaxed);
    let copied = copy(&mut client, &mut upstream, settings).await;
    counters.open.fetch_sub(1, Ordering::Relaxed);
    if let Ok((up, down)) = &copied {
        counters.bytes_up.fetch_add(*up, Ordering::Relaxed);
        counters.bytes_down.fetch_add(*down, Ordering::Relaxed);
    }
    let duration_ms = started.elapsed().as_micros() as f64 / 1000.0;
    match copied {
        Ok((bytes_up, bytes_down)) => tracing::info!(
            target: "access", session = %target.key, peer = %peer_ip,
            bytes_up, bytes_down, duration_ms, "tcp session closed"
        ),
        Err(err) => tracing::info!(
            target: "access", session = %target.key, peer = %peer_ip,
            duration_ms, error = %err, "tcp session ended by an error"
        ),
    }
}

/// Copies both ways: with `splice(2)` on Linux (the bytes never enter the gateway's memory),
/// else through user-space buffers.
async fn copy(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    settings: &ForwardSettings,
) -> std::io::Result<(u64, u64)> {
    #[cfg(target_os = "linux")]
    if settings.splice {
        return crate::splice::both_ways(client, upstream).await;
    }
    tokio::io::copy_bidirectional_with_sizes(client, upstream, settings.buffer, settings.buffer)
        .await
}

async fn connect(target: &Target, settings: &ForwardSettings) -> Result<TcpStream, String> {
    let addresses = tokio::time::timeout(
        settings.connect_timeout,
        tokio::net::lookup_host((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| format!("resolving {} timed out", target.host))?
    .map_err(|err| format!("resolving {}: {err}", target.host))?;
    let allowed: Vec<SocketAddr> = addresses.filter(|a| (settings.allow)(a.ip())).collect();
    if allowed.is_empty() {
        return Err(format!(
            "{}:{} is outside ROUTER__UPSTREAM__ALLOW_CIDRS or does not resolve",
            target.host, target.port
        ));
    }
    let mut last = String::new();
    for address in allowed {
        match tokio::time::timeout(settings.connect_timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(err)) => last = format!("{address}: {err}"),
            Err(_) => {
                last = format!(
                    "{address}: no connection within {:?}",
                    settings.connect_timeout
                )
            }
        }
    }
    Err(last)
}

/// `TCP_NODELAY` (interactive sessions), and keep-alive probes so that a peer that vanished
/// does not hold the session open for ever.
fn configure(stream: &TcpStream) {
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(6);
    let _ = socket.set_tcp_nodelay(true);
    let _ = socket.set_tcp_keepalive(&keepalive);
}
