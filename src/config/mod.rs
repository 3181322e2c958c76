//! The gateway's configuration: the environment of `runtime.env` (CONTRACT §1 and §9),
//! optionally loaded from an env file first, checked whole before anything is bound.
//!
//! `env_file` reads a `runtime.env`; `raw` collects the variables as text with `envy`;
//! `values` interprets each one (errors name the variable and the value); this module
//! assembles them into a [`Config`]; `own` says how the gateway knows itself (its `Via`
//! name, the addresses no route may point at); `show` prints it for `--check-config`;
//! `routes_file` reads the standalone routes file.

pub mod env_file;
#[cfg(test)]
mod fuzz;
mod own;
mod raw;
pub mod routes_file;
mod show;
mod values;
pub mod variables;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use gateway_proxy::{AddressPolicy, Cidr, ClientScheme, HttpSettings};
pub use gateway_sync::BrowserEndpoint;

use raw::RawEnv;
use values::Value;

/// A configuration that cannot be used; the process exits before binding anything.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable holds a value of the wrong form.
    #[error("{var}={value:?}: expected {expected}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What it should look like.
        expected: String,
    },
    /// A variable and its alias are both set, to different values.
    #[error(
        "{first}={first_value:?} and {second}={second_value:?} disagree: set one of them, or both to the same value"
    )]
    Conflict {
        /// The primary name.
        first: &'static str,
        /// Its value.
        first_value: String,
        /// The alias.
        second: &'static str,
        /// Its value.
        second_value: String,
    },
    /// A variable that the other settings make mandatory is unset.
    #[error("{var} must be set {because}")]
    Missing {
        /// The variable.
        var: &'static str,
        /// Why it is needed.
        because: &'static str,
    },
    /// Variables that are valid alone but not together.
    #[error("{0}")]
    Inconsistent(String),
    /// One of the gateway's variables holds bytes that are not UTF-8.
    #[error("{0} is not valid UTF-8")]
    NotUnicode(String),
    /// The env file could not be read.
    #[error(transparent)]
    EnvFile(#[from] env_file::EnvFileError),
    /// The environment could not be read as text.
    #[error("reading the environment: {0}")]
    Environment(#[from] envy::Error),
}

/// The gateway's own ClearML credentials and server.
#[derive(Debug, Clone)]
pub struct ClearmlConfig {
    /// `CLEARML_API_HOST`, without a trailing `/`.
    pub api_host: String,
    /// `CLEARML_API_ACCESS_KEY`.
    pub access_key: String,
    /// `CLEARML_API_SECRET_KEY`.
    pub secret_key: Secret,
}

/// A value never printed or logged.
#[derive(Clone)]
pub struct Secret<T = String>(T);

impl<T> Secret<T> {
    /// The secret itself, for the one place that must use it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(****)")
    }
}

/// How the gateway's auth cookie is set and checked.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `AUTH_COOKIE_NAME`.
    pub cookie_name: String,
    /// `AUTH_SECURE_ENABLED`: the `Secure` flag on cookies the gateway sets.
    pub cookie_secure: bool,
    /// `AUTH_BASE64_JWKS_KEY`, decoded: check token signatures locally with this key.
    pub jwks_key: Option<Secret<Vec<u8>>>,
    /// `ROUTER__AUTH__CACHE_TTL_MS`.
    pub cache_ttl: Duration,
    /// `ROUTER__AUTH__DENIAL_TTL_MS`.
    pub denial_ttl: Duration,
    /// `ROUTER__AUTH__CACHE_ENTRIES`.
    pub cache_entries: usize,
}

/// The TCP session port range and the address clients are given for it.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// `TCP_ROUTER_ADDRESS`.
    pub router_address: Option<String>,
    /// `TCP_PORT_START..=TCP_PORT_END`.
    pub ports: RangeInclusive<u16>,
}

/// Text for people, or one JSON object per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines.
    Json,
}

/// What is logged, and how.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `LOGGER_LEVEL`, as a level name.
    pub level: &'static str,
    /// The filter directive (`RUST_LOG`, else `LOGGER_LEVEL` mapped to a level).
    pub filter: String,
    /// `ROUTER__LOG_FORMAT`.
    pub format: LogFormat,
    /// `ROUTER__LOG_FLUSH_MS`: the longest a line waits to be written; zero writes each at once.
    pub flush_every: Duration,
}

/// PEM files to serve TLS with.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// `ROUTER__WEBSERVER__TLS_CERT`.
    pub cert: PathBuf,
    /// `ROUTER__WEBSERVER__TLS_KEY`.
    pub key: PathBuf,
}

