//! The HTTP listener: accepts connections (refusing those beyond the cap), serves HTTP/1.1
//! and cleartext HTTP/2 on each, and drains on shutdown.

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
use crate::error::find_source;
use crate::gateway::Gateway;
use crate::limit::{self, ConnectionLimit, ConnectionSlot, Refusal, SpareDescriptor};
use crate::tls::Tls;

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
    tls: Option<Arc<Tls>>,
    limit: Arc<ConnectionLimit>,
}

impl Server {
    /// A server for `gateway`, with its settings applied to HTTP/1 and HTTP/2.
    pub fn new(gateway: Arc<Gateway>) -> Self {
        let settings = gateway.settings();
        let mut http = auto::Builder::new(TokioExecutor::new());
        // hyper's own limit is a backstop well above ours, so that a head that is merely
        // too large gets the gateway's JSON 431 rather than hyper's bare one.
        let hard_limit = settings.max_header_bytes.saturating_mul(2).max(16 * 1024);
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
        let limit = ConnectionLimit::new(settings.max_connections, Arc::clone(gateway.metrics()));
        Self {
            gateway,
            http,
            tls: None,
            limit,
        }
    }

    /// Speaks TLS on the listener, with `tls`'s certificate as it is when each connection
    /// arrives.
    pub fn with_tls(mut self, tls: Arc<Tls>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Accepts connections until `shutdown` resolves, then stops accepting and gives requests
    /// in flight the grace period to finish.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Drain {
        let closing = CancellationToken::new();
        let mut shutdown = std::pin::pin!(shutdown);
        let mut spare = SpareDescriptor::new();
        loop {
            // A refused connection lingers a moment before its descriptor is free: until the
            // spare is back, waiting connections stay in the backlog rather than being
            // accepted into the last descriptor and leaving none to refuse the next.
            if spare.owed() {
                spare.restore();
            }
            if spare.owed() {
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_millis(10)) => continue,
                }
            }
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => match self.limit.try_acquire() {
                        Some(slot) => self.spawn_connection(stream, peer, slot, &closing),
                        None => self.refuse(stream, Refusal::AtCap),
                    },
                    Err(err) => self.accept_failed(&listener, &err, &mut spare).await,
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
        slot: ConnectionSlot,
        closing: &CancellationToken,
    ) {
        configure_socket(&stream, peer);
        let gateway = Arc::clone(&self.gateway);
        let http = self.http.clone();
        let closing = closing.clone();
        let Some(tls) = &self.tls else {
            self.gateway
                .tasks()
                .spawn(serve_io(http, gateway, stream, peer, slot, closing));
            return;
        };
        let acceptor = tls.acceptor();
        let handshake_timeout = self.gateway.settings().client_header_timeout;
        self.gateway.tasks().spawn(async move {
            let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await;
            match handshake {
                Ok(Ok(stream)) => serve_io(http, gateway, stream, peer, slot, closing).await,
                Ok(Err(err)) => {
                    tracing::debug!(target: "access", peer = %peer.ip().to_canonical(), error = %err, "TLS handshake failed");
                }
                Err(_) => {
                    tracing::debug!(target: "access", peer = %peer.ip().to_canonical(), "TLS handshake timed out");
                }
            }
        });
    }

    /// Refuses `stream`; over TLS without an answer, which the client could not read.
    fn refuse(&self, stream: tokio::net::TcpStream, why: Refusal) {
        self.limit.refuse(stream, why, self.tls.is_none());
    }

    /// Errors about one connection that died in the backlog are passed over. Out of file
    /// descriptors, the spare one makes room to accept the waiting connection and refuse
    /// it; any other failure pauses accepting rather than spinning on it.
    async fn accept_failed(
        &self,
        listener: &TcpListener,
        err: &io::Error,
        spare: &mut SpareDescriptor,
    ) {
        let per_connection = matches!(
            err.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::Interrupted
        );
        if per_connection {
            tracing::debug!(error = %err, "a connection failed while being accepted");
            return;
        }
        if limit::out_of_descriptors(err) {
            let waiting = spare.accept_in_its_room(listener).await;
            let refused = waiting.is_some();
            if let Some(stream) = waiting {
                // Closed at once: the spare is taken back in its place.
                self.refuse(stream, Refusal::OutOfDescriptors);
            }
            spare.restore();
            if refused {
                return;
            }
        }
        self.limit.warn_accept_failed(err);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Serves one connection (plain or TLS) until it closes, idles out, or shutdown closes it.
async fn serve_io<IO>(
    http: auto::Builder<TokioExecutor>,
    gateway: Arc<Gateway>,
    io: IO,
    peer: std::net::SocketAddr,
    slot: ConnectionSlot,
    closing: CancellationToken,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = ConnActivity::new(
        Arc::clone(gateway.metrics()),
        gateway.access_sink(),
        peer.ip(),
        slot,
    );
    let service_activity = Arc::clone(&activity);
    let idle_timeout = gateway.settings().idle_timeout;
    let service = service_fn(move |req| {
        let active = service_activity.begin();
        let gateway = Arc::clone(&gateway);
        // Boxed: hyper keeps a slot the size of this future for the life of the
        // connection, and the request path's state is kilobytes; idle keep-alive
        // connections should not each hold that.
        Box::pin(async move {
            Ok::<_, std::convert::Infallible>(gateway.handle(req, peer, active).await)
        })
    });
    let connection = http.serve_connection_with_upgrades(TokioIo::new(io), service);
    let graceful = |conn: std::pin::Pin<&mut _>| {
        auto::UpgradeableConnection::graceful_shutdown(conn);
    };
    let result = conn::drive(connection, graceful, activity, idle_timeout, closing).await;
    if let Err(err) = result {
        log_connection_error(peer, err.as_ref());
    }
}

/// `TCP_NODELAY` for small writes (events, WebSocket frames), and keep-alive probes so that a
/// client that vanished (a laptop gone to sleep) does not hold a tunnel open forever.
fn configure_socket(stream: &tokio::net::TcpStream, peer: std::net::SocketAddr) {
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(6);
    let configured = socket
        .set_tcp_nodelay(true)
        .and_then(|()| socket.set_tcp_keepalive(&keepalive));
    if let Err(err) = configured {
        tracing::debug!(%peer, error = %err, "could not set socket options");
    }
}

/// Connection-level failures: hyper has already answered a malformed request (400, 431)
/// where it could; this is the one log line for it. A client that simply went away is only
/// worth a debug line.
fn log_connection_error(peer: std::net::SocketAddr, err: &(dyn std::error::Error + 'static)) {
    let peer = peer.ip().to_canonical();
    let detail = error_chain(err);
    let went_away = find_source::<hyper::Error>(err)
        .is_some_and(|e| e.is_incomplete_message() || e.is_canceled() || e.is_closed())
        || find_source::<io::Error>(err).is_some_and(|e| {
            matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            )
        });
    if went_away {
        tracing::debug!(target: "access", %peer, error = %detail, "connection ended");
    } else {
        tracing::info!(target: "access", %peer, error = %detail, "connection error");
    }
}
