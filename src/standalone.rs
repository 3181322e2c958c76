//! Standalone mode: a fixed table of HTTP routes and TCP ports from `--routes FILE`,
//! re-read on SIGHUP, nothing authenticated (it says so when it starts).

use std::path::PathBuf;
use std::sync::Arc;

use gateway_proxy::{Gateway, OwnAddresses, Readiness, RouteStore, Tls};
use gateway_tcp::{Placement, TcpSessions, Wanted};

use crate::clearml::forward_settings;
use crate::config::Config;
use crate::config::routes_file::{self, Routes};
use crate::metrics::TcpMetrics;
use crate::mode::{listen, report, server};
use crate::signals;

/// Serves the file's routes and ports until SIGTERM/SIGINT.
pub async fn run(
    config: Config,
    path: PathBuf,
    routes: Routes,
    tls: Option<Arc<Tls>>,
) -> anyhow::Result<()> {
    let table = Arc::new(RouteStore::new(routes.table));
    let readiness = Arc::new(Readiness::default());
    let forward = forward_settings(&config);
    let gateway = Gateway::builder(Arc::clone(&table))
        .settings(config.http.clone())
        .readiness(Arc::clone(&readiness))
        .metrics_source(Arc::new(TcpMetrics(Arc::clone(&forward.counters))))
        .access_sink(crate::logging::access_lines(&config.log))
        .build();
    let listener = listen(config.listen).await?;
    let sessions = Arc::new(TcpSessions::new(config.listen.ip(), None, forward));
    let failed = open_ports(&sessions, routes.tcp).await;
    if let Some(reason) = failed.first() {
        anyhow::bail!("cannot open a TCP port of {}: {reason}", path.display());
    }
    tracing::warn!(
        "standalone mode: requests are not authenticated; anyone who can reach {} reaches every route",
        config.listen
    );
    tracing::info!(
        address = %config.listen,
        routes = table.snapshot().len(),
        tcp_ports = sessions.ports_in_use().await,
        file = %path.display(),
        "listening"
    );
    readiness.set_ready(true);
    tokio::spawn(reload_on_sighup(
        path,
        config.own_addresses(),
        Arc::clone(&table),
        Arc::clone(&sessions),
    ));
    let drain = server(gateway, tls)
        .serve(listener, signals::shutdown())
        .await;
    sessions.close_all().await;
    report(drain);
    Ok(())
}

/// Opens the file's TCP ports (closing those it no longer lists); returns what failed.
async fn open_ports(sessions: &TcpSessions, wanted: Vec<Wanted>) -> Vec<String> {
    sessions
        .apply(wanted)
        .await
        .into_values()
        .filter_map(|placement| match placement {
            Placement::Failed(reason) => Some(reason),
            Placement::Serving(_) | Placement::Exhausted => None,
        })
        .collect()
}

/// Re-reads the routes file on every SIGHUP; a broken file keeps what is being served.
async fn reload_on_sighup(
    path: PathBuf,
    own: OwnAddresses,
    table: Arc<RouteStore>,
    sessions: Arc<TcpSessions>,
) {
    let Some(mut hangups) = signals::reloads() else {
        return;
    };
    while hangups.recv().await.is_some() {
        // Reading and parsing a large file is blocking work: keep it off the request threads.
        let (file, own) = (path.clone(), own.clone());
        let loaded = tokio::task::spawn_blocking(move || routes_file::load(&file, &own)).await;
        let Ok(loaded) = loaded else {
            tracing::error!("reading the routes file failed; still serving the previous routes");
            continue;
        };
        match loaded {
            Ok(routes) => {
                let count = routes.table.len();
                table.replace(routes.table).await;
                for reason in open_ports(&sessions, routes.tcp).await {
                    tracing::error!("cannot open a TCP port of {}: {reason}", path.display());
                }
                tracing::info!(routes = count, file = %path.display(), "routes reloaded");
            }
            Err(err) => tracing::error!("{err}; still serving the previous routes"),
        }
    }
}
