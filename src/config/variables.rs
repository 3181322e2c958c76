//! Every environment variable the gateway reads, with its default and meaning.
//!
//! This table drives `--check-config`, the warning about unknown `ROUTER__…` names, and is
//! kept equal to the fields of [`RawEnv`](super::raw::RawEnv) by a test.

/// One variable of the configuration.
#[derive(Debug)]
pub struct Variable {
    /// The name as written in `runtime.env`.
    pub name: &'static str,
    /// The variable this one is an alias of, if it is a newer spelling.
    pub alias_of: Option<&'static str>,
    /// The default, as the text `--check-config` shows when the variable is unset.
    pub default: &'static str,
    /// Whether the value is a secret (masked when shown).
    pub secret: bool,
    /// What it sets.
    pub meaning: &'static str,
}

const fn var(name: &'static str, default: &'static str, meaning: &'static str) -> Variable {
    Variable {
        name,
        alias_of: None,
        default,
        secret: false,
        meaning,
    }
}

const fn secret(name: &'static str, meaning: &'static str) -> Variable {
    Variable {
        name,
        alias_of: None,
        default: "",
        secret: true,
        meaning,
    }
}

const fn alias(name: &'static str, of: &'static str) -> Variable {
    Variable {
        name,
        alias_of: Some(of),
        default: "",
        secret: false,
        meaning: "newer spelling of the variable it is an alias of",
    }
}

