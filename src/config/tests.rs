use super::*;

fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let vars = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::from_vars(&vars)
}

fn error(pairs: &[(&str, &str)]) -> String {
    config(pairs).unwrap_err().to_string()
}

const CLEARML: &[(&str, &str)] = &[
    ("CLEARML_API_HOST", "https://api.clear.ml"),
    ("CLEARML_API_ACCESS_KEY", "AK"),
    ("CLEARML_API_SECRET_KEY", "very-secret"),
    ("ROUTER_URL", "https://gw.example.com/"),
];

#[test]
fn defaults_need_no_variable_at_all() {
    let c = config(&[]).unwrap();
    assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(c.router_name, "main-router");
    assert!(c.clearml.is_none() && c.tcp.is_none());
    assert_eq!(c.auth.cookie_name, "clearml_token_basic");
    assert!(!c.auth.cookie_secure);
    assert_eq!(c.poll_interval, Duration::from_secs(2));
    assert_eq!(c.http.response_header_timeout, Duration::from_secs(300));
    assert_eq!(c.http.max_body_bytes, None);
    assert_eq!(c.log.filter, "info");
}

#[test]
fn the_original_runtime_env_is_understood() {
    let mut pairs = CLEARML.to_vec();
    pairs.extend([
        ("PROXY_TAG", ""),
        ("ROUTER_NAME", "router-a"),
        ("ROUTER__WEBSERVER__SERVER_PORT", "8010"),
        ("AUTH_COOKIE_NAME", "allegro_token_abc"),
        ("AUTH_SECURE_ENABLED", "false"),
        ("TCP_ROUTER_ADDRESS", "10.0.0.9"),
        ("TCP_PORT_START", "10000"),
        ("TCP_PORT_END", "10100"),
        ("LISTEN_QUEUE_NAME", "queue1,queue2"),
    ]);
    let c = config(&pairs).unwrap();
    assert_eq!(c.listen.port(), 8010);
    assert_eq!(c.router_url.as_deref(), Some("https://gw.example.com"));
    let clearml = c.clearml.unwrap();
    assert_eq!(clearml.access_key, "AK");
    assert_eq!(format!("{:?}", clearml.secret_key), "Secret(****)");
    assert!(
        !c.auth.cookie_secure,
        "explicit false wins over the https default"
    );
    let tcp = c.tcp.unwrap();
    assert_eq!(tcp.ports, 10000..=10100);
    assert_eq!(tcp.router_address.as_deref(), Some("10.0.0.9"));
    assert_eq!(c.listen_queues, ["queue1", "queue2"]);
    assert_eq!(c.http.client_scheme, ClientScheme::Https);
}

#[test]
fn newer_spellings_are_aliases() {
    let c = config(&[
        ("ROUTER__STREAM__EXTERNAL_URL", "tcp.example.com"),
        ("ROUTER__STREAM__PORT_RANGE__START", "20000"),
        ("ROUTER__STREAM__PORT_RANGE__END", "20001"),
        ("ROUTER__HTTP__AUTHORIZATION__COOKIE__SECURE", "true"),
        ("LOGGER_LEVEL", "WARNING"),
    ])
    .unwrap();
    let tcp = c.tcp.unwrap();
    assert_eq!(tcp.ports, 20000..=20001);
    assert_eq!(tcp.router_address.as_deref(), Some("tcp.example.com"));
    assert!(c.auth.cookie_secure);
    assert_eq!(c.log.filter, "warn");
}

#[test]
fn bad_values_name_the_variable_the_value_and_what_is_expected() {
    assert_eq!(
        error(&[("ROUTER__WEBSERVER__SERVER_PORT", "80800")]),
        "ROUTER__WEBSERVER__SERVER_PORT=\"80800\": expected a port number in 1..=65535"
    );
    assert_eq!(
        error(&[("TCP_PORT_START", "10100"), ("TCP_PORT_END", "10000")]),
        "TCP_PORT_START=10100 is greater than TCP_PORT_END=10000: the TCP port range is empty"
    );
    assert_eq!(
        error(&[("TCP_PORT_START", "10000"), ("TCP_PORT_END", "ten")]),
        "TCP_PORT_END=\"ten\": expected a port number in 1..=65535"
    );
    assert!(
        error(&[("TCP_PORT_START", "10000")])
            .starts_with("TCP_PORT_END must be set when TCP_PORT_START is set")
    );
    assert_eq!(
        error(&[("ROUTER_URL", "gw.example.com")]),
        "ROUTER_URL=\"gw.example.com\": expected an http:// or https:// URL such as https://gateway.example.com"
    );
    assert_eq!(
        error(&[("AUTH_SECURE_ENABLED", "sometimes")]),
        "AUTH_SECURE_ENABLED=\"sometimes\": expected true or false"
    );
    assert_eq!(
        error(&[("ROUTER__HTTP__BROWSER_ENDPOINT", "popup")]),
        "ROUTER__HTTP__BROWSER_ENDPOINT=\"popup\": expected one of direct, redirect"
    );
    assert!(
        error(&[("ROUTER__UPSTREAM__ALLOW_CIDRS", "10.0.0.0/8,nope")])
            .starts_with("ROUTER__UPSTREAM__ALLOW_CIDRS=\"10.0.0.0/8,nope\": expected")
    );
    assert!(
        error(&[("ROUTER__HTTP__CONNECT_TIMEOUT_MS", "5s")]).starts_with(
            "ROUTER__HTTP__CONNECT_TIMEOUT_MS=\"5s\": expected a whole number of milliseconds"
        )
    );
    assert!(
        error(&[("RUST_LOG", "info,access=loud")]).starts_with("RUST_LOG=\"info,access=loud\"")
    );
    assert!(error(&[("LOGGER_LEVEL", "loud")]).starts_with("LOGGER_LEVEL=\"loud\""));
    assert!(error(&[("AUTH_COOKIE_NAME", "a;b")]).starts_with("AUTH_COOKIE_NAME=\"a;b\""));
}