/// The whole, checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `ROUTER_NAME`.
    pub router_name: String,
    /// Where the HTTP listener binds.
    pub listen: SocketAddr,
    /// `ROUTER_URL`, without a trailing `/`.
    pub router_url: Option<String>,
    /// The ClearML server; `None` in standalone mode.
    pub clearml: Option<ClearmlConfig>,
    /// Cookie and token settings.
    pub auth: AuthConfig,
    /// TCP sessions; `None` when off.
    pub tcp: Option<TcpConfig>,
    /// `LISTEN_QUEUE_NAME`, split; empty for every queue.
    pub listen_queues: Vec<String>,
    /// `ROUTER__RUNTIME__THREADS`: threads serving connections (default: one per core).
    pub runtime_threads: usize,
    /// `ROUTER__SYNC__POLL_INTERVAL_MS`.
    pub poll_interval: Duration,
    /// `ROUTER__SYNC__REQUEST_TIMEOUT_MS`: longest wait for one ClearML call.
    pub clearml_timeout: Duration,
    /// `ROUTER__SYNC__MAX_BACKOFF_MS`: longest pause between retries while ClearML fails.
    pub max_backoff: Duration,
    /// `ROUTER__HTTP__BROWSER_ENDPOINT`.
    pub browser_endpoint: BrowserEndpoint,
    /// `ROUTER__UPSTREAM__ALLOW_CIDRS`; `None` for the default (all but link-local).
    pub allow_cidrs: Option<Vec<Cidr>>,
    /// TLS, when both PEM files are set.
    pub tls: Option<TlsFiles>,
    /// Logging.
    pub log: LogConfig,
    /// Timeouts and limits of the HTTP side.
    pub http: HttpSettings,
    /// `ROUTER__…` variables that were set but mean nothing here (likely typos).
    pub unknown_router_vars: Vec<String>,
}

impl Config {
    /// Loads the configuration: the env file (if any) first, then the process environment,
    /// which wins where both set a variable.
    pub fn load(env_file: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let mut vars = BTreeMap::new();
        if let Some(path) = env_file {
            vars.extend(env_file::read(path)?);
        }
        vars.extend(environment()?);
        Self::from_vars(&vars)
    }

    /// Builds the configuration from variables (names as in `runtime.env`).
    pub fn from_vars(vars: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let raw = RawEnv::from_vars(vars)?;
        let router_url = Value::of("ROUTER_URL", &raw.router_url).http_url()?;
        let clearml = clearml(&raw)?;
        if clearml.is_some() && router_url.is_none() {
            return Err(ConfigError::Missing {
                var: "ROUTER_URL",
                because: "when CLEARML_API_HOST is set: endpoints written to tasks are built from it",
            });
        }
        let tcp = tcp(&raw)?;
        if clearml.is_some() && tcp.as_ref().is_some_and(|t| t.router_address.is_none()) {
            return Err(ConfigError::Missing {
                var: "TCP_ROUTER_ADDRESS",
                because: "when TCP_PORT_START and TCP_PORT_END are set: tasks are told to connect to it",
            });
        }
        let https = router_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"));
        let host = Value::of("ROUTER__WEBSERVER__SERVER_HOST", &raw.server_host)
            .ip()?
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let port = Value::of("ROUTER__WEBSERVER__SERVER_PORT", &raw.server_port)
            .port()?
            .unwrap_or(8080);
        let tls = tls(&raw)?;
        let allow_cidrs = allow_cidrs(&raw)?;
        let policy = match &allow_cidrs {
            Some(cidrs) => AddressPolicy::allowing(cidrs.clone()),
            None => AddressPolicy::default(),
        };
        let listen = SocketAddr::new(host, port);
        let via_pseudonym = own::via_pseudonym(router_url.as_deref(), listen);
        let http = http_settings(&raw, https || tls.is_some(), policy, via_pseudonym)?;
        Ok(Self {
            router_name: Value::of("ROUTER_NAME", &raw.router_name).string_or("main-router"),
            listen,
            auth: auth(&raw, https || tls.is_some())?,
            tcp,
            listen_queues: Value::of("LISTEN_QUEUE_NAME", &raw.listen_queues).list(),
            runtime_threads: runtime_threads(&raw)?,
            poll_interval: Value::of("ROUTER__SYNC__POLL_INTERVAL_MS", &raw.poll_interval_ms)
                .millis(2000, 100)?,
            clearml_timeout: Value::of("ROUTER__SYNC__REQUEST_TIMEOUT_MS", &raw.request_timeout_ms)
                .millis(30_000, 100)?,
            max_backoff: Value::of("ROUTER__SYNC__MAX_BACKOFF_MS", &raw.max_backoff_ms)
                .millis(30_000, 100)?,
            browser_endpoint: browser_endpoint(&raw)?,
            allow_cidrs: allow_cidrs.clone(),
            log: log(&raw)?,
            http,
            unknown_router_vars: unknown_router_vars(vars),
            router_url,
            clearml,
            tls,
        })
    }

