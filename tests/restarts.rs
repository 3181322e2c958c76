//! A gateway restarted under running tasks, in ClearML mode, through the built binary:
//! SIGTERM lets the request in flight finish and refuses new connections; the new process
//! serves the HTTP routes from its first sync and the TCP sessions on their old ports; and
//! the restart writes nothing to the tasks — no key lost, none written twice.

use std::ops::RangeInclusive;
use std::time::Duration;

use gateway_testkit::backend::{self, tcp_echo};
use gateway_testkit::clearml::{FakeClearml, task};
use gateway_testkit::client::tcp_round_trip;
use gateway_testkit::process::{GatewayCommand, GatewayProcess, free_range};
use gateway_testkit::wait::eventually;
use gateway_testkit::{client, gateway};
use http::StatusCode;
use serde_json::{Map, Value};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");

/// The same gateway each time: a fixed public URL (so the endpoints it writes do not
/// depend on the port it got) and a TCP session range.
fn the_gateway(server: &FakeClearml, range: &RangeInclusive<u16>) -> GatewayCommand {
    gateway(BIN)
        .clearml(server)
        .env("ROUTER_URL", "https://gw.example.com")
        .tcp_sessions(range)
}

/// Waits until several polls in a row write nothing (the write-backs are done).
async fn steady(server: &FakeClearml, gw: &GatewayProcess) {
    let settled = eventually(Duration::from_secs(15), || async {
        server.reset_calls();
        let polled = eventually(Duration::from_secs(5), || async {
            server.calls("tasks.get_all") >= 5
        })
        .await;
        polled && server.writes() == 0
    })
    .await;
    assert!(settled, "the gateway keeps writing:\n{}", gw.logs());
}

async fn restart_changes_nothing_on_the_tasks(api_version: &str) {
    let app = backend::echo().await;
    let slow = backend::slow(Duration::from_millis(1500)).await;
    let ssh = tcp_echo().await;
    let server = FakeClearml::builder()
        .api_version(api_version)
        .start()
        .await;
    let token = server.token_for(&server.add_user("alice"));
    let web = server.add_task(
        task()
            .in_progress()
            .http_endpoint("127.0.0.1", app.addr().port())
            .named_http_endpoint(Some("lab"), "127.0.0.1", app.addr().port()),
    );
    let thinking = server.add_task(
        task()
            .in_progress()
            .http_endpoint("127.0.0.1", slow.addr().port()),
    );
    let session = server.add_task(task().in_progress().tcp_endpoint(
        None,
        "127.0.0.1",
        ssh.addr().port(),
        true,
    ));
    let range = free_range(4);
    let mut first = the_gateway(&server, &range).start().await;
    let written = eventually(Duration::from_secs(10), || async {
        server.runtime(&web).contains_key("browser_endpoint__lab")
            && server.runtime(&thinking).contains_key("browser_endpoint")
            && server
                .runtime(&session)
                .contains_key("upstream_task_address")
    })
    .await;
    assert!(written, "{}", first.logs());
    steady(&server, &first).await;
    let before: Vec<Map<String, Value>> = [&web, &thinking, &session]
        .map(|id| server.runtime(id))
        .into();
    let port = before[2]["external_tcp_port"].as_u64().unwrap() as u16;
    assert_eq!(tcp_round_trip(port, b"before").await, b"before");

    // SIGTERM with a request in flight: it finishes; new connections are refused.
    let addr = first.addr();
    let in_flight = {
        let (token, path) = (token.clone(), format!("/service/{thinking}/"));
        tokio::spawn(async move { client(addr).bearer(&token).get(&path).await })
    };
    let arrived = eventually(Duration::from_secs(5), || async { !slow.seen().is_empty() }).await;
    assert!(arrived);
    first.signal("TERM");
    first
        .wait_for_log("shutting down", Duration::from_secs(5))
        .await;
    let refused = eventually(Duration::from_secs(5), || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(refused, "the listener closes at once");
    let reply = in_flight.await.unwrap();
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (StatusCode::OK, "slow")
    );
    assert!(first.wait_exit(Duration::from_secs(10)).await.success());

    server.reset_calls();
    let second = the_gateway(&server, &range).start().await;
    second.wait_ready(Duration::from_secs(10)).await;
    // Ready means the first sync is applied: everything is served from that moment on.
    for path in [format!("/service/{web}/"), format!("/service/{web}__lab/")] {
        let reply = client(second.addr()).bearer(&token).get(&path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}\n{}", second.logs());
    }
    assert_eq!(
        tcp_round_trip(port, b"after").await,
        b"after",
        "the same port"
    );
    let polled = eventually(Duration::from_secs(10), || async {
        server.calls("tasks.get_all") >= 6
    })
    .await;
    assert!(polled, "{}", second.logs());
    assert_eq!(
        server.writes(),
        0,
        "the restarted gateway wrote:\n{}",
        second.logs()
    );
    let after: Vec<Map<String, Value>> = [&web, &thinking, &session]
        .map(|id| server.runtime(id))
        .into();
    assert_eq!(before, after, "the restart changed the tasks' runtime");
    assert_eq!(server.calls("tasks.get_by_id"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_changes_nothing_on_the_tasks_with_read_modify_write() {
    restart_changes_nothing_on_the_tasks("2.31").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_changes_nothing_on_the_tasks_with_edit_runtime() {
    restart_changes_nothing_on_the_tasks("2.34").await;
}
