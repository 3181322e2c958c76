//! `/_gateway/metrics`: the Prometheus page counts what the gateway does.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gateway_testkit::backend::{self, tcp_echo};
use gateway_testkit::clearml::{FakeClearml, task};
use gateway_testkit::client::websocket;
use gateway_testkit::wait::eventually;
use gateway_testkit::{client, gateway};
use http::StatusCode;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");

/// The value of the sample line `name` (with its labels), if present.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_page_counts_requests_sync_auth_and_sessions() {
    let app = backend::echo().await;
    let echo = tcp_echo().await;
    let server = FakeClearml::start().await;
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let id = server.add_task(
        task()
            .in_progress()
            .http_endpoint("127.0.0.1", app.addr().port())
            .tcp_endpoint(None, "127.0.0.1", echo.addr().port(), true),
    );
    let gw = gateway(BIN)
        .clearml(&server)
        .env("TCP_ROUTER_ADDRESS", "127.0.0.1")
        .env("TCP_PORT_START", port.to_string())
        .env("TCP_PORT_END", port.to_string())
        .start()
        .await;
    gw.wait_ready(Duration::from_secs(10)).await;
    let token = server.token_for(&server.add_user("alice"));
    for _ in 0..3 {
        let reply = client(gw.addr())
            .bearer(&token)
            .get(&format!("/service/{id}/"))
            .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    client(gw.addr()).get("/nowhere").await;

    let page = client(gw.addr()).get("/_gateway/metrics").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = page.text();
    let value = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("no {name} in:\n{text}"));
    assert_eq!(
        value("clearml_gateway_requests_total{kind=\"service\",class=\"2xx\"}"),
        3.0
    );
    assert_eq!(
        value("clearml_gateway_requests_total{kind=\"other\",class=\"4xx\"}"),
        1.0
    );
    assert_eq!(value("clearml_gateway_upstream_latency_seconds_count"), 3.0);
    assert_eq!(value("clearml_gateway_routes"), 1.0);
    assert!(value("clearml_gateway_open_connections") >= 1.0);
    assert!(value("clearml_gateway_sync_last_success_timestamp_seconds") > 1.7e9);
    assert_eq!(
        value("clearml_gateway_auth_cache_total{question=\"identity\",result=\"miss\"}"),
        1.0
    );
    assert_eq!(
        value("clearml_gateway_auth_cache_total{question=\"identity\",result=\"hit\"}"),
        2.0
    );
    assert_eq!(value("clearml_gateway_tcp_ports_in_use"), 1.0);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, number) = line.rsplit_once(' ').unwrap();
        assert!(
            number.parse::<f64>().is_ok(),
            "a sample line that is not Prometheus text: {line}"
        );
    }

    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"hello")
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::shutdown(&mut stream)
        .await
        .unwrap();
    let mut back = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut back)
        .await
        .unwrap();
    let counted = eventually(Duration::from_secs(5), || async {
        let text = client(gw.addr()).get("/_gateway/metrics").await.text();
        sample(
            &text,
            "clearml_gateway_tcp_bytes_total{direction=\"to_task\"}",
        ) == Some(5.0)
    })
    .await;
    assert!(counted);
}

#[tokio::test]
async fn open_websockets_rise_and_fall_with_the_tunnels() {
    let (app, _) = backend::websocket_echo().await;
    let gw = gateway(BIN).route("lab", app.url()).start().await;
    let open = |gw_addr| async move {
        let text = client(gw_addr).get("/_gateway/metrics").await.text();
        sample(&text, "clearml_gateway_open_websockets")
    };
    assert_eq!(open(gw.addr()).await, Some(0.0));

    let mut ws = websocket(gw.addr(), "/service/lab/socket").await;
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    assert_eq!(open(gw.addr()).await, Some(1.0));

    ws.close(None).await.unwrap();
    drop(ws);
    let closed = eventually(Duration::from_secs(5), || async {
        open(gw.addr()).await == Some(0.0)
    })
    .await;
    assert!(closed, "the gauge falls back to 0 when the tunnel closes");
}
