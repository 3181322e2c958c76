//! ClearML mode through the built binary against the fake ClearML server: tasks that ask for
//! endpoints become routes, get their endpoints written back, and lose their routes when
//! they stop.

use std::time::{Duration, Instant};

use gateway_testkit::clearml::{FakeClearml, Fault, task};
use gateway_testkit::wait::eventually;
use gateway_testkit::{backend, client, gateway};
use http::StatusCode;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");
const POLL: Duration = Duration::from_millis(200);

/// Waits until `task`'s runtime holds `key`, and returns its value.
async fn written(server: &FakeClearml, task: &str, key: &str, timeout: Duration) -> String {
    let found = eventually(timeout, || async { server.runtime(task).contains_key(key) }).await;
    assert!(
        found,
        "{key} was not written to {task}: {:?}",
        server.runtime(task)
    );
    server.runtime(task)[key]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn an_sdk_shaped_task_is_routed_and_gets_its_endpoints_written() {
    let app = backend::echo().await;
    let lab = backend::echo().await;
    let server = FakeClearml::start().await;
    let token = server.token_for(&server.add_user("alice"));
    let id = server.add_task(
        task()
            .in_progress()
            .http_endpoint("127.0.0.1", app.addr().port())
            .named_http_endpoint(Some("lab"), "127.0.0.1", lab.addr().port()),
    );
    let started = Instant::now();
    let gw = gateway(BIN).clearml(&server).start().await;

    let endpoint = written(&server, &id, "endpoint", Duration::from_secs(10)).await;
    let base = format!("http://{}", gw.addr());
    assert_eq!(endpoint, format!("{base}/service/{id}/"));
    assert_eq!(server.runtime(&id)["browser_endpoint"], endpoint.as_str());
    assert_eq!(
        written(&server, &id, "endpoint__lab", Duration::from_secs(5)).await,
        format!("{base}/service/{id}__lab/")
    );
    eprintln!(
        "endpoint written {:?} after the gateway started",
        started.elapsed()
    );

    let reply = client(gw.addr())
        .bearer(&token)
        .get(&format!("/service/{id}/v1/models"))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["uri"], "/v1/models");
    let reply = client(gw.addr())
        .bearer(&token)
        .get(&format!("/service/{id}__lab/tree"))
        .await;
    assert_eq!(reply.json()["uri"], "/tree");
    assert_eq!(lab.seen().len(), 1);
    assert_eq!(
        server.runtime(&id)["_SERVICE"],
        "EXTERNAL",
        "the task's own keys stay"
    );
}

#[tokio::test]
async fn the_redirect_form_of_browser_endpoint_points_at_the_clearml_server() {
    let app = backend::echo().await;
    let server = FakeClearml::start().await;
    let id = server.add_task(
        task()
            .in_progress()
            .http_endpoint("127.0.0.1", app.addr().port()),
    );
    let _gw = gateway(BIN)
        .clearml(&server)
        .env("ROUTER_NAME", "router-a")
        .env("ROUTER__HTTP__BROWSER_ENDPOINT", "redirect")
        .start()
        .await;
    let browser = written(&server, &id, "browser_endpoint", Duration::from_secs(10)).await;
    assert_eq!(
        browser,
        format!(
            "{}/auth.redirect_to_router?router=router-a&task={id}&path=service%2F{id}",
            server.url()
        )
    );
}

#[tokio::test]
async fn a_task_that_stops_loses_its_route_within_a_poll() {
    let app = backend::echo().await;
    let server = FakeClearml::start().await;
    let token = server.token_for(&server.add_user("alice"));
    let stopping = server.add_task(
        task()
            .in_progress()
            .http_endpoint("127.0.0.1", app.addr().port()),
    );
    let deleted = server.add_task(
        task()
            .in_progress()
            .http_endpoint("127.0.0.1", app.addr().port()),
    );
    let gw = gateway(BIN).clearml(&server).start().await;
    gw.wait_ready(Duration::from_secs(10)).await;
    for id in [&stopping, &deleted] {
        let path = format!("/service/{id}/");
        assert_eq!(
            client(gw.addr()).bearer(&token).get(&path).await.status,
            StatusCode::OK
        );
    }

    server.set_status(&stopping, "stopped");
    server.delete_task(&deleted);
    let changed = Instant::now();
    for id in [&stopping, &deleted] {
        let addr = gw.addr();
        let path = format!("/service/{id}/");
        let gone =
            eventually(Duration::from_secs(5), || {
                let (path, token) = (path.clone(), token.clone());
                async move {
                    client(addr).bearer(&token).get(&path).await.status == StatusCode::NOT_FOUND
                }
            })
            .await;
        assert!(gone, "{id} still routed");
    }
    let took = changed.elapsed();
    eprintln!("routes gone {took:?} after the tasks stopped (poll interval {POLL:?})");
    assert!(gw.logs().contains("route removed"), "{}", gw.logs());
}

#[tokio::test]
async fn unusable_entries_are_skipped_with_one_log_line_each() {
    let app = backend::echo().await;
    let server = FakeClearml::start().await;
    let token = server.token_for(&server.add_user("alice"));
    let good = server.add_task(
        task()
            .in_progress()
            .http_endpoint("127.0.0.1", app.addr().port()),
    );
    let bad = server.add_task(
        task()
            .in_progress()
            .runtime(json!({"_ADDRESS": "http://10.0.0.1/x", "_PORT": 80, "_ADDRESS__b": "10.0.0.1", "_PORT__b": 99999}))
            .system_tags(&["external_service"]),
    );
    let gw = gateway(BIN).clearml(&server).start().await;
    gw.wait_ready(Duration::from_secs(10)).await;
    let path = format!("/service/{good}/");
    assert_eq!(
        client(gw.addr()).bearer(&token).get(&path).await.status,
        StatusCode::OK
    );
    // Several polls later, each broken entry has still been reported once.
    let polls = server.calls("tasks.get_all");
    let more = eventually(Duration::from_secs(5), || async {
        server.calls("tasks.get_all") >= polls + 3
    })
    .await;
    assert!(more);
    let logs = gw.logs();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("task entry skipped"))
        .collect();
    assert_eq!(lines.len(), 2, "{logs}");
    assert!(lines.iter().all(|l| l.contains(&bad)), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("key=\"_PORT\"") && l.contains("http://10.0.0.1/x")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("key=\"_PORT__b\"") && l.contains("99999"))
    );
    assert!(!server.runtime(&bad).contains_key("endpoint"));
}

#[tokio::test]
async fn readiness_waits_for_the_first_sync_and_credentials_refused_stop_the_gateway() {
    let server = FakeClearml::start().await;
    let token = server.token_for(&server.add_user("alice"));
    server.set_outage(Some(Fault::Status(503)));
    let gw = gateway(BIN).clearml(&server).start().await;
    let ready = client(gw.addr())
        .bearer(&token)
        .get("/_gateway/ready")
        .await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    server.recover();
    gw.wait_ready(Duration::from_secs(10)).await;

    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port().to_string();
    drop(probe);
    let (status, output) = gateway(BIN)
        .clearml(&server)
        .env("CLEARML_API_SECRET_KEY", "wrong")
        .env("ROUTER_URL", "http://gw.example")
        .env("ROUTER__WEBSERVER__SERVER_HOST", "127.0.0.1")
        .env("ROUTER__WEBSERVER__SERVER_PORT", port)
        .run(&[])
        .await;
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.contains("ClearML refused the gateway's credentials"),
        "{output}"
    );
    assert!(output.contains("401/22"), "{output}");
}
