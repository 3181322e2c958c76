//! Upstreams that fail: each gives the client a precise status and a JSON body, and the
//! gateway one log line with the cause.

use std::time::Duration;

use gateway_testkit::client::raw_exchange;
use gateway_testkit::{backend, client, gateway};
use http::StatusCode;

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");

#[tokio::test]
async fn an_upstream_that_refuses_is_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let gw = gateway(BIN).route("gone", url).start().await;
    let reply = client(gw.addr()).get("/service/gone/").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.json()["error"], "upstream_unreachable");
    assert!(
        !reply.text().contains("127.0.0.1"),
        "no upstream address leaks to the client"
    );
    gw.wait_for_log("Connection refused", Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn an_upstream_that_does_not_accept_in_time_is_504() {
    let app = backend::unaccepting();
    let gw = gateway(BIN)
        .route("busy", app.url())
        .env("ROUTER__HTTP__CONNECT_TIMEOUT_MS", "300")
        .start()
        .await;
    let reply = client(gw.addr()).get("/service/busy/").await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.json()["error"], "upstream_connect_timeout");
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_504_at_the_timeout() {
    let app = backend::silent().await;
    let gw = gateway(BIN)
        .route("mute", app.url())
        .env("ROUTER__HTTP__RESPONSE_HEADER_TIMEOUT_MS", "300")
        .start()
        .await;
    let reply = client(gw.addr()).get("/service/mute/").await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.json()["error"], "upstream_timeout");
    assert!(
        app.received().starts_with("GET / HTTP/1.1"),
        "the request did reach it"
    );
}

#[tokio::test]
async fn an_upstream_that_answers_garbage_is_502() {
    let app = backend::fixed(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
    let gw = gateway(BIN).route("ssh", app.url()).start().await;
    let reply = client(gw.addr()).get("/service/ssh/").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.json()["error"], "upstream_failed");
}

#[tokio::test]
async fn a_switch_the_client_did_not_ask_for_is_502() {
    let app = backend::fixed(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
    )
    .await;
    let gw = gateway(BIN).route("sly", app.url()).start().await;
    let reply = client(gw.addr()).get("/service/sly/").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.json()["error"], "upstream_invalid_response");

    let websocket_request = "GET /service/sly/ HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade, close\r\n\
        Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let raw = raw_exchange(gw.addr(), websocket_request.as_bytes()).await;
    assert!(
        raw.starts_with("HTTP/1.1 502"),
        "a 101 to h2c for a WebSocket offer: {raw}"
    );
    assert!(raw.contains("upstream_invalid_response"), "{raw}");
}

#[tokio::test]
async fn a_response_cut_short_ends_as_an_error_for_the_client() {
    let app = backend::fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part").await;
    let gw = gateway(BIN).route("cut", app.url()).start().await;
    let c = client(gw.addr());
    let request = c.request(http::Method::GET, "/service/cut/");
    let response = c
        .open(request.body(gateway_testkit::client::empty()).unwrap())
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(response.into_body()).await;
    assert!(body.is_err(), "a truncated body must not look whole");
    gw.wait_for_log("complete=false", Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn upstreams_outside_the_allowed_networks_are_refused_by_address_and_by_name() {
    let app = backend::echo().await;
    let port = app.addr().port();
    let gw = gateway(BIN)
        .route("by-ip", app.url())
        .route("by-name", format!("http://localhost:{port}"))
        .env("ROUTER__UPSTREAM__ALLOW_CIDRS", "10.0.0.0/8")
        .start()
        .await;
    for route in ["by-ip", "by-name"] {
        let reply = client(gw.addr()).get(&format!("/service/{route}/")).await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{route}");
        assert_eq!(reply.json()["error"], "upstream_not_allowed", "{route}");
    }
    assert!(app.seen().is_empty(), "nothing reached the app");
    gw.wait_for_log(
        "localhost resolves only to addresses outside",
        Duration::from_secs(5),
    )
    .await;

    let open = gateway(BIN)
        .route("by-name", format!("http://localhost:{port}"))
        .start()
        .await;
    let reply = client(open.addr()).get("/service/by-name/").await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "loopback is allowed by default"
    );
}
