//! ClearML mode: the HTTP listener serves while the sync keeps its table in step with
//! ClearML, and every routed request is checked with ClearML's authorizer. The listener is up before the first login, so health checks pass and readiness
//! says "starting" while ClearML is slow to answer.

use std::sync::Arc;

use anyhow::Context as _;
use gateway_auth::ClearmlAuthorizer;
use gateway_clearml::{ClearmlClient, ClientSettings};
use gateway_proxy::{AuthSettings, Gateway, Readiness, RouteStore, Server, Tls};
use gateway_sync::{Sync, SyncSettings, TcpContext};
use gateway_tcp::{ForwardSettings, TcpSessions};
use tokio::net::TcpListener;

use crate::config::{ClearmlConfig, Config};
use crate::metrics::TcpMetrics;
use crate::mode::{listen, report, server};
use crate::signals;

/// Serves the tasks' routes until SIGTERM/SIGINT; fails if ClearML refuses the gateway's keys.
pub async fn run(config: Config, tls: Option<Arc<Tls>>) -> anyhow::Result<()> {
    let Some(clearml) = config.clearml.clone() else {
        anyhow::bail!("ClearML mode needs CLEARML_API_HOST");
    };
    // reqwest uses rustls without a built-in provider; the gateway's is ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Arc::new(client(&clearml, &config)?);
    let routes = Arc::new(RouteStore::default());
    let readiness = Arc::new(Readiness::default());
    let forward = forward_settings(&config);
    let mut sync = Sync::new(
        Arc::clone(&client),
        Arc::clone(&routes),
        Arc::clone(&readiness),
        sync_settings(&config, &clearml),
    );
    if let Some(tcp) = &config.tcp {
        let sessions =
            TcpSessions::new(config.listen.ip(), Some(tcp.ports.clone()), forward.clone());
        sync = sync.with_tcp(Arc::new(sessions));
    }
    let authorizer = Arc::new(ClearmlAuthorizer::new(client, auth_settings(&config)));
    let gateway = Gateway::builder(routes)
        .settings(config.http.clone())
        .readiness(readiness)
        .auth(auth(Arc::clone(&authorizer), &config))
        .metrics_source(sync.metrics())
        .metrics_source(authorizer.metrics())
        .metrics_source(Arc::new(TcpMetrics(Arc::clone(&forward.counters))))
        .access_sink(crate::logging::access_lines(&config.log))
        .build();
    let listener = listen(config.listen).await?;
    tracing::info!(address = %config.listen, clearml = %clearml.api_host, "listening; routes come from ClearML");
    serve_and_sync(server(gateway, tls), listener, sync).await
}

/// Serves until a shutdown signal, syncing meanwhile; a sync that cannot start (refused
/// credentials) ends the gateway with its error.
async fn serve_and_sync(
    server: Server,
    listener: TcpListener,
    mut sync: Sync,
) -> anyhow::Result<()> {
    let mut syncing = tokio::spawn(async move {
        sync.connect().await?;
        sync.run().await;
        Ok::<(), gateway_sync::SyncError>(())
    });
    let mut serving =
        tokio::spawn(async move { server.serve(listener, signals::shutdown()).await });
    tokio::select! {
        drained = &mut serving => {
            syncing.abort();
            report(drained.context("the HTTP server stopped unexpectedly")?);
            Ok(())
        }
        synced = &mut syncing => {
            serving.abort();
            match synced {
                Ok(Err(err)) => Err(err.into()),
                Ok(Ok(())) => anyhow::bail!("the ClearML sync stopped unexpectedly"),
                Err(err) => Err(anyhow::Error::new(err).context("the ClearML sync failed")),
            }
        }
    }
}

/// The ClearML API client with the gateway's keys.
pub fn client(clearml: &ClearmlConfig, config: &Config) -> anyhow::Result<ClearmlClient> {
    let settings = ClientSettings {
        api_host: clearml.api_host.clone(),
        access_key: clearml.access_key.clone(),
        secret_key: clearml.secret_key.expose().to_owned(),
        request_timeout: config.clearml_timeout,
    };
    ClearmlClient::new(settings).context("cannot set up the ClearML client")
}

/// How the authorizer caches, from the configuration.
fn auth_settings(config: &Config) -> gateway_auth::AuthSettings {
    let auth = &config.auth;
    gateway_auth::AuthSettings {
        ttl: auth.cache_ttl,
        denial_ttl: auth.denial_ttl,
        capacity: auth.cache_entries,
        max_asking: gateway_auth::AuthSettings::default().max_asking,
        local_secret: auth.jwks_key.as_ref().map(|key| key.expose().clone()),
    }
}

/// Every routed request needs a ClearML token of a user who may see the task.
fn auth(authorizer: Arc<ClearmlAuthorizer>, config: &Config) -> AuthSettings {
    AuthSettings {
        authorizer,
        cookie_name: config.auth.cookie_name.clone(),
        cookie_secure: config.auth.cookie_secure,
    }
}

/// How session ports connect: the HTTP connect timeout, and the same address policy.
pub fn forward_settings(config: &Config) -> ForwardSettings {
    let policy = config.http.upstream_policy.clone();
    ForwardSettings {
        connect_timeout: config.http.connect_timeout,
        allow: Arc::new(move |ip| policy.permits(ip)),
        ..ForwardSettings::default()
    }
}

fn sync_settings(config: &Config, clearml: &ClearmlConfig) -> SyncSettings {
    let router_url = config.router_url.clone().unwrap_or_default();
    let mut settings = SyncSettings::new(
        config.router_name.clone(),
        router_url,
        clearml.api_host.clone(),
    );
    settings.poll_interval = config.poll_interval;
    settings.browser_endpoint = config.browser_endpoint;
    settings.listen_queues = config.listen_queues.clone();
    settings.policy = config.http.upstream_policy.clone();
    settings.own = config.own_addresses();
    settings.max_backoff = config.max_backoff;
    settings.tcp = config.tcp.as_ref().and_then(|tcp| {
        Some(TcpContext {
            router_address: tcp.router_address.clone()?,
            range: tcp.ports.clone(),
        })
    });
    settings
}