/// All variables, in the order `--check-config` prints them.
pub const VARIABLES: &[Variable] = &[
    var(
        "ROUTER_NAME",
        "main-router",
        "unique name of this gateway within a ClearML tenant",
    ),
    var(
        "ROUTER__WEBSERVER__SERVER_HOST",
        "0.0.0.0",
        "HTTP listen address",
    ),
    var("ROUTER__WEBSERVER__SERVER_PORT", "8080", "HTTP listen port"),
    var(
        "ROUTER_URL",
        "",
        "public base URL of this gateway (http:// or https://)",
    ),
    var(
        "CLEARML_API_HOST",
        "",
        "ClearML API server URL; unset = standalone mode",
    ),
    var(
        "CLEARML_API_ACCESS_KEY",
        "",
        "the gateway's ClearML API access key",
    ),
    secret(
        "CLEARML_API_SECRET_KEY",
        "the gateway's ClearML API secret key",
    ),
    var(
        "AUTH_COOKIE_NAME",
        "clearml_token_basic",
        "name of the ClearML web auth cookie",
    ),
    var(
        "AUTH_SECURE_ENABLED",
        "true when ROUTER_URL is https",
        "the Secure flag on cookies the gateway sets (true/false)",
    ),
    alias(
        "ROUTER__HTTP__AUTHORIZATION__COOKIE__SECURE",
        "AUTH_SECURE_ENABLED",
    ),
    var(
        "ROUTER__AUTH__CACHE_TTL_MS",
        "60000",
        "how long a yes from ClearML is trusted (never past the token's expiry)",
    ),
    var(
        "ROUTER__AUTH__DENIAL_TTL_MS",
        "5000",
        "how long a no from ClearML (refused token, task not visible) is kept",
    ),
    var(
        "ROUTER__AUTH__CACHE_ENTRIES",
        "100000",
        "most authentication decisions kept, per kind",
    ),
    secret(
        "AUTH_BASE64_JWKS_KEY",
        "base64 of the ClearML server's token secret: check token signatures locally",
    ),
    var(
        "TCP_ROUTER_ADDRESS",
        "",
        "address clients use to reach TCP session ports",
    ),
    alias("ROUTER__STREAM__EXTERNAL_URL", "TCP_ROUTER_ADDRESS"),
    var(
        "TCP_PORT_START",
        "",
        "first TCP session port; empty with TCP_PORT_END = sessions off",
    ),
    alias("ROUTER__STREAM__PORT_RANGE__START", "TCP_PORT_START"),
    var("TCP_PORT_END", "", "last TCP session port (inclusive)"),
    alias("ROUTER__STREAM__PORT_RANGE__END", "TCP_PORT_END"),
    var(
        "LISTEN_QUEUE_NAME",
        "",
        "queues whose tasks this gateway routes (comma or space separated); empty = all",
    ),
    var(
        "ROUTER__RUNTIME__THREADS",
        "one per core",
        "threads serving connections and requests (the cores the process may use, by default)",
    ),
    var(
        "ROUTER__SYNC__POLL_INTERVAL_MS",
        "2000",
        "how often ClearML is polled, in milliseconds",
    ),
    var(
        "ROUTER__SYNC__REQUEST_TIMEOUT_MS",
        "30000",
        "longest wait for one ClearML API call, in milliseconds",
    ),
    var(
        "ROUTER__SYNC__MAX_BACKOFF_MS",
        "30000",
        "longest pause between retries while ClearML fails, in milliseconds",
    ),
    var(
        "ROUTER__HTTP__BROWSER_ENDPOINT",
        "direct",
        "browser_endpoint form: direct or redirect",
    ),
    var(
        "ROUTER__UPSTREAM__ALLOW_CIDRS",
        "0.0.0.0/0,::/0 except 169.254.0.0/16,fe80::/10",
        "networks task addresses may point into (comma-separated CIDRs)",
    ),
    var(
        "ROUTER__WEBSERVER__TLS_CERT",
        "",
        "PEM certificate chain: serve TLS",
    ),
    var(
        "ROUTER__WEBSERVER__TLS_KEY",
        "",
        "PEM private key for ROUTER__WEBSERVER__TLS_CERT",
    ),
    var("ROUTER__LOG_FORMAT", "text", "log format: text or json"),
    var(
        "ROUTER__LOG_FLUSH_MS",
        "100",
        "log lines are written in batches at least this often; 0 writes each line at once",
    ),
    var(
        "LOGGER_LEVEL",
        "info",
        "log level: trace, debug, info, warning, error",
    ),
    var(
        "RUST_LOG",
        "",
        "per-module log filter (wins over LOGGER_LEVEL), e.g. info,access=warn",
    ),
    var(
        "ROUTER__HTTP__CONNECT_TIMEOUT_MS",
        "5000",
        "longest wait for a TCP connection to a task",
    ),
    var(
        "ROUTER__HTTP__RESPONSE_HEADER_TIMEOUT_MS",
        "300000",
        "longest wait for a task's response headers, counted from the end of the upload",
    ),
    var(
        "ROUTER__HTTP__CLIENT_HEADER_TIMEOUT_MS",
        "30000",
        "longest time a client may take to send a request head (also bounds idle HTTP/1 keep-alive)",
    ),
    var(
        "ROUTER__HTTP__CLIENT_BODY_TIMEOUT_MS",
        "60000",
        "longest pause while a client sends a request body (408 beyond)",
    ),
    var(
        "ROUTER__HTTP__IDLE_TIMEOUT_MS",
        "60000",
        "client connections with no request in flight are closed after this long",
    ),
    var(
        "ROUTER__HTTP__UPSTREAM_IDLE_TIMEOUT_MS",
        "60000",
        "idle pooled connections to tasks are closed after this long",
    ),
    var(
        "ROUTER__HTTP__UPSTREAM_MAX_IDLE_PER_HOST",
        "256",
        "most idle pooled connections kept per task endpoint",
    ),
    var(
        "ROUTER__HTTP__MAX_HEADER_BYTES",
        "65536",
        "largest request head (431 beyond)",
    ),
    var(
        "ROUTER__HTTP__MAX_BODY_BYTES",
        "0",
        "largest request body, 0 = no limit (413 beyond)",
    ),
    var(
        "ROUTER__HTTP__MAX_CONNECTIONS",
        "half the open-file limit, at most 50000",
        "most client connections open at once; more are answered 503 and closed",
    ),
    var(
        "ROUTER__HTTP__SHUTDOWN_GRACE_MS",
        "30000",
        "on SIGTERM/SIGINT, how long requests in flight may finish",
    ),
];