#[test]
fn clearml_mode_needs_its_credentials_and_a_public_url() {
    let without = |name: &str| -> Vec<(&str, &str)> {
        CLEARML
            .iter()
            .copied()
            .filter(|(k, _)| *k != name)
            .collect()
    };
    assert!(
        error(&without("CLEARML_API_SECRET_KEY")).starts_with("CLEARML_API_SECRET_KEY must be set")
    );
    assert!(
        error(&without("CLEARML_API_ACCESS_KEY")).starts_with("CLEARML_API_ACCESS_KEY must be set")
    );
    assert!(error(&without("ROUTER_URL")).starts_with("ROUTER_URL must be set"));
    let c = config(CLEARML).unwrap();
    assert!(
        c.auth.cookie_secure,
        "https ROUTER_URL makes cookies Secure by default"
    );
}

#[test]
fn an_alias_that_disagrees_is_an_error() {
    assert_eq!(
        error(&[
            ("TCP_PORT_START", "1"),
            ("ROUTER__STREAM__PORT_RANGE__START", "2")
        ]),
        "TCP_PORT_START=\"1\" and ROUTER__STREAM__PORT_RANGE__START=\"2\" disagree: set one of them, or both to the same value"
    );
}

#[test]
fn check_config_masks_secrets_and_flags_unknown_router_names() {
    let mut pairs = CLEARML.to_vec();
    pairs.push(("AUTH_BASE64_JWKS_KEY", "c2VjcmV0LXNlY3JldC1zZWNyZXQ="));
    pairs.push(("ROUTER__HTTP__CONECT_TIMEOUT_MS", "1"));
    let shown = config(&pairs).unwrap().render();
    assert!(
        !shown.contains("very-secret") && !shown.contains("c2VjcmV0LXNlY3JldC1zZWNyZXQ="),
        "{shown}"
    );
    assert!(shown.contains("CLEARML_API_SECRET_KEY=****\n"));
    assert!(shown.contains("AUTH_BASE64_JWKS_KEY=****\n"));
    assert!(shown.contains("CLEARML_API_ACCESS_KEY=AK\n"));
    assert!(shown.contains("ROUTER__HTTP__RESPONSE_HEADER_TIMEOUT_MS=300000\n"));
    assert!(shown.contains("# ignored (not a gateway setting): ROUTER__HTTP__CONECT_TIMEOUT_MS"));
}

#[test]
fn runtime_threads_default_to_the_cores_the_process_may_use() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(config(&[]).unwrap().runtime_threads, cores);
    let one = config(&[("ROUTER__RUNTIME__THREADS", "1")]).unwrap();
    assert_eq!(one.runtime_threads, 1);
    assert_eq!(
        error(&[("ROUTER__RUNTIME__THREADS", "0")]),
        "ROUTER__RUNTIME__THREADS=\"0\": expected a whole number of threads, at least 1"
    );
}

#[test]
fn the_connection_cap_is_a_positive_number_and_by_default_half_the_open_file_limit() {
    let derived = crate::open_files::default_max_connections(crate::open_files::attainable());
    assert_eq!(config(&[]).unwrap().http.max_connections, derived);
    let set = config(&[("ROUTER__HTTP__MAX_CONNECTIONS", "20")]).unwrap();
    assert_eq!(set.http.max_connections, 20);
    assert!(
        set.render()
            .contains("\nROUTER__HTTP__MAX_CONNECTIONS=20\n")
    );
    assert_eq!(
        error(&[("ROUTER__HTTP__MAX_CONNECTIONS", "0")]),
        "ROUTER__HTTP__MAX_CONNECTIONS=\"0\": expected a whole number of connections, at least 1"
    );
    assert!(
        error(&[("ROUTER__HTTP__MAX_CONNECTIONS", "lots")]).starts_with(
            "ROUTER__HTTP__MAX_CONNECTIONS=\"lots\": expected a whole number of connections"
        )
    );
}
