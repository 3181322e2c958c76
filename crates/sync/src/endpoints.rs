//! A task's endpoints, read from the runtime keys the SDK writes (CONTRACT §3).
//!
//! HTTP endpoints are found by their `_PORT{S}` keys, not by `_SERVICE{S}`: the default HTTP
//! and TCP endpoints share `_SERVICE`, so whichever was requested last overwrote it. TCP
//! endpoints are in `tcp`.
//!
//! Runtime values are written by task code: user input. A value that cannot be used skips
//! its endpoint with a reason that quotes at most [`SHOWN`] bytes of it, so that a 10 MB
//! value makes a log line of normal size; a task gets at most [`MAX_ENDPOINTS`] endpoints of
//! each kind, so that a runaway map neither floods the table nor the log.

mod tcp;

use std::net::IpAddr;

use gateway_clearml::Runtime;
use gateway_proxy::routes::is_valid_route_key;
use gateway_proxy::{AddressPolicy, OwnAddresses, Upstream};
use serde_json::Value;

pub use tcp::{TcpEndpoint, tcp_endpoints};

/// The most endpoints of each kind (HTTP, TCP) one task is given; far above what a task
/// asks for (the SDK names extra endpoints "1", "2", …).
pub const MAX_ENDPOINTS: usize = 100;

/// The longest endpoint name: it becomes part of the route's path.
pub const MAX_NAME_LEN: usize = 64;

/// How many bytes of a runtime value a skip reason quotes.
pub const SHOWN: usize = 64;

/// One HTTP endpoint a task asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpEndpoint {
    /// `None` for the default endpoint, `Some(name)` for `…__{name}`.
    pub name: Option<String>,
    /// Where the app listens.
    pub upstream: Upstream,
}

impl HttpEndpoint {
    /// `""` or `"__{name}"`: the suffix of this endpoint's runtime keys.
    pub fn suffix(&self) -> String {
        self.name
            .as_ref()
            .map(|n| format!("__{n}"))
            .unwrap_or_default()
    }

    /// The route key: `{task_id}` or `{task_id}__{name}`.
    pub fn route_key(&self, task_id: &str) -> String {
        format!("{task_id}{}", self.suffix())
    }
}

/// A runtime entry that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The runtime key at fault (at most [`SHOWN`] bytes of it).
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Skipped {
    fn new(key: &str, reason: String) -> Self {
        Self {
            key: shortened(key),
            reason,
        }
    }
}

/// Where a task's HTTP endpoints may point.
#[derive(Debug, Clone, Copy)]
pub struct Reach<'a> {
    /// `ROUTER__UPSTREAM__ALLOW_CIDRS`.
    pub policy: &'a AddressPolicy,
    /// The gateway's own addresses, which no endpoint may point at.
    pub own: &'a OwnAddresses,
}

/// The HTTP endpoints of a task's runtime, and the entries that had to be skipped.
pub fn http_endpoints(runtime: &Runtime, reach: Reach<'_>) -> (Vec<HttpEndpoint>, Vec<Skipped>) {
    let mut found = Found::default();
    for (key, value) in runtime {
        let name = match key.strip_prefix("_PORT") {
            Some("") => None,
            Some(rest) => match rest.strip_prefix("__") {
                Some(name) => Some(name.to_owned()),
                None => continue,
            },
            None => continue,
        };
        found.read(key, || endpoint(name, key, value, runtime, reach));
    }
    found.finish("_PORT__*", |endpoint| &endpoint.name)
}

/// The endpoints of one kind read so far, and the entries skipped; past [`MAX_ENDPOINTS`],
/// endpoints are counted but not read.
struct Found<T> {
    endpoints: Vec<T>,
    skipped: Vec<Skipped>,
    count: usize,
}

impl<T> Default for Found<T> {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            skipped: Vec::new(),
            count: 0,
        }
    }
}

impl<T> Found<T> {
    /// Reads the endpoint whose port is at `key`, unless the task has its fill.
    fn read(&mut self, key: &str, read: impl FnOnce() -> Result<T, String>) {
        self.count += 1;
        if self.count > MAX_ENDPOINTS {
            return;
        }
        match read() {
            Ok(endpoint) => self.endpoints.push(endpoint),
            Err(reason) => self.skipped.push(Skipped::new(key, reason)),
        }
    }

    /// The endpoints in name order, and the skips: one for all past the cap (`keys` names
    /// them), rather than one each.
    fn finish(
        mut self,
        keys: &str,
        name: impl Fn(&T) -> &Option<String>,
    ) -> (Vec<T>, Vec<Skipped>) {
        if self.count > MAX_ENDPOINTS {
            self.skipped.push(Skipped {
                key: keys.to_owned(),
                reason: format!(
                    "{} endpoints of this kind: a task gets at most {MAX_ENDPOINTS}, the rest (in key order) are not served",
                    self.count
                ),
            });
        }
        self.endpoints.sort_by(|a, b| name(a).cmp(name(b)));
        (self.endpoints, self.skipped)
    }
}