/// Whether `name` is a variable the gateway reads.
pub fn is_known(name: &str) -> bool {
    VARIABLES.iter().any(|v| v.name == name)
}

#[cfg(test)]
mod tests {
    use super::VARIABLES;

    /// The names a deployment file sets: `NAME=` at the start of a line (after `- ` in a
    /// compose `environment:` list).
    fn names_in(text: &str) -> std::collections::BTreeSet<&str> {
        text.lines()
            .map(|line| line.trim_start().trim_start_matches("- "))
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split_once('=').map(|(name, _)| name))
            .filter(|name| {
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            })
            .collect()
    }

    #[test]
    fn the_deployment_files_set_exactly_the_variables_the_gateway_reads() {
        let known: std::collections::BTreeSet<&str> = VARIABLES.iter().map(|v| v.name).collect();
        for (file, text) in [
            (
                "docker-compose.yml",
                include_str!("../../docker-compose.yml"),
            ),
            (
                "runtime.env.example",
                include_str!("../../runtime.env.example"),
            ),
        ] {
            let set = names_in(text);
            let missing: Vec<_> = known.difference(&set).collect();
            let ignored: Vec<_> = set.difference(&known).collect();
            assert!(missing.is_empty(), "{file} lacks {missing:?}");
            assert!(
                ignored.is_empty(),
                "{file} sets {ignored:?}, which the gateway ignores"
            );
        }
    }

    #[test]
    fn the_compose_file_requires_what_the_original_required() {
        let compose = include_str!("../../docker-compose.yml");
        for name in [
            "ROUTER_NAME",
            "ROUTER__WEBSERVER__SERVER_PORT",
            "ROUTER_URL",
            "CLEARML_API_HOST",
            "CLEARML_API_ACCESS_KEY",
            "CLEARML_API_SECRET_KEY",
            "AUTH_COOKIE_NAME",
        ] {
            assert!(
                compose.contains(&format!("- {name}=${{{name}:?err}}")),
                "{name}"
            );
        }
        assert!(compose.contains("network_mode: host"));
        assert!(compose.contains("restart: unless-stopped"));
        assert!(!compose.contains("docker.sock"));
    }

    #[test]
    fn the_kubernetes_example_sets_known_variables_and_exposes_its_whole_port_range() {
        let manifest = include_str!("../../docs/kubernetes/gateway.yaml");
        // `  NAME: "value"` lines of the ConfigMap's and the Secret's data.
        let settings: std::collections::BTreeMap<&str, &str> = manifest
            .lines()
            .filter_map(|line| line.strip_prefix("  ")?.split_once(": "))
            .filter(|(name, _)| name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
            .map(|(name, value)| (name, value.trim_matches('"')))
            .collect();
        for name in settings.keys() {
            assert!(
                super::is_known(name),
                "gateway.yaml sets {name}, which the gateway ignores"
            );
        }
        let port = |name| settings[name].parse::<u16>().unwrap();
        let range: Vec<u16> = (port("TCP_PORT_START")..=port("TCP_PORT_END")).collect();
        let exposed: Vec<u16> = manifest
            .lines()
            .filter_map(|line| {
                line.split_once("{ name: tcp-")?
                    .1
                    .split_once(',')?
                    .0
                    .parse()
                    .ok()
            })
            .collect();
        assert_eq!(exposed, range, "the Service lists the TCP session range");
        for required in [
            "ROUTER_NAME",
            "ROUTER_URL",
            "CLEARML_API_HOST",
            "CLEARML_API_SECRET_KEY",
        ] {
            assert!(
                settings.contains_key(required),
                "gateway.yaml lacks {required}"
            );
        }
    }

    #[test]
    fn every_variable_is_documented() {
        let docs = include_str!("../../docs/configuration.md");
        for variable in VARIABLES {
            let row = format!("| `{}` |", variable.name);
            assert!(
                docs.contains(&row),
                "docs/configuration.md has no row for {}",
                variable.name
            );
        }
    }
}
