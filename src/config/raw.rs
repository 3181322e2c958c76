//! The variables as text, read with `envy` before any of them is interpreted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Every variable of [`VARIABLES`](super::variables::VARIABLES), unparsed; `None` when unset.
/// Empty values count as unset (`TCP_PORT_START=` in a `runtime.env`).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RawEnv {
    #[serde(rename = "router_name")]
    pub router_name: Option<String>,
    #[serde(rename = "router__webserver__server_host")]
    pub server_host: Option<String>,
    #[serde(rename = "router__webserver__server_port")]
    pub server_port: Option<String>,
    #[serde(rename = "router_url")]
    pub router_url: Option<String>,
    #[serde(rename = "clearml_api_host")]
    pub api_host: Option<String>,
    #[serde(rename = "clearml_api_access_key")]
    pub access_key: Option<String>,
    #[serde(rename = "clearml_api_secret_key")]
    pub secret_key: Option<String>,
    #[serde(rename = "auth_cookie_name")]
    pub cookie_name: Option<String>,
    #[serde(rename = "auth_secure_enabled")]
    pub cookie_secure: Option<String>,
    #[serde(rename = "router__http__authorization__cookie__secure")]
    pub cookie_secure_alias: Option<String>,
    #[serde(rename = "auth_base64_jwks_key")]
    pub jwks_key: Option<String>,
    #[serde(rename = "tcp_router_address")]
    pub tcp_address: Option<String>,
    #[serde(rename = "router__stream__external_url")]
    pub tcp_address_alias: Option<String>,
    #[serde(rename = "tcp_port_start")]
    pub tcp_start: Option<String>,
    #[serde(rename = "router__stream__port_range__start")]
    pub tcp_start_alias: Option<String>,
    #[serde(rename = "tcp_port_end")]
    pub tcp_end: Option<String>,
    #[serde(rename = "router__stream__port_range__end")]
    pub tcp_end_alias: Option<String>,
    #[serde(rename = "listen_queue_name")]
    pub listen_queues: Option<String>,
    #[serde(rename = "router__sync__poll_interval_ms")]
    pub poll_interval_ms: Option<String>,
    #[serde(rename = "router__http__browser_endpoint")]
    pub browser_endpoint: Option<String>,
    #[serde(rename = "router__upstream__allow_cidrs")]
    pub allow_cidrs: Option<String>,
    #[serde(rename = "router__webserver__tls_cert")]
    pub tls_cert: Option<String>,
    #[serde(rename = "router__webserver__tls_key")]
    pub tls_key: Option<String>,
    #[serde(rename = "router__log_format")]
    pub log_format: Option<String>,
    #[serde(rename = "logger_level")]
    pub log_level: Option<String>,
    #[serde(rename = "rust_log")]
    pub rust_log: Option<String>,
    #[serde(rename = "router__http__connect_timeout_ms")]
    pub connect_timeout_ms: Option<String>,
    #[serde(rename = "router__http__response_header_timeout_ms")]
    pub response_header_timeout_ms: Option<String>,
    #[serde(rename = "router__http__client_header_timeout_ms")]
    pub client_header_timeout_ms: Option<String>,
    #[serde(rename = "router__http__idle_timeout_ms")]
    pub idle_timeout_ms: Option<String>,
    #[serde(rename = "router__http__upstream_idle_timeout_ms")]
    pub upstream_idle_timeout_ms: Option<String>,
    #[serde(rename = "router__http__upstream_max_idle_per_host")]
    pub upstream_max_idle_per_host: Option<String>,
    #[serde(rename = "router__http__max_header_bytes")]
    pub max_header_bytes: Option<String>,
    #[serde(rename = "router__http__max_body_bytes")]
    pub max_body_bytes: Option<String>,
    #[serde(rename = "router__http__shutdown_grace_ms")]
    pub shutdown_grace_ms: Option<String>,
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
