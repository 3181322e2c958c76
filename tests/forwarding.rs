//! Requests through the built gateway binary to real backends: what arrives upstream, what
//! comes back, and the gateway's own answers when forwarding is not possible.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gateway_testkit::backend;
use gateway_testkit::client::{raw_exchange, websocket};
use gateway_testkit::{client, gateway};
use http::{Method, StatusCode, Version};
use http_body_util::BodyExt;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");

#[tokio::test]
async fn get_and_post_reach_the_upstream_with_the_prefix_stripped() {
    let app = backend::echo().await;
    let gw = gateway(BIN).route("abc", app.url()).start().await;

    let reply = client(gw.addr())
        .get("/service/abc/v1/models?limit=2&x=%2F")
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = reply.json();
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["uri"], "/v1/models?limit=2&x=%2F");

    let reply = client(gw.addr())
        .post("/service/abc/v1/completions", r#"{"prompt":"hi"}"#)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = reply.json();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["uri"], "/v1/completions");
    assert_eq!(seen["body"], r#"{"prompt":"hi"}"#);
    assert_eq!(seen["headers"]["content-length"][0], "15");
}

#[tokio::test]
async fn named_endpoints_route_separately() {
    let default = backend::echo().await;
    let named = backend::echo().await;
    let gw = gateway(BIN)
        .route("abc", default.url())
        .route("abc__lab", named.url())
        .start()
        .await;
    client(gw.addr()).get("/service/abc/").await;
    client(gw.addr()).get("/service/abc__lab/tree").await;
    assert_eq!(default.seen().len(), 1);
    assert_eq!(named.seen().len(), 1);
    assert_eq!(named.seen()[0].uri, "/tree");
}

#[tokio::test]
async fn h2c_clients_are_served_and_forwarded_over_http1() {
    let app = backend::echo().await;
    let gw = gateway(BIN).route("abc", app.url()).start().await;
    let reply = client(gw.addr()).h2c().get("/service/abc/health?x=1").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.version, Version::HTTP_2);
    let seen = reply.json();
    assert_eq!(seen["uri"], "/health?x=1");
    assert_eq!(seen["version"], "HTTP/1.1");
    assert_eq!(
        seen["headers"]["host"][0].as_str(),
        Some(gw.addr().to_string().as_str()),
        "the :authority becomes Host"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_and_forwarding_headers_set() {
    let app = backend::echo().await;
    let gw = gateway(BIN).route("abc", app.url()).start().await;
    let c = client(gw.addr());
    let request = c
        .request(Method::GET, "/service/abc/x")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("te", "trailers")
        .header("trailer", "x-checksum")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-real-ip", "203.0.113.66")
        .header("x-forwarded-prefix", "/elsewhere")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "for=6.6.6.6;proto=https")
        .header("x-original-url", "/admin")
        .header("x-end-to-end", "kept")
        .body(gateway_testkit::client::empty())
        .unwrap();
    let seen = c.send(request).await.json();
    let headers = seen["headers"].as_object().unwrap();
    for gone in [
        "connection",
        "x-hop",
        "keep-alive",
        "proxy-authorization",
        "te",
        "trailer",
    ] {
        assert!(
            !headers.contains_key(gone),
            "{gone} reached the upstream: {headers:?}"
        );
    }
    assert_eq!(headers["x-end-to-end"][0], "kept");
    assert_eq!(headers["x-forwarded-for"][0], "203.0.113.9, 127.0.0.1");
    assert_eq!(headers["x-real-ip"][0], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"][0], "http");
    assert_eq!(headers["x-forwarded-host"][0], gw.addr().to_string());
    assert_eq!(headers["x-forwarded-prefix"][0], "/service/abc");
    assert_eq!(headers["host"][0], gw.addr().to_string());
}

#[tokio::test]
async fn hop_by_hop_headers_of_the_response_are_removed() {
    let app = backend::fixed(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n\
          Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nX-Kept: yes\r\n\r\nok",
    )
    .await;
    let gw = gateway(BIN).route("abc", app.url()).start().await;
    let raw = raw_exchange(
        gw.addr(),
        b"GET /service/abc/ HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    )
    .await;
    let head = raw.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok"), "{raw}");
    assert!(head.contains("x-kept: yes"), "{raw}");
    for gone in ["x-hop", "keep-alive", "proxy-authenticate"] {
        assert!(!head.contains(gone), "{gone} reached the client: {raw}");
    }
    assert!(raw.ends_with("\r\n\r\nok"), "{raw}");
}

#[tokio::test]
async fn server_sent_events_arrive_while_the_upstream_is_still_writing() {
    let gate = Arc::new(Notify::new());
    let app = backend::sse(Arc::clone(&gate)).await;
    let gw = gateway(BIN).route("llm", app.url()).start().await;
    let c = client(gw.addr());
    let request = c
        .request(Method::GET, "/service/llm/v1/stream")
        .body(gateway_testkit::client::empty())
        .unwrap();
    let response = c.open(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    // The upstream writes the second event only after the gate opens, so the first can
    // only arrive here if nothing on the way waited for more.
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the first event arrives before the stream ends")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "data: first\n\n");
    gate.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "data: second\n\n");
}

#[tokio::test]
async fn websockets_are_tunnelled_both_ways_with_the_close_handshake() {
    let (app, paths) = backend::websocket_echo().await;
    let gw = gateway(BIN).route("lab", app.url()).start().await;
    let mut ws = websocket(gw.addr(), "/service/lab/api/kernels/1/channels?session=x").await;

    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    let binary: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    ws.send(Message::binary(binary.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(binary));

    ws.close(None).await.unwrap();
    let after_close = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the close is answered");
    assert!(
        matches!(after_close, Some(Ok(Message::Close(_)))),
        "the backend's close frame comes back: {after_close:?}"
    );
    assert_eq!(
        paths.lock().unwrap().as_slice(),
        ["/api/kernels/1/channels?session=x"]
    );
    drop(ws);
    gw.wait_for_log("status=101", Duration::from_secs(5)).await;
    gw.wait_for_log("tunnel closed", Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn a_path_without_the_trailing_slash_is_redirected_to_it() {
    let app = backend::echo().await;
    let gw = gateway(BIN).route("abc", app.url()).start().await;
    let reply = client(gw.addr()).get("/service/abc?token=1").await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(reply.header("location"), Some("/service/abc/?token=1"));
    assert_eq!(
        client(gw.addr()).get("/service/nope").await.status,
        StatusCode::NOT_FOUND
    );
    assert!(app.seen().is_empty());
}

#[tokio::test]
async fn unknown_routes_and_paths_are_404_with_a_json_body() {
    let app = backend::echo().await;
    let gw = gateway(BIN).route("abc", app.url()).start().await;
    for path in [
        "/service/other/",
        "/",
        "/service/",
        "/service/a.b/x",
        "/_gateway/nothing",
    ] {
        let reply = client(gw.addr()).get(path).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(reply.json()["error"], "no_route", "{path}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
    }
    assert!(app.seen().is_empty());
    gw.wait_for_log("status=404", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn traversal_and_encoded_slashes_are_400() {
    let app = backend::echo().await;
    let gw = gateway(BIN).route("abc", app.url()).start().await;
    let cases = [
        ("/service/abc/../admin", "dot_segment_in_path"),
        ("/service/abc/x/%2e%2e/y", "dot_segment_in_path"),
        ("/service/abc/./x", "dot_segment_in_path"),
        ("/service/abc%2Fdef/x", "encoded_slash_in_route"),
    ];
    for (path, error) in cases {
        let request = format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
        let raw = raw_exchange(gw.addr(), request.as_bytes()).await;
        assert!(raw.starts_with("HTTP/1.1 400"), "{path}: {raw}");
        assert!(
            raw.contains(&format!("\"error\":\"{error}\"")),
            "{path}: {raw}"
        );
    }
    assert!(app.seen().is_empty());
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let app = backend::echo().await;
    let gw = gateway(BIN)
        .route("abc", app.url())
        .env("ROUTER__HTTP__MAX_HEADER_BYTES", "8192")
        .start()
        .await;
    let big = "x".repeat(10_000);
    let request = format!(
        "GET /service/abc/ HTTP/1.1\r\nHost: gw\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"
    );
    let raw = raw_exchange(gw.addr(), request.as_bytes()).await;
    assert!(raw.starts_with("HTTP/1.1 431"), "{raw}");
    assert!(raw.contains("\"error\":\"headers_too_large\""), "{raw}");
    // Far past the limit, hyper's own parser refuses it before the gateway sees it.
    let huge = "x".repeat(100_000);
    let request = format!("GET /service/abc/ HTTP/1.1\r\nHost: gw\r\nX-Big: {huge}\r\n\r\n");
    let raw = raw_exchange(gw.addr(), request.as_bytes()).await;
    assert!(raw.starts_with("HTTP/1.1 431"), "{raw}");
    assert!(app.seen().is_empty());
}

#[tokio::test]
async fn health_and_readiness_answer_in_standalone_mode() {
    let gw = gateway(BIN).start().await;
    let health = client(gw.addr()).get("/_gateway/health").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["status"], "ok");
    let ready = client(gw.addr()).get("/_gateway/ready").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.json()["routes"], 0);
}
