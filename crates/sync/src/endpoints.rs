//! A task's HTTP endpoints, read from the runtime keys the SDK writes (CONTRACT §3).
//!
//! Endpoints are found by their `_PORT{S}` keys, not by `_SERVICE{S}`: the default HTTP and
//! TCP endpoints share `_SERVICE`, so whichever was requested last overwrote it.

use std::net::IpAddr;

use gateway_clearml::Runtime;
use gateway_proxy::routes::is_valid_route_key;
use gateway_proxy::{AddressPolicy, Upstream};
use serde_json::Value;

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
    /// The runtime key at fault.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The HTTP endpoints of a task's runtime, and the entries that had to be skipped.
pub fn http_endpoints(
    runtime: &Runtime,
    policy: &AddressPolicy,
) -> (Vec<HttpEndpoint>, Vec<Skipped>) {
    let mut endpoints = Vec::new();
    let mut skipped = Vec::new();
    for (key, value) in runtime {
        let name = match key.strip_prefix("_PORT") {
            Some("") => None,
            Some(rest) => match rest.strip_prefix("__") {
                Some(name) => Some(name.to_owned()),
                None => continue,
            },
            None => continue,
        };
        match endpoint(name, key, value, runtime, policy) {
            Ok(endpoint) => endpoints.push(endpoint),
            Err(reason) => skipped.push(Skipped {
                key: key.clone(),
                reason,
            }),
        }
    }
    endpoints.sort_by(|a, b| a.name.cmp(&b.name));
    (endpoints, skipped)
}

