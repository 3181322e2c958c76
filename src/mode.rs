//! Where routes come from, and running the gateway on them.
//!
//! ClearML: the sync keeps the table in step with the tasks that asked for endpoints.
//! Standalone: a fixed table from `--routes FILE`, re-read on SIGHUP, nothing authenticated.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use gateway_proxy::{Drain, Gateway, Readiness, RouteStore, RouteTable, Server};
use tokio::net::TcpListener;

use crate::clearml;
use crate::config::Config;
use crate::config::routes_file::{self, RoutesFileError};
use crate::signals;

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
    /// TLS files are configured but this build cannot serve TLS.
    #[error(
        "ROUTER__WEBSERVER__TLS_CERT is set, but this build of the gateway serves plain HTTP only; terminate TLS in front of it"
    )]
    TlsUnavailable,
}

/// What the gateway will serve.
#[derive(Debug)]
pub enum Mode {
    /// Routes from the ClearML tasks that asked for endpoints.
    Clearml,
    /// A fixed table from a routes file.
    Standalone {
        /// The routes file, re-read on SIGHUP.
        path: PathBuf,
        /// Its routes, as read at start.
        table: RouteTable,
    },
}

impl Mode {
    /// Decides the mode from the configuration and `--routes`, reading the routes file.
    pub fn choose(config: &Config, routes: Option<&Path>) -> Result<Self, ModeError> {
        if config.tls.is_some() {
            return Err(ModeError::TlsUnavailable);
        }
        match (&config.clearml, routes) {
            (Some(_), Some(_)) => Err(ModeError::RoutesWithClearml),
            (Some(_), None) => Ok(Mode::Clearml),
            (None, None) => Err(ModeError::NothingToServe),
            (None, Some(path)) => Ok(Mode::Standalone {
                table: routes_file::load(path)?,
                path: path.to_owned(),
            }),
        }
    }

    /// One line for `--check-config`.
    pub fn describe(&self) -> String {
        match self {
            Mode::Clearml => "clearml: routes from the tasks that asked for endpoints".to_owned(),
            Mode::Standalone { path, table } => format!(
                "standalone: {} route(s) from {}, not authenticated",
                table.len(),
                path.display()
            ),
        }
    }

    /// Serves until SIGTERM/SIGINT, then drains.
    pub async fn run(self, config: Config) -> anyhow::Result<()> {
        match self {
            Mode::Clearml => clearml::run(config).await,
            Mode::Standalone { path, table } => run_standalone(config, path, table).await,
        }
    }
}

async fn run_standalone(config: Config, path: PathBuf, table: RouteTable) -> anyhow::Result<()> {
    let routes = Arc::new(RouteStore::new(table));
    let readiness = Arc::new(Readiness::default());
    let gateway = Gateway::builder(Arc::clone(&routes))
        .settings(config.http.clone())
        .readiness(Arc::clone(&readiness))
        .build();
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::warn!(
        "standalone mode: requests are not authenticated; anyone who can reach {} reaches every route",
        config.listen
    );
    tracing::info!(
        address = %config.listen,
        routes = routes.snapshot().len(),
        file = %path.display(),
        "listening"
    );
    readiness.set_ready(true);
    tokio::spawn(reload_on_sighup(path, Arc::clone(&routes)));
    let drain = Server::new(gateway)
        .serve(listener, signals::shutdown())
        .await;
    report(drain);
    Ok(())
}

/// Re-reads the routes file on every SIGHUP; a broken file keeps the table being served.
async fn reload_on_sighup(path: PathBuf, routes: Arc<RouteStore>) {
    let Some(mut hangups) = signals::reloads() else {
        return;
    };
    while hangups.recv().await.is_some() {
        // Reading and parsing a large file is blocking work: keep it off the request threads.
        let file = path.clone();
        let loaded = tokio::task::spawn_blocking(move || routes_file::load(&file)).await;
        let Ok(loaded) = loaded else {
            tracing::error!("reading the routes file failed; still serving the previous routes");
            continue;
        };
        match loaded {
            Ok(table) => {
                let count = table.len();
                routes.replace(table).await;
                tracing::info!(routes = count, file = %path.display(), "routes reloaded");
            }
            Err(err) => tracing::error!("{err}; still serving the previous routes"),
        }
    }
}

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
