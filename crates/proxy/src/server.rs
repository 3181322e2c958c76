//! The HTTP listener: accepts connections, serves HTTP/1.1 and cleartext HTTP/2 on each,
//! and drains on shutdown.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::access_log::error_chain;
use crate::conn::{self, ConnActivity};
use crate::gateway::Gateway;

/// How a [`Server::serve`] run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Every request and tunnel finished within the grace period.
    Complete,
    /// The grace period ran out with this many connections or tunnels still open.
    TimedOut {
        /// Connections and tunnels cut short.
        remaining: usize,
    },
}

/// Serves a [`Gateway`] on a listener.
pub struct Server {
    gateway: Arc<Gateway>,
    http: auto::Builder<TokioExecutor>,
}

impl Server {
    /// A server for `gateway`, with its settings applied to HTTP/1 and HTTP/2.
    pub fn new(gateway: Arc<Gateway>) -> Self {
        let settings = gateway.settings();
        let mut http = auto::Builder::new(TokioExecutor::new());
        // hyper's own limit is a backstop well above ours, so that a head that is merely
        // too large gets the gateway's JSON 431 rather than hyper's bare one.
        let hard_limit = (settings.max_header_bytes * 2).max(16 * 1024);
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.client_header_timeout)
            .max_buf_size(hard_limit)
            .keep_alive(true);
        http.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(hard_limit).unwrap_or(u32::MAX))
            .keep_alive_interval(Some(Duration::from_secs(20)))
            .keep_alive_timeout(Duration::from_secs(20));
        Self { gateway, http }
    }

    /// Accepts connections until `shutdown` resolves, then stops accepting and gives requests
    /// in flight the grace period to finish.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Drain {
        let closing = CancellationToken::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => self.spawn_connection(stream, peer, &closing),
                    Err(err) => accept_failed(&err).await,
                },
            }
        }
        drop(listener);
        closing.cancel();
        let tasks = self.gateway.tasks();
        tasks.close();
        let grace = self.gateway.settings().shutdown_grace;
        match tokio::time::timeout(grace, tasks.wait()).await {
            Ok(()) => Drain::Complete,
            Err(_) => Drain::TimedOut {
                remaining: tasks.len(),
            },
        }
    }

    fn spawn_connection(
        &self,
        stream: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
        closing: &CancellationToken,
    ) {
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %err, "could not set TCP_NODELAY");
        }
        let activity = ConnActivity::new();
        let gateway = Arc::clone(&self.gateway);
        let service_activity = Arc::clone(&activity);
        let service = service_fn(move |req| {
            let active = service_activity.begin();
            let gateway = Arc::clone(&gateway);
            async move { Ok::<_, std::convert::Infallible>(gateway.handle(req, peer, active).await) }
        });
        let connection = self
            .http
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let idle_timeout = self.gateway.settings().idle_timeout;
        let closing = closing.clone();
        self.gateway.tasks().spawn(async move {
            let graceful = |conn: std::pin::Pin<&mut _>| {
                auto::UpgradeableConnection::graceful_shutdown(conn);
            };
            let result = conn::drive(connection, graceful, activity, idle_timeout, closing).await;
            if let Err(err) = result {
                log_connection_error(peer, err.as_ref());
            }
        });
    }
}

/// Connection-level failures: hyper has already answered a malformed request (400, 431)
/// where it could; this is the one log line for it.
fn log_connection_error(peer: std::net::SocketAddr, err: &(dyn std::error::Error + 'static)) {
    let detail = error_chain(err);
    let benign = detail.contains("connection closed before message completed")
        || detail.contains("connection reset")
        || detail.contains("broken pipe");
    if benign {
        tracing::debug!(target: "access", peer = %peer.ip(), error = %detail, "connection ended");
    } else {
        tracing::info!(target: "access", peer = %peer.ip(), error = %detail, "connection error");
    }
}

/// Out of file descriptors or memory: say so and pause rather than spin on the error.
async fn accept_failed(err: &io::Error) {
    tracing::warn!(error = %err, "accept failed; pausing 50 ms");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
