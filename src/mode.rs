//! Where routes come from, and running the gateway on them.
//!
//! ClearML: the sync keeps the table in step with the tasks that asked for endpoints.
//! Standalone: a fixed table from `--routes FILE`, re-read on SIGHUP, nothing authenticated.

use std::path::{Path, PathBuf};

use gateway_proxy::Drain;

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
        /// Its routes and TCP ports, as read at start.
        routes: Routes,
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
                routes: routes_file::load(path)?,
                path: path.to_owned(),
            }),
        }
    }

    /// One line for `--check-config`.
    pub fn describe(&self) -> String {
        match self {
            Mode::Clearml => "clearml: routes from the tasks that asked for endpoints".to_owned(),
            Mode::Standalone { path, routes } => format!(
                "standalone: {} route(s) and {} TCP port(s) from {}, not authenticated",
                routes.table.len(),
                routes.tcp.len(),
                path.display()
            ),
        }
    }

    /// Serves until SIGTERM/SIGINT, then drains.
    pub async fn run(self, config: Config) -> anyhow::Result<()> {
        match self {
            Mode::Clearml => clearml::run(config).await,
            Mode::Standalone { path, routes } => standalone::run(config, path, routes).await,
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
