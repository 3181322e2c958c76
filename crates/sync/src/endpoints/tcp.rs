//! A task's TCP endpoints (CONTRACT §3, §6), found by their `external_tcp_port{S}` keys.

use gateway_clearml::Runtime;
use gateway_proxy::Upstream;
use serde_json::Value;

use super::{Found, Skipped, is_endpoint_name, port_number, shown, shown_value};

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
    let mut found = Found::default();
    for (key, value) in runtime {
        let Some(suffix) = key.strip_prefix("external_tcp_port") else {
            continue;
        };
        let name = match suffix {
            "" => None,
            _ => match suffix.strip_prefix("__") {
                Some(name) if is_endpoint_name(name) => Some(name.to_owned()),
                _ => continue,
            },
        };
        found.read(key, || {
            tcp_endpoint(name, suffix, value, runtime, router_address, range)
        });
    }
    found.finish("external_tcp_port__*", |endpoint| &endpoint.name)
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
        format!(
            "external_tcp_port{suffix} = {}: expected a port number in 1..=65535",
            shown_value(external_port)
        )
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
    Upstream::from_host_port(&host, port).map_err(|_| {
        format!(
            "task address {}: expected a host name or IP address",
            shown(&host)
        )
    })?;
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
