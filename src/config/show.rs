//! `--check-config`: the effective configuration as an env file, secrets masked.

use std::fmt::Write as _;
use std::time::Duration;

use super::variables::{VARIABLES, Variable};
use super::{BrowserEndpoint, Config, LogFormat};

const MASK: &str = "****";

/// A `# meaning` comment and a `NAME=value` line per variable, in table order; aliases are
/// folded into the name they stand for.
pub fn render(config: &Config) -> String {
    let mut out = String::new();
    let mode = match &config.clearml {
        Some(_) => "clearml (routes from ClearML tasks)",
        None => "standalone (CLEARML_API_HOST unset: routes from --routes FILE, not authenticated)",
    };
    let _ = writeln!(
        out,
        "# clearml-gateway effective configuration; mode: {mode}"
    );
    for variable in VARIABLES.iter().filter(|v| v.alias_of.is_none()) {
        let aliases: Vec<&str> = VARIABLES
            .iter()
            .filter(|a| a.alias_of == Some(variable.name))
            .map(|a| a.name)
            .collect();
        let _ = write!(out, "# {}", variable.meaning);
        if !variable.default.is_empty() {
            let _ = write!(out, " (default: {})", variable.default);
        }
        if !aliases.is_empty() {
            let _ = write!(out, " (also read as {})", aliases.join(", "));
        }
        let _ = writeln!(out, "\n{}={}", variable.name, shown_value(config, variable));
    }
    for unknown in &config.unknown_router_vars {
        let _ = writeln!(out, "# ignored (not a gateway setting): {unknown}");
    }
    out
}

fn shown_value(config: &Config, variable: &Variable) -> String {
    let value = effective_value(config, variable.name);
    if variable.secret && !value.is_empty() {
        MASK.to_owned()
    } else {
        value
    }
}

