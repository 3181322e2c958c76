//! Property tests of reading a task's runtime map, which the task's own code writes: any map
//! gives usable endpoints or skipped entries, never a panic, and a good endpoint is found
//! among any garbage. The number of cases is `PROPTEST_CASES` (256 by default).

use gateway_clearml::Runtime;
use gateway_proxy::routes::is_valid_route_key;
use gateway_proxy::{AddressPolicy, Upstream};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::endpoints::{http_endpoints, tcp_endpoints};

/// Endpoint names as tasks write them, and as they should not.
fn suffix() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "", "__lab", "__1", "__a-b", "__", "___x", "__a.b", "__a b", "__é", "_", "x", "__LAB",
    ])
    .prop_map(str::to_owned)
}

fn key() -> impl Strategy<Value = String> {
    let stem = prop::sample::select(vec![
        "_PORT",
        "_ADDRESS",
        "_SERVICE",
        "external_tcp_port",
        "external_address",
        "upstream_task_port",
        "upstream_task_address",
        "endpoint",
    ]);
    prop_oneof![
        6 => (stem, suffix()).prop_map(|(stem, suffix)| format!("{stem}{suffix}")),
        1 => "[ -~]{0,12}",
    ]
}

/// Values a task may leave under any key: ports, addresses, and what is neither.
fn value() -> impl Strategy<Value = Value> {
    let text = prop_oneof![
        prop::sample::select(vec![
            "10.0.0.5",
            "127.0.0.1",
            "::1",
            "[::1]",
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "fe80::1",
            "gpu-7.cluster.local",
            "http://10.0.0.5/x",
            "10.0.0.5:80",
            "user@host",
            "10.0.0.5\r\nX-Injected: 1",
            " 10.0.0.5 ",
            "",
            "2852039166",
            "0xA9FEA9FE",
            "localhost",
            "80",
            " 8080 ",
            "65535",
            "65536",
            "0",
            "-1",
            "0x50",
            "8e3",
            "EXTERNAL",
        ])
        .prop_map(str::to_owned),
        "[ -~]{0,20}",
        any::<String>(),
    ];
    prop_oneof![
        4 => text.prop_map(Value::String),
        3 => any::<i64>().prop_map(|n| json!(n)),
        2 => (0u32..70_000).prop_map(|n| json!(n)),
        1 => any::<f64>().prop_map(|n| json!(n)),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => Just(Value::Null),
        1 => Just(json!([80])),
        1 => Just(json!({"port": 80})),
    ]
}

fn runtime() -> impl Strategy<Value = Runtime> {
    prop::collection::vec((key(), value()), 0..24).prop_map(|pairs| pairs.into_iter().collect())
}

/// Whether `key` names an HTTP endpoint's port: `_PORT` or `_PORT__{anything}`.
fn is_port_key(key: &str) -> bool {
    key == "_PORT" || key.starts_with("_PORT__")
}

proptest! {
    #[test]
    fn fuzz_any_runtime_map_gives_usable_endpoints_or_skips_each_port_key(map in runtime()) {
        let policy = AddressPolicy::default();
        let (endpoints, skipped) = http_endpoints(&map, &policy);
        let port_keys = map.keys().filter(|k| is_port_key(k)).count();
        prop_assert_eq!(endpoints.len() + skipped.len(), port_keys, "each port key once");
        for endpoint in &endpoints {
            if let Some(name) = &endpoint.name {
                prop_assert!(is_valid_route_key(name) && !name.starts_with('_'), "{name:?}");
            }
            prop_assert!(is_valid_route_key(&endpoint.route_key("abc123")));
            let url = endpoint.upstream.to_string();
            prop_assert_eq!(Upstream::parse_url(&url), Ok(endpoint.upstream.clone()));
            prop_assert!(endpoint.upstream.authority().port_u16().is_some_and(|p| p > 0));
            if let Some(ip) = endpoint.upstream.ip() {
                prop_assert!(policy.permits(ip), "{ip} is outside the policy");
            }
        }
        for skip in &skipped {
            prop_assert!(is_port_key(&skip.key) && !skip.reason.is_empty());
        }

        let range = 10_000..=10_099;
        let (sessions, _) = tcp_endpoints(&map, "gw.example.com", &range);
        for session in sessions {
            prop_assert!(Upstream::from_host_port(&session.host, session.port).is_ok());
            prop_assert!(session.adopt.is_none_or(|port| range.contains(&port)));
        }
    }

    #[test]
    fn fuzz_a_good_endpoint_is_found_among_any_garbage(
        mut map in runtime(),
        address in prop::sample::select(vec!["10.1.2.3", "gpu-7.cluster.local", "::1"]),
        port in 1u16..,
        as_text in any::<bool>(),
    ) {
        map.insert("_ADDRESS__good".to_owned(), json!(address));
        let port_value = if as_text { json!(port.to_string()) } else { json!(port) };
        map.insert("_PORT__good".to_owned(), port_value);
        let (endpoints, _) = http_endpoints(&map, &AddressPolicy::default());
        let good = endpoints.iter().find(|e| e.name.as_deref() == Some("good"));
        let expected = Upstream::from_host_port(address, port).unwrap();
        prop_assert_eq!(good.map(|e| &e.upstream), Some(&expected));
    }
}