    /// The effective configuration as `NAME=value` lines, secrets masked.
    pub fn render(&self) -> String {
        show::render(self)
    }
}

/// The process environment. Entries that are not Unicode are passed over, unless their
/// name is one of the gateway's variables, which is then an error.
fn environment() -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        match (name.into_string(), value.into_string()) {
            (Ok(name), Ok(value)) => vars.push((name, value)),
            (Ok(name), Err(_)) if variables::is_known(&name) => {
                return Err(ConfigError::NotUnicode(name));
            }
            _ => {}
        }
    }
    Ok(vars)
}

/// One thread per core the process may run on (its CPU affinity and cgroup quota count).
fn runtime_threads(raw: &RawEnv) -> Result<usize, ConfigError> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = Value::of("ROUTER__RUNTIME__THREADS", &raw.runtime_threads).number(
        u64::try_from(cores).unwrap_or(1),
        1,
        "threads",
    )?;
    Ok(usize::try_from(threads)
        .unwrap_or(usize::MAX)
        .min(MAX_THREADS))
}

/// More threads than this only cost memory and scheduling: no machine runs them at once.
const MAX_THREADS: usize = 1024;

fn clearml(raw: &RawEnv) -> Result<Option<ClearmlConfig>, ConfigError> {
    let Some(api_host) = Value::of("CLEARML_API_HOST", &raw.api_host).http_url()? else {
        return Ok(None);
    };
    let because = "when CLEARML_API_HOST is set: the gateway logs in to ClearML with it";
    let access_key = raw.access_key.clone().ok_or(ConfigError::Missing {
        var: "CLEARML_API_ACCESS_KEY",
        because,
    })?;
    let secret_key = raw.secret_key.clone().ok_or(ConfigError::Missing {
        var: "CLEARML_API_SECRET_KEY",
        because,
    })?;
    Ok(Some(ClearmlConfig {
        api_host,
        access_key,
        secret_key: Secret(secret_key),
    }))
}

fn auth(raw: &RawEnv, secure_by_default: bool) -> Result<AuthConfig, ConfigError> {
    let secure = Value::either(
        ("AUTH_SECURE_ENABLED", &raw.cookie_secure),
        (
            "ROUTER__HTTP__AUTHORIZATION__COOKIE__SECURE",
            &raw.cookie_secure_alias,
        ),
    )?;
    let cookie = Value::of("AUTH_COOKIE_NAME", &raw.cookie_name);
    let cookie_name = cookie.string_or("clearml_token_basic");
    let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !cookie_name.chars().all(token_char) {
        return Err(cookie.reject("a cookie name (letters, digits and !#$%&'*+-.^_`|~)"));
    }
    let jwks = Value::of("AUTH_BASE64_JWKS_KEY", &raw.jwks_key);
    let jwks_key = match jwks.text {
        None => None,
        Some(text) => {
            let invalid = || ConfigError::Invalid {
                var: "AUTH_BASE64_JWKS_KEY",
                value: "(not shown)".to_owned(),
                expected: "the base64 of the ClearML server's token secret, at least 16 bytes"
                    .to_owned(),
            };
            let key = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| invalid())?;
            if key.len() < 16 {
                return Err(invalid());
            }
            Some(Secret(key))
        }
    };
    let entries = Value::of("ROUTER__AUTH__CACHE_ENTRIES", &raw.auth_cache_entries)
        .number(100_000, 1, "entries")?;
    Ok(AuthConfig {
        cookie_name,
        cookie_secure: secure.boolean()?.unwrap_or(secure_by_default),
        jwks_key,
        cache_ttl: Value::of("ROUTER__AUTH__CACHE_TTL_MS", &raw.auth_cache_ttl_ms)
            .millis(60_000, 0)?,
        denial_ttl: Value::of("ROUTER__AUTH__DENIAL_TTL_MS", &raw.auth_denial_ttl_ms)
            .millis(5_000, 0)?,
        cache_entries: usize::try_from(entries).unwrap_or(usize::MAX),
    })
}