fn effective_value(c: &Config, name: &str) -> String {
    let ms = |d: Duration| d.as_millis().to_string();
    let clearml = c.clearml.as_ref();
    let tcp = c.tcp.as_ref();
    let tls = c.tls.as_ref();
    let text = |v: Option<&str>| v.unwrap_or_default().to_owned();
    let http = &c.http;
    match name {
        "ROUTER_NAME" => c.router_name.clone(),
        "ROUTER__WEBSERVER__SERVER_HOST" => c.listen.ip().to_string(),
        "ROUTER__WEBSERVER__SERVER_PORT" => c.listen.port().to_string(),
        "ROUTER_URL" => text(c.router_url.as_deref()),
        "CLEARML_API_HOST" => text(clearml.map(|k| k.api_host.as_str())),
        "CLEARML_API_ACCESS_KEY" => text(clearml.map(|k| k.access_key.as_str())),
        "CLEARML_API_SECRET_KEY" => text(clearml.map(|_| MASK)),
        "AUTH_COOKIE_NAME" => c.auth.cookie_name.clone(),
        "AUTH_SECURE_ENABLED" => c.auth.cookie_secure.to_string(),
        "ROUTER__AUTH__CACHE_TTL_MS" => ms(c.auth.cache_ttl),
        "ROUTER__AUTH__DENIAL_TTL_MS" => ms(c.auth.denial_ttl),
        "ROUTER__AUTH__CACHE_ENTRIES" => c.auth.cache_entries.to_string(),
        "AUTH_BASE64_JWKS_KEY" => text(c.auth.jwks_key.as_ref().map(|_| MASK)),
        "TCP_ROUTER_ADDRESS" => text(tcp.and_then(|t| t.router_address.as_deref())),
        "TCP_PORT_START" => tcp.map(|t| t.ports.start().to_string()).unwrap_or_default(),
        "TCP_PORT_END" => tcp.map(|t| t.ports.end().to_string()).unwrap_or_default(),
        "LISTEN_QUEUE_NAME" => c.listen_queues.join(","),
        "ROUTER__RUNTIME__THREADS" => c.runtime_threads.to_string(),
        "ROUTER__SYNC__POLL_INTERVAL_MS" => ms(c.poll_interval),
        "ROUTER__HTTP__MAX_CONNECTIONS" => http.max_connections.to_string(),
        "ROUTER__SYNC__REQUEST_TIMEOUT_MS" => ms(c.clearml_timeout),
        "ROUTER__SYNC__MAX_BACKOFF_MS" => ms(c.max_backoff),
        "ROUTER__HTTP__BROWSER_ENDPOINT" => match c.browser_endpoint {
            BrowserEndpoint::Direct => "direct".to_owned(),
            BrowserEndpoint::Redirect => "redirect".to_owned(),
        },
        "ROUTER__UPSTREAM__ALLOW_CIDRS" => {
            c.allow_cidrs.as_ref().map_or_else(String::new, |cidrs| {
                cidrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            })
        }
        "ROUTER__WEBSERVER__TLS_CERT" => text(tls.and_then(|t| t.cert.to_str())),
        "ROUTER__WEBSERVER__TLS_KEY" => text(tls.and_then(|t| t.key.to_str())),
        "ROUTER__LOG_FORMAT" => match c.log.format {
            LogFormat::Text => "text".to_owned(),
            LogFormat::Json => "json".to_owned(),
        },
        "ROUTER__LOG_FLUSH_MS" => ms(c.log.flush_every),
        "LOGGER_LEVEL" => c.log.level.to_owned(),
        "RUST_LOG" => c.log.filter.clone(),
        "ROUTER__HTTP__CONNECT_TIMEOUT_MS" => ms(http.connect_timeout),
        "ROUTER__HTTP__RESPONSE_HEADER_TIMEOUT_MS" => ms(http.response_header_timeout),
        "ROUTER__HTTP__CLIENT_HEADER_TIMEOUT_MS" => ms(http.client_header_timeout),
        "ROUTER__HTTP__CLIENT_BODY_TIMEOUT_MS" => ms(http.client_body_timeout),
        "ROUTER__HTTP__IDLE_TIMEOUT_MS" => ms(http.idle_timeout),
        "ROUTER__HTTP__UPSTREAM_IDLE_TIMEOUT_MS" => ms(http.upstream_idle_timeout),
        "ROUTER__HTTP__UPSTREAM_MAX_IDLE_PER_HOST" => http.upstream_max_idle_per_host.to_string(),
        "ROUTER__HTTP__MAX_HEADER_BYTES" => http.max_header_bytes.to_string(),
        "ROUTER__HTTP__MAX_BODY_BYTES" => http.max_body_bytes.unwrap_or(0).to_string(),
        "ROUTER__HTTP__SHUTDOWN_GRACE_MS" => ms(http.shutdown_grace),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A variable added to the table but not to `effective_value` would print as unset.
    #[test]
    fn every_variable_has_an_effective_value() {
        let config = Config::from_vars(&Default::default()).unwrap();
        let blank_by_default = [
            "ROUTER_URL",
            "CLEARML_API_HOST",
            "CLEARML_API_ACCESS_KEY",
            "CLEARML_API_SECRET_KEY",
            "AUTH_BASE64_JWKS_KEY",
            "TCP_ROUTER_ADDRESS",
            "TCP_PORT_START",
            "TCP_PORT_END",
            "LISTEN_QUEUE_NAME",
            "ROUTER__UPSTREAM__ALLOW_CIDRS",
            "ROUTER__WEBSERVER__TLS_CERT",
            "ROUTER__WEBSERVER__TLS_KEY",
        ];
        for variable in VARIABLES.iter().filter(|v| v.alias_of.is_none()) {
            let value = effective_value(&config, variable.name);
            assert_eq!(
                value.is_empty(),
                blank_by_default.contains(&variable.name),
                "{} shows {value:?}",
                variable.name
            );
        }
    }
}