/// An endpoint name: `[A-Za-z0-9_-]`, not starting with `_`, at most [`MAX_NAME_LEN`].
fn is_endpoint_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && is_valid_route_key(name)
        && !name.starts_with('_')
}

fn endpoint(
    name: Option<String>,
    port_key: &str,
    port: &Value,
    runtime: &Runtime,
    reach: Reach<'_>,
) -> Result<HttpEndpoint, String> {
    if let Some(name) = &name {
        if !is_endpoint_name(name) {
            return Err(format!(
                "endpoint name {} must be 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 _ - and not start with _",
                shown(name)
            ));
        }
    }
    let port = port_number(port).ok_or_else(|| {
        format!(
            "{port_key} = {}: expected a port number in 1..=65535",
            shown_value(port)
        )
    })?;
    let suffix = port_key.strip_prefix("_PORT").unwrap_or_default();
    let address_key = format!("_ADDRESS{suffix}");
    let address = match runtime.get(&address_key) {
        Some(Value::String(address)) => address.trim(),
        Some(other) => {
            return Err(format!(
                "{address_key} = {}: expected a host name or IP address",
                shown_value(other)
            ));
        }
        None => return Err(format!("{address_key} is missing")),
    };
    let upstream = Upstream::from_host_port(address, port).map_err(|_| {
        format!(
            "{address_key} = {}: expected a host name or IP address, without scheme, path, user or port",
            shown(address)
        )
    })?;
    if let Ok(ip) = address.trim_matches(['[', ']']).parse::<IpAddr>() {
        if !reach.policy.permits(ip) {
            return Err(format!(
                "{address_key} = {}: not in the networks of ROUTER__UPSTREAM__ALLOW_CIDRS",
                shown(address)
            ));
        }
    }
    if let Some(why) = reach.own.leads_back(&upstream) {
        return Err(format!(
            "{address_key}:{port_key} points at this gateway ({why}): requests would loop back into it"
        ));
    }
    Ok(HttpEndpoint { name, upstream })
}

