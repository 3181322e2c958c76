//! After a `101`: the client's and the upstream's connections joined, byte for byte.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::access_log::{error_chain, millis};
use crate::conn::ConnActivity;
use crate::gateway::Gateway;
use crate::routes::Route;

/// Joins the two upgraded connections (downstream, upstream) and copies bytes both ways
/// until either side closes; logs one line at the end. Tracked by the gateway, so shutdown
/// waits for it. Holds the client's `connection` meanwhile: it is still open.
pub(crate) fn spawn(
    gateway: &Gateway,
    route: Arc<Route>,
    peer: SocketAddr,
    (downstream, upstream): (OnUpgrade, OnUpgrade),
    connection: Arc<ConnActivity>,
) {
    let peer = peer.ip().to_canonical();
    let metrics = Arc::clone(gateway.metrics());
    gateway.tasks().spawn(async move {
        let _connection = connection;
        let started = Instant::now();
        let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(
                    target: "access", route = route.key(), %peer,
                    error = %error_chain(&err), "upgrade failed"
                );
                return;
            }
        };
        let mut downstream = TokioIo::new(downstream);
        let mut upstream = TokioIo::new(upstream);
        metrics.tunnel(1);
        let copied = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await;
        metrics.tunnel(-1);
        let duration_ms = millis(started.elapsed());
        match copied {
            Ok((bytes_up, bytes_down)) => tracing::info!(
                target: "access", route = route.key(), %peer,
                bytes_up, bytes_down, duration_ms, "tunnel closed"
            ),
            Err(err) => tracing::info!(
                target: "access", route = route.key(), %peer,
                duration_ms, error = %err, "tunnel ended by an error"
            ),
        }
    });
}
