//! Upstreams that fail at the transport level and clients that vanish, through the built
//! binary: what the client gets, what the gateway logs, and that nothing is left open.
//! (Refusing, never accepting, never answering, garbage and a `Content-Length` body cut
//! short are in `upstream_errors.rs`.)

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use gateway_testkit::backend::{self, Backend, ResetAt};
use gateway_testkit::client::{Client, empty, websocket};
use gateway_testkit::process::GatewayProcess;
use gateway_testkit::wait::eventually;
use gateway_testkit::{client, gateway};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use http_body_util::channel::Channel;
use hyper::body::Incoming;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");

/// Waits until the gateway holds no more file descriptors than `baseline`.
async fn fds_return_to(gw: &GatewayProcess, baseline: usize) {
    let back = eventually(Duration::from_secs(10), || async {
        gw.open_fds() <= baseline
    })
    .await;
    assert!(
        back,
        "the gateway holds {} fds, {baseline} before:\n{}",
        gw.open_fds(),
        gw.logs()
    );
}

/// Waits until the app has no connection open: its request was cancelled.
async fn app_connection_closes(app: &Backend, why: &str) {
    let closed = eventually(Duration::from_secs(10), || async {
        app.open_connections() == 0
    })
    .await;
    assert!(closed, "{why}: the app still has a connection open");
}

/// GETs `path`, expects a `200` head, and returns the body as it streams in.
async fn streaming(c: &Client, path: &str) -> Incoming {
    let response = c
        .open(c.request(Method::GET, path).body(empty()).unwrap())
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body()
}

/// GETs `path`, expects a `200` head, and reads the body to its end or its error.
async fn body_of(c: &Client, path: &str) -> Result<Bytes, hyper::Error> {
    let body = streaming(c, path).await.collect().await;
    body.map(|b| b.to_bytes())
}

