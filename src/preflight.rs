//! `--check-config` in ClearML mode also asks ClearML, read-only, whether the gateway could
//! work with it: the keys log in, and the queues of `LISTEN_QUEUE_NAME` exist. Nothing is
//! written to any task, so it is safe to run beside the gateway it is meant to replace.

use std::time::Duration;

use gateway_clearml::Claims;

use crate::config::{ClearmlConfig, Config};

/// The longest the whole check may take: an operator is waiting at a prompt.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// Lines describing what ClearML said, or why it could not be asked.
pub fn check_clearml(clearml: &ClearmlConfig, config: &Config) -> Result<Vec<String>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start the async runtime: {err}"))?;
    runtime.block_on(async {
        tokio::time::timeout(CHECK_TIMEOUT, ask(clearml, config))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "{} did not answer within {} s",
                    clearml.api_host,
                    CHECK_TIMEOUT.as_secs()
                ))
            })
    })
}

async fn ask(clearml: &ClearmlConfig, config: &Config) -> Result<Vec<String>, String> {
    // reqwest uses rustls without a built-in provider; the gateway's is ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = crate::clearml::client(clearml, config).map_err(|err| format!("{err:#}"))?;
    let claims = client.login().await.map_err(with_causes)?;
    let mut lines = vec![logged_in(&clearml.api_host, &claims)];
    for name in &config.listen_queues {
        let ids = gateway_sync::queue_ids(&client, name)
            .await
            .map_err(|err| format!("looking up queue {name:?}: {}", with_causes(err)))?;
        lines.push(match ids.as_slice() {
            [] => format!(
                "queue {name:?}: ClearML has no such queue (its tasks are routed once it exists)"
            ),
            ids => format!("queue {name:?}: found ({})", ids.join(", ")),
        });
    }
    Ok(lines)
}

/// The error and its causes (the transport error behind "no answer", say), on one line.
fn with_causes(err: gateway_clearml::ClearmlError) -> String {
    format!("{:#}", anyhow::Error::new(err))
}

fn logged_in(api_host: &str, claims: &Claims) -> String {
    let unknown = || "?".to_owned();
    let (user, company) = claims.identity.as_ref().map_or_else(
        || (unknown(), unknown()),
        |id| (id.user_name.clone(), id.company_name.clone()),
    );
    format!(
        "ClearML at {api_host}: the gateway's keys log in as {user:?} of {company:?} (API {}, server {})",
        claims.api_version.clone().unwrap_or_else(unknown),
        claims.server_version.clone().unwrap_or_else(unknown),
    )
}