fn endpoint(
    name: Option<String>,
    port_key: &str,
    port: &Value,
    runtime: &Runtime,
    policy: &AddressPolicy,
) -> Result<HttpEndpoint, String> {
    if let Some(name) = &name {
        let valid = !name.is_empty() && is_valid_route_key(name) && !name.starts_with('_');
        if !valid {
            return Err(format!(
                "endpoint name {name:?} must be one or more of A-Z a-z 0-9 _ - and not start with _"
            ));
        }
    }
    let port = port_number(port)
        .ok_or_else(|| format!("{port_key} = {port}: expected a port number in 1..=65535"))?;
    let suffix = port_key.strip_prefix("_PORT").unwrap_or_default();
    let address_key = format!("_ADDRESS{suffix}");
    let address = match runtime.get(&address_key) {
        Some(Value::String(address)) => address.trim(),
        Some(other) => {
            return Err(format!(
                "{address_key} = {other}: expected a host name or IP address"
            ));
        }
        None => return Err(format!("{address_key} is missing")),
    };
    let upstream = Upstream::from_host_port(address, port)
        .map_err(|err| format!("{address_key} = {address:?}: {err}"))?;
    if let Ok(ip) = address.trim_matches(['[', ']']).parse::<IpAddr>() {
        if !policy.permits(ip) {
            return Err(format!(
                "{address_key} = {address:?}: not in the networks of ROUTER__UPSTREAM__ALLOW_CIDRS"
            ));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(runtime: Value) -> (Vec<HttpEndpoint>, Vec<Skipped>) {
        let Value::Object(runtime) = runtime else {
            panic!("an object")
        };
        http_endpoints(&runtime, &AddressPolicy::default())
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
}

/// One TCP endpoint a task asked for (CONTRACT §3, §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpEndpoint {
    /// `None` for the default endpoint, `Some(name)` for `…__{name}`.
    pub name: Option<String>,
    /// The task's own host.
    pub host: String,
    /// The task's own port.
    pub port: u16,
    /// The session port a gateway gave it before (kept across restarts).
    pub adopt: Option<u16>,
}

impl TcpEndpoint {
    /// `""` or `"__{name}"`.
    pub fn suffix(&self) -> String {
        self.name
            .as_ref()
            .map(|n| format!("__{n}"))
            .unwrap_or_default()
    }
}

/// The TCP endpoints of a task's runtime, found by their `external_tcp_port{S}` keys, with
/// or without `upstream_task_port{S}` (`clearml-session` writes none). An endpoint whose
/// `external_address{S}` is `router_address`, whose port is in `range` and which has
/// `upstream_task_address{S}` was given its port by a gateway: it is adopted with that port.
pub fn tcp_endpoints(
    runtime: &Runtime,
    router_address: &str,
    range: &std::ops::RangeInclusive<u16>,
) -> (Vec<TcpEndpoint>, Vec<Skipped>) {
    let mut endpoints = Vec::new();
    let mut skipped = Vec::new();
    for (key, value) in runtime {
        let Some(suffix) = key.strip_prefix("external_tcp_port") else {
            continue;
        };
        let name = match suffix {
            "" => None,
            _ => match suffix.strip_prefix("__") {
                Some(name)
                    if !name.is_empty() && is_valid_route_key(name) && !name.starts_with('_') =>
                {
                    Some(name.to_owned())
                }
                _ => continue,
            },
        };
        match tcp_endpoint(name, suffix, value, runtime, router_address, range) {
            Ok(endpoint) => endpoints.push(endpoint),
            Err(reason) => skipped.push(Skipped {
                key: key.clone(),
                reason,
            }),
        }
    }
    endpoints.sort_by(|a, b| a.name.cmp(&b.name));
    (endpoints, skipped)
}

fn tcp_endpoint(
    name: Option<String>,
    suffix: &str,
    external_port: &Value,
    runtime: &Runtime,
    router_address: &str,
    range: &std::ops::RangeInclusive<u16>,
) -> Result<TcpEndpoint, String> {
    let text = |key: String| {
        runtime
            .get(&key)
            .and_then(Value::as_str)
            .map(str::trim)
            .map(str::to_owned)
    };
    let external_address = text(format!("external_address{suffix}"));
    let upstream_address = text(format!("upstream_task_address{suffix}"));
    let upstream_port = runtime
        .get(&format!("upstream_task_port{suffix}"))
        .and_then(port_number);
    let external_port = port_number(external_port).ok_or_else(|| {
        format!("external_tcp_port{suffix} = {external_port}: expected a port number in 1..=65535")
    })?;
    let given_by_gateway = upstream_address.is_some()
        && external_address.as_deref() == Some(router_address)
        && range.contains(&external_port);
    let (host, port, adopt) = if given_by_gateway {
        let port = upstream_port
            .ok_or_else(|| format!("upstream_task_port{suffix} is missing or not a port"))?;
        (
            upstream_address.unwrap_or_default(),
            port,
            Some(external_port),
        )
    } else {
        let host =
            external_address.ok_or_else(|| format!("external_address{suffix} is missing"))?;
        // A gateway's port without the task's own address (a gateway that kept the address
        // elsewhere wrote it): forwarding to it would send the session back into this gateway.
        if host == router_address && range.contains(&external_port) {
            return Err(format!(
                "external_address{suffix} is this gateway's own address and \
                 upstream_task_address{suffix} is missing: the task's own address is unknown \
                 (request the endpoint again)"
            ));
        }
        (host, upstream_port.unwrap_or(external_port), None)
    };
    Upstream::from_host_port(&host, port).map_err(|err| format!("task address {host:?}: {err}"))?;
    Ok(TcpEndpoint {
        name,
        host,
        port,
        adopt,
    })
}

#[cfg(test)]
mod tcp_tests {
    use super::*;
    use serde_json::json;

    fn read(runtime: Value) -> (Vec<TcpEndpoint>, Vec<Skipped>) {
        let Value::Object(runtime) = runtime else {
            panic!("an object")
        };
        tcp_endpoints(&runtime, "gw.example.com", &(10000..=10099))
    }

    #[test]
    fn session_keys_with_and_without_upstream_task_port_are_read() {
        let (endpoints, skipped) = read(json!({
            "external_address": "10.0.0.5", "external_tcp_port": 22,
            "external_address__jupyter": "10.0.0.5", "external_tcp_port__jupyter": "8888",
            "upstream_task_port__jupyter": 8889,
        }));
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(
            endpoints,
            [
                TcpEndpoint {
                    name: None,
                    host: "10.0.0.5".into(),
                    port: 22,
                    adopt: None
                },
                TcpEndpoint {
                    name: Some("jupyter".into()),
                    host: "10.0.0.5".into(),
                    port: 8889,
                    adopt: None
                },
            ]
        );
    }

    #[test]
    fn a_port_given_by_a_gateway_is_adopted_with_the_tasks_own_address() {
        let (endpoints, skipped) = read(json!({
            "external_address": "gw.example.com", "external_tcp_port": 10007,
            "upstream_task_address": "10.0.0.5", "upstream_task_port": 22,
        }));
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(
            endpoints,
            [TcpEndpoint {
                name: None,
                host: "10.0.0.5".into(),
                port: 22,
                adopt: Some(10007)
            }]
        );
    }

    #[test]
    fn a_gateway_port_without_the_tasks_address_is_skipped_not_looped_back() {
        let (endpoints, skipped) = read(json!({
            "external_address": "gw.example.com", "external_tcp_port": 10007,
            "upstream_task_port": 22,
            "external_address__outside": "gw.example.com", "external_tcp_port__outside": 22,
        }));
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(skipped[0].key, "external_tcp_port");
        assert!(
            skipped[0]
                .reason
                .contains("upstream_task_address is missing")
        );
        assert_eq!(
            endpoints.len(),
            1,
            "a port outside the range is the task's own"
        );
        assert_eq!(endpoints[0].port, 22);
    }
}