#[tokio::test]
async fn an_upstream_that_resets_before_answering_is_502() {
    let on_accept = backend::resetting(ResetAt::Accept).await;
    let after_head = backend::resetting(ResetAt::Head).await;
    let gw = gateway(BIN)
        .route("accept", on_accept.url())
        .route("head", after_head.url())
        .start()
        .await;
    for route in ["accept", "head"] {
        let reply = client(gw.addr()).get(&format!("/service/{route}/")).await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{route}");
        let error = &reply.json()["error"];
        assert!(
            error == "upstream_failed" || error == "upstream_unreachable",
            "{route}: {error}"
        );
        assert!(
            !reply.text().contains("127.0.0.1"),
            "{route}: no address leaks"
        );
    }
    assert!(after_head.received().starts_with("GET / HTTP/1.1"));
    gw.wait_for_log("reset by peer", Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn an_upstream_that_resets_mid_response_ends_the_clients_response_as_an_error() {
    let app = backend::resetting(ResetAt::Body).await;
    let gw = gateway(BIN).route("cut", app.url()).start().await;
    let baseline = gw.idle_fds().await;
    for c in [client(gw.addr()), client(gw.addr()).h2c()] {
        let body = tokio::time::timeout(Duration::from_secs(10), body_of(&c, "/service/cut/"))
            .await
            .expect("the response ends, it does not hang");
        assert!(body.is_err(), "a reset body must not look whole");
    }
    gw.wait_for_log("complete=false", Duration::from_secs(5))
        .await;
    fds_return_to(&gw, baseline).await;
}

#[tokio::test]
async fn a_chunked_response_cut_short_ends_as_an_error_over_http1_and_h2() {
    let app = backend::fixed(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nwor",
    )
    .await;
    let gw = gateway(BIN).route("cut", app.url()).start().await;
    for c in [client(gw.addr()), client(gw.addr()).h2c()] {
        let body = tokio::time::timeout(Duration::from_secs(10), body_of(&c, "/service/cut/"))
            .await
            .expect("the response ends, it does not hang");
        assert!(
            body.is_err(),
            "a body without its last chunk must not look whole"
        );
    }
    let logs = gw.logs();
    let cut_lines = logs
        .lines()
        .filter(|l| l.contains("route=\"cut\"") && l.contains("complete=false"))
        .count();
    assert_eq!(cut_lines, 2, "{logs}");
}

/// Offers `total` bytes as a request body to `route`; returns how many the gateway took,
/// and the response (or the error) the client got.
async fn offer_upload(
    gw: &GatewayProcess,
    route: &str,
    total: u64,
) -> (u64, Result<(StatusCode, String), String>) {
    let taken = Arc::new(AtomicU64::new(0));
    let (mut sender, body) = Channel::<Bytes, Infallible>::new(1);
    let counter = Arc::clone(&taken);
    tokio::spawn(async move {
        let chunk = Bytes::from(vec![b'u'; 256 * 1024]);
        while counter.load(Ordering::Relaxed) < total {
            if sender.send_data(chunk.clone()).await.is_err() {
                return;
            }
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    });
    let c = client(gw.addr());
    let request = c
        .request(Method::POST, &format!("/service/{route}/upload"))
        .header("content-length", total)
        .body(body)
        .unwrap();
    let answer = async {
        let response = c.try_open(request).await.map_err(|e| format!("{e:?}"))?;
        let status = response.status();
        let body = response.into_body().collect().await;
        let text = body.map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned());
        Ok((status, text.map_err(|e| format!("{e:?}"))?))
    };
    let answer = tokio::time::timeout(Duration::from_secs(15), answer)
        .await
        .expect("the client gets an answer, it does not hang");
    (taken.load(Ordering::Relaxed), answer)
}

const OFFERED: u64 = 200 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_reads_the_body_holds_no_memory_and_times_out() {
    let app = backend::deaf(None).await;
    let gw = gateway(BIN)
        .route("deaf", app.url())
        .env("ROUTER__HTTP__RESPONSE_HEADER_TIMEOUT_MS", "1000")
        .start()
        .await;
    let baseline_fds = gw.idle_fds().await;
    let before = gw.rss_bytes();
    let (taken, answer) = offer_upload(&gw, "deaf", OFFERED).await;
    let peak = gw.peak_rss_bytes();
    eprintln!(
        "{} MiB of {} taken; RSS {} KiB before, peak {} KiB",
        taken >> 20,
        OFFERED >> 20,
        before >> 10,
        peak >> 10
    );
    let (status, body) = answer.expect("a response");
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(body.contains("upstream_timeout"), "{body}");
    assert!(
        taken < OFFERED / 4,
        "the body waits for the upstream instead of piling up: {taken} bytes taken"
    );
    assert!(
        peak < before + (16 << 20),
        "the gateway's memory stays flat: {} KiB before, peak {} KiB",
        before >> 10,
        peak >> 10
    );
    gw.wait_for_log("status=504", Duration::from_secs(5)).await;
    fds_return_to(&gw, baseline_fds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_closes_without_reading_the_body_is_502() {
    let app = backend::deaf(Some(Duration::from_millis(500))).await;
    let gw = gateway(BIN).route("deaf", app.url()).start().await;
    let baseline_fds = gw.idle_fds().await;
    let (taken, answer) = offer_upload(&gw, "deaf", OFFERED).await;
    let (status, body) = answer.expect("a response");
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("upstream_failed"), "{body}");
    assert!(taken < OFFERED / 4, "{taken} bytes taken");
    gw.wait_for_log("status=502", Duration::from_secs(5)).await;
    fds_return_to(&gw, baseline_fds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_before_the_upload_ends_is_passed_on_and_the_rest_let_go() {
    let app = backend::early_answer(
        b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo big\n",
    )
    .await;
    let gw = gateway(BIN)
        .route("early", app.url())
        .env("ROUTER__HTTP__UPSTREAM_IDLE_TIMEOUT_MS", "1000")
        .start()
        .await;
    let baseline_fds = gw.idle_fds().await;
    let (taken, answer) = offer_upload(&gw, "early", OFFERED).await;
    let (status, body) = answer.expect("a response");
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "too big\n")
    );
    assert!(taken < OFFERED / 4, "{taken} bytes taken");
    // The app's connection waits at most the upstream idle timeout for the rest to go.
    fds_return_to(&gw, baseline_fds).await;
}

#[tokio::test]
async fn a_websocket_client_that_vanishes_closes_the_tunnel_and_the_apps_connection() {
    let (app, _) = backend::websocket_echo().await;
    let gw = gateway(BIN).route("ws", app.url()).start().await;
    let baseline = gw.idle_fds().await;
    let mut ws = websocket(gw.addr(), "/service/ws/").await;
    ws.send(Message::text("hello")).await.unwrap();
    let echoed = ws.next().await.expect("a message").expect("a message");
    assert_eq!(echoed, Message::text("hello"));
    assert_eq!(gw.client_connections(), 1, "the tunnel's client side");
    drop(ws);
    fds_return_to(&gw, baseline).await;
    gw.wait_for_log("tunnel closed", Duration::from_secs(5))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_an_event_stream_cancels_the_upstream_request() {
    let app = backend::ticker(Duration::from_millis(20)).await;
    let gw = gateway(BIN).route("tokens", app.url()).start().await;
    let baseline = gw.idle_fds().await;
    let mut body = streaming(&client(gw.addr()), "/service/tokens/").await;
    for _ in 0..3 {
        let frame = body.frame().await.expect("an event").expect("an event");
        assert!(
            frame
                .data_ref()
                .is_some_and(|d| d.starts_with(b"data: tick"))
        );
    }
    assert_eq!(app.open_connections(), 1);
    drop(body);
    app_connection_closes(
        &app,
        "the app's connection is closed: its request is cancelled",
    )
    .await;
    fds_return_to(&gw, baseline).await;
    gw.wait_for_log("route=\"tokens\" status=200", Duration::from_secs(5))
        .await;
    assert!(gw.logs().contains("complete=false"), "{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_a_big_download_cancels_the_upstream_request() {
    let app = backend::source(64 << 30).await;
    let gw = gateway(BIN).route("big", app.url()).start().await;
    let baseline = gw.idle_fds().await;
    let mut body = streaming(&client(gw.addr()), "/service/big/").await;
    let mut received = 0;
    while received < 1 << 20 {
        let frame = body.frame().await.expect("data").expect("data");
        received += frame.data_ref().map_or(0, Bytes::len);
    }
    drop(body);
    app_connection_closes(&app, "the download from the app stops").await;
    fds_return_to(&gw, baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_stream_reset_cancels_its_upstream_request_and_keeps_the_connection() {
    let app = backend::ticker(Duration::from_millis(20)).await;
    let echo = backend::echo().await;
    let gw = gateway(BIN)
        .route("tokens", app.url())
        .route("echo", echo.url())
        .start()
        .await;
    let stream = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = |path: &str| {
        client(gw.addr())
            .h2c()
            .request(Method::GET, path)
            .body(empty())
            .unwrap()
    };
    let response = sender
        .send_request(request("/service/tokens/"))
        .await
        .unwrap();
    let mut body = response.into_body();
    let frame = body.frame().await.expect("an event").expect("an event");
    assert!(
        frame
            .data_ref()
            .is_some_and(|d| d.starts_with(b"data: tick"))
    );
    drop(body);
    app_connection_closes(&app, "the reset stream's upstream request is cancelled").await;
    let reply = sender
        .send_request(request("/service/echo/"))
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK, "the connection serves on");
}