fn tcp(raw: &RawEnv) -> Result<Option<TcpConfig>, ConfigError> {
    let start = Value::either(
        ("TCP_PORT_START", &raw.tcp_start),
        ("ROUTER__STREAM__PORT_RANGE__START", &raw.tcp_start_alias),
    )?;
    let end = Value::either(
        ("TCP_PORT_END", &raw.tcp_end),
        ("ROUTER__STREAM__PORT_RANGE__END", &raw.tcp_end_alias),
    )?;
    let address = Value::either(
        ("TCP_ROUTER_ADDRESS", &raw.tcp_address),
        ("ROUTER__STREAM__EXTERNAL_URL", &raw.tcp_address_alias),
    )?;
    let ports = match (start.port()?, end.port()?) {
        (None, None) => return Ok(None),
        (Some(first), Some(last)) if first <= last => first..=last,
        (Some(first), Some(last)) => {
            return Err(ConfigError::Inconsistent(format!(
                "{}={first} is greater than {}={last}: the TCP port range is empty",
                start.var, end.var
            )));
        }
        (Some(_), None) => {
            return Err(ConfigError::Missing {
                var: "TCP_PORT_END",
                because: "when TCP_PORT_START is set (leave both empty to turn TCP sessions off)",
            });
        }
        (None, Some(_)) => {
            return Err(ConfigError::Missing {
                var: "TCP_PORT_START",
                because: "when TCP_PORT_END is set (leave both empty to turn TCP sessions off)",
            });
        }
    };
    Ok(Some(TcpConfig {
        router_address: address.text.map(str::to_owned),
        ports,
    }))
}

fn browser_endpoint(raw: &RawEnv) -> Result<BrowserEndpoint, ConfigError> {
    let value = Value::of("ROUTER__HTTP__BROWSER_ENDPOINT", &raw.browser_endpoint);
    Ok(match value.choice(&["direct", "redirect"])? {
        Some("redirect") => BrowserEndpoint::Redirect,
        _ => BrowserEndpoint::Direct,
    })
}

