//! TCP session ports in ClearML mode, through the built binary: a port per task endpoint,
//! written back to the task, kept across a restart, released when the task stops.

use std::ops::RangeInclusive;
use std::time::Duration;

use gateway_testkit::backend::tcp_echo;
use gateway_testkit::clearml::{FakeClearml, task};
use gateway_testkit::client::tcp_round_trip;
use gateway_testkit::gateway;
use gateway_testkit::process::{GatewayCommand, GatewayProcess, free_range};
use gateway_testkit::wait::eventually;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");

fn with_sessions(server: &FakeClearml, range: &RangeInclusive<u16>) -> GatewayCommand {
    gateway(BIN).clearml(server).tcp_sessions(range)
}

/// The session port written to the task, once it is.
async fn session_port(server: &FakeClearml, task: &str, gw: &GatewayProcess) -> u16 {
    let written = eventually(Duration::from_secs(10), || async {
        server
            .runtime(task)
            .get("external_address")
            .and_then(Value::as_str)
            == Some("127.0.0.1")
            && server.runtime(task).contains_key("upstream_task_address")
    })
    .await;
    assert!(
        written,
        "no session written: {:?}\n{}",
        server.runtime(task),
        gw.logs()
    );
    let port = &server.runtime(task)["external_tcp_port"];
    port.as_u64()
        .map(|p| p as u16)
        .unwrap_or_else(|| panic!("port {port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_and_clearml_session_tasks_get_ports_that_reach_them() {
    let echo = tcp_echo().await;
    let server = FakeClearml::start().await;
    let range = free_range(4);
    let sdk = server.add_task(task().in_progress().tcp_endpoint(
        None,
        "127.0.0.1",
        echo.addr().port(),
        true,
    ));
    let session = server.add_task(task().in_progress().tcp_endpoint(
        None,
        "127.0.0.1",
        echo.addr().port(),
        false,
    ));
    let gw = with_sessions(&server, &range).start().await;

    for id in [&sdk, &session] {
        let port = session_port(&server, id, &gw).await;
        assert!(range.contains(&port), "{port} in {range:?}");
        assert_ne!(port, echo.addr().port());
        let runtime = server.runtime(id);
        assert_eq!(runtime["upstream_task_address"], "127.0.0.1");
        assert_eq!(runtime["upstream_task_port"], echo.addr().port());
        assert_eq!(
            runtime["_SERVICE"], "EXTERNAL_TCP",
            "the task's own keys stay"
        );
        assert_eq!(
            tcp_round_trip(port, b"ssh-ish bytes").await,
            b"ssh-ish bytes"
        );
    }
    gw.wait_for_log("tcp session closed", Duration::from_secs(5))
        .await;

    let port = session_port(&server, &sdk, &gw).await;
    let mut open = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    server.set_status(&sdk, "stopped");
    let refused = eventually(Duration::from_secs(5), || async {
        TcpStream::connect(("127.0.0.1", port)).await.is_err()
    })
    .await;
    assert!(refused, "a stopped task's port refuses connections");
    let mut rest = Vec::new();
    let cut = tokio::time::timeout(Duration::from_secs(5), open.read_to_end(&mut rest)).await;
    assert!(cut.is_ok(), "and its open connections are closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_gives_a_task_its_port_back() {
    let echo = tcp_echo().await;
    let server = FakeClearml::start().await;
    let range = free_range(4);
    let first_task = server.add_task(task().in_progress().tcp_endpoint(
        None,
        "127.0.0.1",
        echo.addr().port(),
        true,
    ));
    let id = server.add_task(task().in_progress().tcp_endpoint(
        None,
        "127.0.0.1",
        echo.addr().port(),
        true,
    ));
    let mut gw = with_sessions(&server, &range).start().await;
    let _ = session_port(&server, &first_task, &gw).await;
    let port = session_port(&server, &id, &gw).await;
    gw.signal("TERM");
    gw.wait_exit(Duration::from_secs(10)).await;

    // The first task stops meanwhile: its port is free, but the second keeps its own.
    server.set_status(&first_task, "stopped");
    let gw = with_sessions(&server, &range).start().await;
    gw.wait_ready(Duration::from_secs(10)).await;
    let reopened = eventually(Duration::from_secs(5), || async {
        TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    assert!(reopened, "{}", gw.logs());
    assert_eq!(session_port(&server, &id, &gw).await, port);
    assert_eq!(tcp_round_trip(port, b"again").await, b"again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ports_for_three_tasks_then_the_third_gets_one_when_a_task_stops() {
    let echo = tcp_echo().await;
    let server = FakeClearml::start().await;
    let range = free_range(2);
    let tasks: Vec<String> = (0..3)
        .map(|_| {
            server.add_task(task().in_progress().tcp_endpoint(
                None,
                "127.0.0.1",
                echo.addr().port(),
                true,
            ))
        })
        .collect();
    let gw = with_sessions(&server, &range).start().await;
    let error_of = |id: &str| server.runtime(id).get("_ROUTER_ERROR").cloned();
    let settled = eventually(Duration::from_secs(10), || async {
        tasks.iter().filter(|t| error_of(t).is_some()).count() == 1
            && tasks
                .iter()
                .filter(|t| server.runtime(t).contains_key("upstream_task_address"))
                .count()
                == 2
    })
    .await;
    assert!(settled, "{}", gw.logs());
    let waiting = tasks
        .iter()
        .find(|t| error_of(t).is_some())
        .unwrap()
        .clone();
    assert!(
        error_of(&waiting)
            .unwrap()
            .as_str()
            .unwrap()
            .contains("no free TCP session port")
    );
    assert!(gw.logs().contains("exhausted"), "{}", gw.logs());

    let served: Vec<&String> = tasks.iter().filter(|t| **t != waiting).collect();
    let freed = session_port(&server, served[0], &gw).await;
    server.set_status(served[0], "stopped");
    let got_port = eventually(Duration::from_secs(10), || async {
        error_of(&waiting).is_none()
            && server
                .runtime(&waiting)
                .contains_key("upstream_task_address")
    })
    .await;
    assert!(got_port, "{:?}\n{}", server.runtime(&waiting), gw.logs());
    let port = session_port(&server, &waiting, &gw).await;
    assert_eq!(port, freed, "the freed port is the only one");
    assert_eq!(tcp_round_trip(port, b"finally").await, b"finally");
}

#[tokio::test]
async fn with_sessions_off_tcp_endpoints_are_ignored_with_one_line() {
    let echo = tcp_echo().await;
    let server = FakeClearml::start().await;
    let id = server.add_task(task().in_progress().tcp_endpoint(
        None,
        "127.0.0.1",
        echo.addr().port(),
        true,
    ));
    let gw = gateway(BIN).clearml(&server).start().await;
    gw.wait_ready(Duration::from_secs(10)).await;
    let polls = server.calls("tasks.get_all");
    let more = eventually(Duration::from_secs(5), || async {
        server.calls("tasks.get_all") > polls + 3
    })
    .await;
    assert!(more);
    assert_eq!(
        gw.logs().matches("TCP sessions are off").count(),
        1,
        "{}",
        gw.logs()
    );
    assert!(!server.runtime(&id).contains_key("upstream_task_address"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_tcp_entries_listen_and_forward() {
    let echo = tcp_echo().await;
    let port = *free_range(1).start();
    let routes = format!(
        "[[tcp]]\nport = {port}\nupstream = \"127.0.0.1:{}\"\n",
        echo.addr().port()
    );
    let gw = gateway(BIN).routes_toml(routes).start().await;
    assert_eq!(tcp_round_trip(port, b"standalone").await, b"standalone");
    assert!(gw.logs().contains("tcp_ports=1"), "{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_each_way_half_close_and_200_connections_through_an_allocated_port() {
    let echo = tcp_echo().await;
    let server = FakeClearml::start().await;
    let range = free_range(2);
    let id = server.add_task(task().in_progress().tcp_endpoint(
        None,
        "127.0.0.1",
        echo.addr().port(),
        true,
    ));
    let gw = with_sessions(&server, &range).start().await;
    let port = session_port(&server, &id, &gw).await;

    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let sent: Vec<u8> = (0..10 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let expected = sent.clone();
    let writing = tokio::spawn(async move {
        writer.write_all(&sent).await.unwrap();
        writer.shutdown().await.unwrap();
    });
    let mut received = Vec::new();
    reader.read_to_end(&mut received).await.unwrap();
    writing.await.unwrap();
    assert!(
        received == expected,
        "{} bytes came back, changed or short",
        received.len()
    );

    let clients: Vec<_> = (0..200u32)
        .map(|i| {
            tokio::spawn(
                async move { tcp_round_trip(port, format!("client {i}").as_bytes()).await },
            )
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        assert_eq!(client.await.unwrap(), format!("client {i}").into_bytes());
    }
}
