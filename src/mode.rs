//! Where routes come from, and running the gateway on them.
//!
//! ClearML: the sync keeps the table in step with the tasks that asked for endpoints.
//! Standalone: a fixed table from `--routes FILE`, re-read on SIGHUP, nothing authenticated.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

use gateway_proxy::{Drain, Gateway, Server, Tls, TlsError};
use tokio::net::TcpListener;

use crate::clearml;
use crate::config::Config;
use crate::config::routes_file::{self, Routes, RoutesFileError};
use crate::standalone;

/// Why the gateway cannot decide what to serve.
#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    /// The routes file is unusable.
    #[error(transparent)]
    RoutesFile(#[from] RoutesFileError),
    /// Neither ClearML nor a routes file is configured.
    #[error("nothing to serve: set CLEARML_API_HOST (with its keys), or pass --routes FILE")]
    NothingToServe,
    /// A routes file was given together with ClearML.
    #[error(
        "--routes serves a fixed table in standalone mode; it cannot be combined with CLEARML_API_HOST"
    )]
    RoutesWithClearml,
    /// The TLS certificate or key cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
}

/// What the gateway will serve, and whether over TLS.
#[derive(Debug)]
pub struct Mode {
    source: Source,
    tls: Option<Arc<Tls>>,
}

/// Where routes come from.
#[derive(Debug)]
enum Source {
    /// Routes from the ClearML tasks that asked for endpoints.
    Clearml,
    /// A fixed table from a routes file.
    Standalone {
        /// The routes file, re-read on SIGHUP.
        path: PathBuf,
        /// Its routes and TCP ports, as read at start.
        routes: Routes,
    },
}

impl Mode {
    /// Decides the mode from the configuration and `--routes`, reading the routes file.
    pub fn choose(config: &Config, routes: Option<&Path>) -> Result<Self, ModeError> {
        let source = match (&config.clearml, routes) {
            (Some(_), Some(_)) => return Err(ModeError::RoutesWithClearml),
            (Some(_), None) => Source::Clearml,
            (None, None) => return Err(ModeError::NothingToServe),
            (None, Some(path)) => Source::Standalone {
                routes: routes_file::load(path, &config.own_addresses())?,
                path: path.to_owned(),
            },
        };
        let tls = match &config.tls {
            Some(files) => Some(Arc::new(Tls::load(&files.cert, &files.key)?)),
            None => None,
        };
        Ok(Mode { source, tls })
    }

    /// One line for `--check-config`.
    pub fn describe(&self) -> String {
        let over = if self.tls.is_some() {
            "TLS"
        } else {
            "plain HTTP"
        };
        let source = match &self.source {
            Source::Clearml => "clearml: routes from the tasks that asked for endpoints".to_owned(),
            Source::Standalone { path, routes } => format!(
                "standalone: {} route(s) and {} TCP port(s) from {}, not authenticated",
                routes.table.len(),
                routes.tcp.len(),
                path.display()
            ),
        };
        format!("{source}; {over}")
    }

    /// Serves until SIGTERM/SIGINT, then drains.
    pub async fn run(self, config: Config) -> anyhow::Result<()> {
        match self.source {
            Source::Clearml => clearml::run(config, self.tls).await,
            Source::Standalone { path, routes } => {
                standalone::run(config, path, routes, self.tls).await
            }
        }
    }
}

/// A server for `gateway`, over TLS when `tls` is set (its files re-read as they change).
pub fn server(gateway: Arc<Gateway>, tls: Option<Arc<Tls>>) -> Server {
    let server = Server::new(gateway);
    match tls {
        Some(tls) => {
            tokio::spawn(Arc::clone(&tls).watch(TLS_RELOAD));
            server.with_tls(tls)
        }
        None => server,
    }
}

/// Binds the HTTP listener; the error says what to do about the two usual causes.
pub async fn listen(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.map_err(|err| {
        let hint = match err.kind() {
            std::io::ErrorKind::PermissionDenied if address.port() < 1024 => {
                " (ports below 1024 need root or CAP_NET_BIND_SERVICE; the image runs as \
                 UID 65532: see docs/migration.md)"
            }
            std::io::ErrorKind::AddrInUse => {
                " (another process holds the port: the gateway being replaced, still running?)"
            }
            _ => "",
        };
        anyhow::anyhow!("cannot listen on {address}: {err}{hint}")
    })
}

/// How often the TLS files are checked for a change.
const TLS_RELOAD: Duration = Duration::from_secs(10);

/// Logs how the drain after a shutdown signal went.
pub fn report(drain: Drain) {
    match drain {
        Drain::Complete => tracing::info!("drained; exiting"),
        Drain::TimedOut { remaining } => tracing::warn!(
            remaining,
            "grace period over; closing the connections still open and exiting"
        ),
    }
}