/// A port given as a number or as a string of digits.
fn port_number(value: &Value) -> Option<u16> {
    let number = match value {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    u16::try_from(number).ok().filter(|p| *p > 0)
}

/// `text` quoted, cut to [`SHOWN`] bytes with its full length said when longer.
fn shown(text: &str) -> String {
    if text.len() <= SHOWN {
        return format!("{text:?}");
    }
    format!("{:?}… ({} bytes)", head(text), text.len())
}

/// A JSON value as it would be written, cut like [`shown`].
fn shown_value(value: &Value) -> String {
    match value {
        Value::String(text) => shown(text),
        other => {
            let text = other.to_string();
            if text.len() <= SHOWN {
                return text;
            }
            format!("{}… ({} bytes)", head(&text), text.len())
        }
    }
}

/// A key as it may be logged: at most [`SHOWN`] bytes, marked when cut.
fn shortened(key: &str) -> String {
    if key.len() <= SHOWN {
        return key.to_owned();
    }
    format!("{}…", head(key))
}

/// The first [`SHOWN`] bytes of `text`, or fewer to end on a character.
fn head(text: &str) -> &str {
    let mut cut = SHOWN.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(runtime: Value) -> (Vec<HttpEndpoint>, Vec<Skipped>) {
        let Value::Object(runtime) = runtime else {
            panic!("an object")
        };
        let reach = Reach {
            policy: &AddressPolicy::default(),
            own: &OwnAddresses::default(),
        };
        http_endpoints(&runtime, reach)
    }

    #[test]
    fn default_and_named_endpoints_are_found_by_their_port_keys() {
        let (endpoints, skipped) = read(json!({
            "_SERVICE": "EXTERNAL_TCP",
            "_ADDRESS": "10.0.0.5", "_PORT": 8000,
            "_SERVICE__lab": "EXTERNAL", "_ADDRESS__lab": "gpu-7.cluster.local", "_PORT__lab": "8888",
            "external_address": "10.0.0.5", "external_tcp_port": 22,
            "endpoint": "https://gw/service/abc/", "other": "kept",
        }));
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(endpoints.len(), 2);
        assert_eq!(endpoints[0].route_key("abc"), "abc");
        assert_eq!(endpoints[0].upstream.to_string(), "http://10.0.0.5:8000");
        assert_eq!(endpoints[1].route_key("abc"), "abc__lab");
        assert_eq!(
            endpoints[1].upstream.to_string(),
            "http://gpu-7.cluster.local:8888"
        );
    }

    #[test]
    fn unusable_entries_are_skipped_naming_the_key() {
        let (endpoints, skipped) = read(json!({
            "_ADDRESS": "10.0.0.5", "_PORT": 8000,
            "_PORT__a": 70000, "_ADDRESS__a": "10.0.0.5",
            "_PORT__b": 80,
            "_PORT__c": 80, "_ADDRESS__c": "http://10.0.0.5/x",
            "_PORT__d": 80, "_ADDRESS__d": "10.0.0.5\r\nX-Injected: 1",
            "_PORT__e": 80, "_ADDRESS__e": "user@host",
            "_PORT__f": 80, "_ADDRESS__f": "169.254.169.254",
            "_PORT__g.h": 80, "_ADDRESS__g.h": "10.0.0.5",
            "_PORT__i": true, "_ADDRESS__i": "10.0.0.5",
            "_PORT__j": 80, "_ADDRESS__j": 1234,
        }));
        assert_eq!(endpoints.len(), 1, "the default endpoint is unharmed");
        let reasons: Vec<String> = skipped
            .iter()
            .map(|s| format!("{}: {}", s.key, s.reason))
            .collect();
        assert_eq!(skipped.len(), 9, "{reasons:#?}");
        assert!(
            reasons
                .iter()
                .any(|r| r.starts_with("_PORT__a: _PORT__a = 70000: expected a port"))
        );
        assert!(
            reasons
                .iter()
                .any(|r| r == "_PORT__b: _ADDRESS__b is missing")
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("_ADDRESS__f") && r.contains("ALLOW_CIDRS"))
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.starts_with("_PORT__g.h: endpoint name"))
        );
    }

    #[test]
    fn task_written_values_of_any_shape_are_skipped_and_quoted_short() {
        let huge = "9".repeat(10 * 1024 * 1024);
        let (endpoints, skipped) = read(json!({
            "_ADDRESS": "10.0.0.5", "_PORT": 8000,
            "_PORT__a": 80, "_ADDRESS__a": "10.0.0.5 8000",
            "_PORT__b": 80, "_ADDRESS__b": " http://10.0.0.5:80 ",
            "_PORT__c": 80, "_ADDRESS__c": "10.0.0.5:80",
            "_PORT__d": 80, "_ADDRESS__d": "10.0.0.5\n",
            "_PORT__e": "eighty", "_ADDRESS__e": "10.0.0.5",
            "_PORT__f": -1, "_ADDRESS__f": "10.0.0.5",
            "_PORT__g": 80.5, "_ADDRESS__g": "10.0.0.5",
            "_PORT__h": 0, "_ADDRESS__h": "10.0.0.5",
            "_PORT__i": huge, "_ADDRESS__i": "10.0.0.5",
            "_PORT__j": 80, "_ADDRESS__j": huge,
            "_PORT__k": 80, "_ADDRESS__k": [huge],
            "_PORT__l": 80, "_ADDRESS__l": "[::1",
        }));
        assert_eq!(endpoints.len(), 2, "the default endpoint and __d");
        assert_eq!(skipped.len(), 11, "{skipped:#?}");
        for skip in &skipped {
            assert!(
                skip.reason.len() < 300,
                "{}: {} bytes",
                skip.key,
                skip.reason.len()
            );
        }
        let reason = |key: &str| &skipped.iter().find(|s| s.key == key).unwrap().reason;
        assert!(
            reason("_PORT__i").ends_with("(10485760 bytes): expected a port number in 1..=65535")
        );
        assert!(reason("_PORT__j").contains("(10485760 bytes): expected a host name"));
        assert!(reason("_PORT__k").contains("(10485764 bytes): expected a host name"));
        // A trailing newline (a script's `hostname -I`) is trimmed like spaces; a line break
        // inside the value is refused (`_ADDRESS__d` of the test above).
        assert_eq!(endpoints[1].upstream.to_string(), "http://10.0.0.5:80");
    }

    #[test]
    fn a_runaway_map_gives_at_most_the_cap_and_one_line_for_the_rest() {
        let mut runtime = serde_json::Map::new();
        for i in 0..100_000 {
            runtime.insert(format!("_PORT__n{i}"), json!(8000));
            runtime.insert(format!("_ADDRESS__n{i}"), json!("10.0.0.5"));
        }
        let long_name = "x".repeat(MAX_NAME_LEN + 1);
        runtime.insert(format!("_PORT__{long_name}"), json!(80));
        let (endpoints, skipped) = read(Value::Object(runtime));
        assert_eq!(endpoints.len(), MAX_ENDPOINTS);
        assert_eq!(skipped.len(), 1, "{skipped:#?}");
        assert_eq!(skipped[0].key, "_PORT__*");
        assert!(
            skipped[0]
                .reason
                .starts_with("100001 endpoints of this kind")
        );
    }

    #[test]
    fn an_endpoint_that_points_at_the_gateway_is_skipped() {
        let Value::Object(runtime) = json!({
            "_ADDRESS": "127.0.0.1", "_PORT": 8080,
            "_ADDRESS__public": "gw.example.com", "_PORT__public": "443",
            "_ADDRESS__app": "127.0.0.1", "_PORT__app": 8081,
        }) else {
            panic!("an object")
        };
        let own = OwnAddresses::listening_on("0.0.0.0:8080".parse().unwrap())
            .with_name("gw.example.com", 443);
        let reach = Reach {
            policy: &AddressPolicy::default(),
            own: &own,
        };
        let (endpoints, skipped) = http_endpoints(&runtime, reach);
        assert_eq!(endpoints.len(), 1);
        assert_eq!(endpoints[0].name.as_deref(), Some("app"));
        assert_eq!(skipped.len(), 2, "{skipped:#?}");
        for skip in &skipped {
            assert!(skip.reason.contains("points at this gateway"), "{skip:?}");
        }
    }
}
