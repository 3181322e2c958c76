//! Runtime values are written by task code: user input. Through the fake ClearML and the
//! binary, an unusable value costs its endpoint one log line of normal size, a runaway map
//! costs its task the endpoints past the cap and one line, and the other tasks — and every
//! other key of the map — are unharmed.

use std::time::Duration;

use gateway_testkit::clearml::{FakeClearml, task};
use gateway_testkit::wait::eventually;
use gateway_testkit::{backend, client, gateway};
use http::StatusCode;
use serde_json::{Map, Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");

/// The lines the gateway logged about `task`'s entries.
fn skip_lines(logs: &str, task: &str) -> Vec<String> {
    logs.lines()
        .filter(|l| l.contains("task entry skipped") && l.contains(&format!("task={task} ")))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn huge_and_hostile_runtime_maps_cost_only_their_own_entries() {
    let app = backend::echo().await;
    let port = app.addr().port();
    let server = FakeClearml::start().await;
    let token = server.token_for(&server.add_user("alice"));

    // 100 000 keys of other people's data beside one endpoint: all of it must survive the
    // write-back, which replaces the whole map on this server.
    let mut bulky = Map::new();
    for i in 0..100_000 {
        bulky.insert(format!("metric_{i:06}"), json!(i));
    }
    let bulky = server.add_task(
        task()
            .in_progress()
            .runtime(Value::Object(bulky))
            .http_endpoint("127.0.0.1", port),
    );
    // 100 000 endpoints: the first 100 are served, the rest cost one line.
    let mut runaway = Map::new();
    for i in 0..100_000 {
        runaway.insert(format!("_PORT__n{i:06}"), json!(port));
        runaway.insert(format!("_ADDRESS__n{i:06}"), json!("127.0.0.1"));
    }
    let runaway = server.add_task(
        task()
            .in_progress()
            .runtime(Value::Object(runaway))
            .system_tags(&["external_service"]),
    );
    // A 10 MB address, every other shape of bad address and port, and addresses the
    // default ROUTER__UPSTREAM__ALLOW_CIDRS keeps out.
    let ten_mb = "1".repeat(10 * 1024 * 1024);
    let hostile = server.add_task(
        task()
            .in_progress()
            .runtime(json!({
                "_ADDRESS": ten_mb, "_PORT": port,
                "_ADDRESS__scheme": "http://127.0.0.1", "_PORT__scheme": port,
                "_ADDRESS__path": "127.0.0.1/admin", "_PORT__path": port,
                "_ADDRESS__user": "user@127.0.0.1", "_PORT__user": port,
                "_ADDRESS__crlf": "127.0.0.1\r\nX-Injected: 1", "_PORT__crlf": port,
                "_ADDRESS__space": "127.0.0.1 8000", "_PORT__space": port,
                "_ADDRESS__range": "127.0.0.1", "_PORT__range": 99_999,
                "_ADDRESS__word": "127.0.0.1", "_PORT__word": "eighty",
                "_ADDRESS__neg": "127.0.0.1", "_PORT__neg": -1,
                // Where cloud metadata services live, by address and by a number resolvers
                // read as 169.254.169.254.
                "_ADDRESS__meta": "169.254.169.254", "_PORT__meta": 80,
                "_ADDRESS__meta6": "fe80::1", "_PORT__meta6": 80,
                "_ADDRESS__int": "2852039166", "_PORT__int": 80,
            }))
            .system_tags(&["external_service"]),
    );
    let ordinary = server.add_task(task().in_progress().http_endpoint("127.0.0.1", port));

    let gw = gateway(BIN)
        .clearml(&server)
        .env("ROUTER__SYNC__POLL_INTERVAL_MS", "1000")
        .start()
        .await;
    gw.wait_ready(Duration::from_secs(30)).await;
    let c = client(gw.addr()).bearer(&token);
    for id in [&ordinary, &bulky] {
        let reply = c.get(&format!("/service/{id}/")).await;
        assert_eq!(reply.status, StatusCode::OK, "{id}");
    }
    assert_eq!(
        c.get(&format!("/service/{runaway}__n000099/")).await.status,
        StatusCode::OK,
        "the 100th endpoint is served"
    );
    assert_eq!(
        c.get(&format!("/service/{runaway}__n000100/")).await.status,
        StatusCode::NOT_FOUND,
        "the 101st is not"
    );
    assert_eq!(
        c.get(&format!("/service/{hostile}/")).await.status,
        StatusCode::NOT_FOUND
    );

    let written = eventually(Duration::from_secs(30), || async {
        server.runtime(&bulky).contains_key("endpoint")
    })
    .await;
    assert!(written, "{}", gw.logs());
    let runtime = server.runtime(&bulky);
    assert_eq!(runtime.len(), 100_000 + 5, "every key kept, two written");
    assert_eq!(runtime["metric_099999"], 99_999);

    gw.wait_for_log(
        &format!("task={hostile} key=\"_PORT__word\""),
        Duration::from_secs(10),
    )
    .await;
    let logs = gw.logs();
    let lines = skip_lines(&logs, &hostile);
    assert_eq!(lines.len(), 12, "one line per bad endpoint: {lines:#?}");
    let refused = lines
        .iter()
        .filter(|l| l.contains("ROUTER__UPSTREAM__ALLOW_CIDRS"));
    assert_eq!(refused.count(), 2, "link-local, v4 and v6: {lines:#?}");
    assert!(
        lines.iter().all(|l| l.len() < 600),
        "a 10 MB value makes a line of normal size"
    );
    assert!(
        lines.iter().any(|l| l.contains("(10485760 bytes)")),
        "{lines:#?}"
    );
    let lines = skip_lines(&logs, &runaway);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("100000 endpoints of this kind"),
        "{}",
        lines[0]
    );
    assert!(skip_lines(&logs, &ordinary).is_empty());
    assert!(skip_lines(&logs, &bulky).is_empty());
}