fn allow_cidrs(raw: &RawEnv) -> Result<Option<Vec<Cidr>>, ConfigError> {
    let value = Value::of("ROUTER__UPSTREAM__ALLOW_CIDRS", &raw.allow_cidrs);
    if value.text.is_none() {
        return Ok(None);
    }
    let cidrs = value
        .list()
        .iter()
        .map(|item| {
            item.parse::<Cidr>().map_err(|()| {
                value.reject(format!(
                    "comma-separated networks such as 10.0.0.0/8,fd00::/8 ({item:?} is not one)"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(cidrs))
}

fn tls(raw: &RawEnv) -> Result<Option<TlsFiles>, ConfigError> {
    match (&raw.tls_cert, &raw.tls_key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert: cert.into(),
            key: key.into(),
        })),
        (Some(_), None) => Err(ConfigError::Missing {
            var: "ROUTER__WEBSERVER__TLS_KEY",
            because: "when ROUTER__WEBSERVER__TLS_CERT is set",
        }),
        (None, Some(_)) => Err(ConfigError::Missing {
            var: "ROUTER__WEBSERVER__TLS_CERT",
            because: "when ROUTER__WEBSERVER__TLS_KEY is set",
        }),
    }
}

fn log(raw: &RawEnv) -> Result<LogConfig, ConfigError> {
    let format = match Value::of("ROUTER__LOG_FORMAT", &raw.log_format).choice(&["text", "json"])? {
        Some("json") => LogFormat::Json,
        _ => LogFormat::Text,
    };
    let level = Value::of("LOGGER_LEVEL", &raw.log_level);
    let level = match level.text.map(str::to_ascii_lowercase).as_deref() {
        None => "info",
        Some("trace") => "trace",
        Some("debug") => "debug",
        Some("info") => "info",
        Some("warn" | "warning") => "warn",
        Some("error" | "critical" | "fatal") => "error",
        Some(_) => return Err(level.reject("one of trace, debug, info, warning, error")),
    };
    let filter = match &raw.rust_log {
        Some(directive) => {
            directive
                .parse::<tracing_subscriber::filter::Targets>()
                .map_err(|_| {
                    Value::of("RUST_LOG", &raw.rust_log)
                        .reject("a filter such as info or info,access=warn")
                })?;
            directive.clone()
        }
        None => level.to_owned(),
    };
    let flush_ms =
        Value::of("ROUTER__LOG_FLUSH_MS", &raw.log_flush_ms).number(100, 0, "milliseconds")?;
    if flush_ms > MAX_LOG_FLUSH_MS {
        return Err(
            Value::of("ROUTER__LOG_FLUSH_MS", &raw.log_flush_ms).reject(format!(
                "a whole number of milliseconds, from 0 to {MAX_LOG_FLUSH_MS}"
            )),
        );
    }
    Ok(LogConfig {
        level,
        filter,
        format,
        flush_every: Duration::from_millis(flush_ms),
    })
}

/// Lines held longer than this would make `docker logs` look stuck.
const MAX_LOG_FLUSH_MS: u64 = 10_000;

/// Largest accepted `ROUTER__HTTP__MAX_HEADER_BYTES`: heads beyond 1 MiB are an attack,
/// not a request.
const MAX_HEADER_BYTES_CAP: u64 = 1 << 20;

fn http_settings(
    raw: &RawEnv,
    https: bool,
    upstream_policy: AddressPolicy,
    via_pseudonym: String,
) -> Result<HttpSettings, ConfigError> {
    let ms = |var, text, default| Value::of(var, text).millis(default, 1);
    let max_header = Value::of("ROUTER__HTTP__MAX_HEADER_BYTES", &raw.max_header_bytes);
    let max_header_bytes = max_header.number(64 * 1024, 1024, "bytes")?;
    if max_header_bytes > MAX_HEADER_BYTES_CAP {
        return Err(max_header.reject("a whole number of bytes from 1024 to 1048576"));
    }
    let max_body = Value::of("ROUTER__HTTP__MAX_BODY_BYTES", &raw.max_body_bytes).number(
        0,
        0,
        "bytes (0 for no limit)",
    )?;
    let max_idle = Value::of(
        "ROUTER__HTTP__UPSTREAM_MAX_IDLE_PER_HOST",
        &raw.upstream_max_idle_per_host,
    )
    .number(256, 0, "connections")?;
    Ok(HttpSettings {
        connect_timeout: ms(
            "ROUTER__HTTP__CONNECT_TIMEOUT_MS",
            &raw.connect_timeout_ms,
            5_000,
        )?,
        response_header_timeout: ms(
            "ROUTER__HTTP__RESPONSE_HEADER_TIMEOUT_MS",
            &raw.response_header_timeout_ms,
            300_000,
        )?,
        client_header_timeout: ms(
            "ROUTER__HTTP__CLIENT_HEADER_TIMEOUT_MS",
            &raw.client_header_timeout_ms,
            30_000,
        )?,
        client_body_timeout: ms(
            "ROUTER__HTTP__CLIENT_BODY_TIMEOUT_MS",
            &raw.client_body_timeout_ms,
            60_000,
        )?,
        idle_timeout: ms(
            "ROUTER__HTTP__IDLE_TIMEOUT_MS",
            &raw.idle_timeout_ms,
            60_000,
        )?,
        upstream_idle_timeout: ms(
            "ROUTER__HTTP__UPSTREAM_IDLE_TIMEOUT_MS",
            &raw.upstream_idle_timeout_ms,
            60_000,
        )?,
        upstream_max_idle_per_host: usize::try_from(max_idle).unwrap_or(usize::MAX),
        max_header_bytes: usize::try_from(max_header_bytes).unwrap_or(usize::MAX),
        max_body_bytes: (max_body > 0).then_some(max_body),
        max_connections: max_connections(raw)?,
        shutdown_grace: Value::of("ROUTER__HTTP__SHUTDOWN_GRACE_MS", &raw.shutdown_grace_ms)
            .millis(30_000, 0)?,
        client_scheme: if https {
            ClientScheme::Https
        } else {
            ClientScheme::Http
        },
        upstream_policy,
        via_pseudonym,
    })
}

/// `ROUTER__HTTP__MAX_CONNECTIONS`, by default derived from the open-file limit the gateway
/// raises itself to at start.
fn max_connections(raw: &RawEnv) -> Result<usize, ConfigError> {
    let value = Value::of("ROUTER__HTTP__MAX_CONNECTIONS", &raw.max_connections);
    if value.text.is_none() {
        return Ok(crate::open_files::default_max_connections(
            crate::open_files::attainable(),
        ));
    }
    let max = value.number(0, 1, "connections")?;
    Ok(usize::try_from(max).unwrap_or(usize::MAX))
}

fn unknown_router_vars(vars: &BTreeMap<String, String>) -> Vec<String> {
    vars.keys()
        .filter(|name| name.starts_with("ROUTER__") && !variables::is_known(name))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests;
