//! The signals the gateway answers: SIGTERM/SIGINT drain and stop (a second one stops at
//! once), SIGHUP reloads.

use tokio::signal::unix::{SignalKind, signal};

/// Resolves at the first SIGTERM or SIGINT.
pub async fn shutdown() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install SIGTERM/SIGINT handlers; stop the gateway with SIGKILL");
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(
        signal = name,
        "shutting down: no new connections, draining requests in flight (signal again to exit at once)"
    );
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting without waiting for requests in flight");
        std::process::exit(1);
    });
}

/// A stream of SIGHUPs, or `None` if the handler cannot be installed.
pub fn reloads() -> Option<tokio::signal::unix::Signal> {
    match signal(SignalKind::hangup()) {
        Ok(hangups) => Some(hangups),
        Err(err) => {
            tracing::warn!(error = %err, "cannot install a SIGHUP handler; reload by restarting");
            None
        }
    }
}
