//! The variables as text, read with `envy` before any of them is interpreted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Every variable of [`VARIABLES`](super::variables::VARIABLES), unparsed; `None` when unset.
/// Empty values count as unset (`TCP_PORT_START=` in a `runtime.env`).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawEnv {
    #[serde(rename = "router_name")]
    pub(super) router_name: Option<String>,
    #[serde(rename = "router__webserver__server_host")]
    pub(super) server_host: Option<String>,
    #[serde(rename = "router__webserver__server_port")]
    pub(super) server_port: Option<String>,
    #[serde(rename = "router_url")]
    pub(super) router_url: Option<String>,
    #[serde(rename = "clearml_api_host")]
    pub(super) api_host: Option<String>,
    #[serde(rename = "clearml_api_access_key")]
    pub(super) access_key: Option<String>,
    #[serde(rename = "clearml_api_secret_key")]
    pub(super) secret_key: Option<String>,
    #[serde(rename = "auth_cookie_name")]
    pub(super) cookie_name: Option<String>,
    #[serde(rename = "auth_secure_enabled")]
    pub(super) cookie_secure: Option<String>,
    #[serde(rename = "router__http__authorization__cookie__secure")]
    pub(super) cookie_secure_alias: Option<String>,
    #[serde(rename = "router__auth__cache_ttl_ms")]
    pub(super) auth_cache_ttl_ms: Option<String>,
    #[serde(rename = "router__auth__denial_ttl_ms")]
    pub(super) auth_denial_ttl_ms: Option<String>,
    #[serde(rename = "router__auth__cache_entries")]
    pub(super) auth_cache_entries: Option<String>,
    #[serde(rename = "auth_base64_jwks_key")]
    pub(super) jwks_key: Option<String>,
    #[serde(rename = "tcp_router_address")]
    pub(super) tcp_address: Option<String>,
    #[serde(rename = "router__stream__external_url")]
    pub(super) tcp_address_alias: Option<String>,
    #[serde(rename = "tcp_port_start")]
    pub(super) tcp_start: Option<String>,
    #[serde(rename = "router__stream__port_range__start")]
    pub(super) tcp_start_alias: Option<String>,
    #[serde(rename = "tcp_port_end")]
    pub(super) tcp_end: Option<String>,
    #[serde(rename = "router__stream__port_range__end")]
    pub(super) tcp_end_alias: Option<String>,
    #[serde(rename = "listen_queue_name")]
    pub(super) listen_queues: Option<String>,
    #[serde(rename = "router__runtime__threads")]
    pub(super) runtime_threads: Option<String>,
    #[serde(rename = "router__sync__poll_interval_ms")]
    pub(super) poll_interval_ms: Option<String>,
    #[serde(rename = "router__sync__request_timeout_ms")]
    pub(super) request_timeout_ms: Option<String>,
    #[serde(rename = "router__sync__max_backoff_ms")]
    pub(super) max_backoff_ms: Option<String>,
    #[serde(rename = "router__http__browser_endpoint")]
    pub(super) browser_endpoint: Option<String>,
    #[serde(rename = "router__upstream__allow_cidrs")]
    pub(super) allow_cidrs: Option<String>,
    #[serde(rename = "router__webserver__tls_cert")]
    pub(super) tls_cert: Option<String>,
    #[serde(rename = "router__webserver__tls_key")]
    pub(super) tls_key: Option<String>,
    #[serde(rename = "router__log_flush_ms")]
    pub(super) log_flush_ms: Option<String>,
    #[serde(rename = "router__log_format")]
    pub(super) log_format: Option<String>,
    #[serde(rename = "logger_level")]
    pub(super) log_level: Option<String>,
    #[serde(rename = "rust_log")]
    pub(super) rust_log: Option<String>,
    #[serde(rename = "router__http__connect_timeout_ms")]
    pub(super) connect_timeout_ms: Option<String>,
    #[serde(rename = "router__http__response_header_timeout_ms")]
    pub(super) response_header_timeout_ms: Option<String>,
    #[serde(rename = "router__http__client_header_timeout_ms")]
    pub(super) client_header_timeout_ms: Option<String>,
    #[serde(rename = "router__http__client_body_timeout_ms")]
    pub(super) client_body_timeout_ms: Option<String>,
    #[serde(rename = "router__http__idle_timeout_ms")]
    pub(super) idle_timeout_ms: Option<String>,
    #[serde(rename = "router__http__upstream_idle_timeout_ms")]
    pub(super) upstream_idle_timeout_ms: Option<String>,
    #[serde(rename = "router__http__upstream_max_idle_per_host")]
    pub(super) upstream_max_idle_per_host: Option<String>,
    #[serde(rename = "router__http__max_header_bytes")]
    pub(super) max_header_bytes: Option<String>,
    #[serde(rename = "router__http__max_body_bytes")]
    pub(super) max_body_bytes: Option<String>,
    #[serde(rename = "router__http__max_connections")]
    pub(super) max_connections: Option<String>,
    #[serde(rename = "router__http__shutdown_grace_ms")]
    pub(super) shutdown_grace_ms: Option<String>,
}

impl RawEnv {
    /// Reads the variables out of `vars` (names are matched case-insensitively by `envy`).
    pub fn from_vars(vars: &BTreeMap<String, String>) -> Result<Self, envy::Error> {
        let present = vars
            .iter()
            .filter(|(_, value)| !value.trim().is_empty())
            .map(|(name, value)| (name.clone(), value.trim().to_owned()));
        envy::from_iter(present)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::variables::VARIABLES;

    /// Every variable of the table reaches a field, and every field is in the table.
    #[test]
    fn fields_and_the_variable_table_agree() {
        let vars: BTreeMap<String, String> = VARIABLES
            .iter()
            .map(|v| (v.name.to_owned(), format!("value of {}", v.name)))
            .collect();
        let raw = RawEnv::from_vars(&vars).unwrap();
        let serde_json::Value::Object(fields) = serde_json::to_value(&raw).unwrap() else {
            panic!("RawEnv serialises to an object");
        };
        assert_eq!(fields.len(), VARIABLES.len());
        for variable in VARIABLES {
            let field = &fields[&variable.name.to_ascii_lowercase()];
            assert_eq!(field, &format!("value of {}", variable.name));
        }
    }

    #[test]
    fn empty_values_count_as_unset() {
        let vars = BTreeMap::from([
            ("TCP_PORT_START".to_owned(), String::new()),
            ("TCP_PORT_END".to_owned(), "  ".to_owned()),
            ("ROUTER_NAME".to_owned(), " r1 ".to_owned()),
        ]);
        let raw = RawEnv::from_vars(&vars).unwrap();
        assert_eq!(raw.tcp_start, None);
        assert_eq!(raw.tcp_end, None);
        assert_eq!(raw.router_name.as_deref(), Some("r1"));
    }
}
