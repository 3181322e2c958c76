//! Client connections: kept alive between requests, closed when idle, and cut when a
//! request head trickles in too slowly.

use std::time::{Duration, Instant};

use gateway_testkit::{backend, gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");

/// Reads until the peer closes; returns what was read and how long the close took.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut received)).await;
    assert!(
        read.is_ok(),
        "the gateway kept the connection open past {limit:?}"
    );
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_keep_alive_connection_serves_several_requests_then_closes_when_idle() {
    let app = backend::echo().await;
    let gw = gateway(BIN)
        .route("abc", app.url())
        .env("ROUTER__HTTP__IDLE_TIMEOUT_MS", "400")
        .start()
        .await;
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    let request = b"GET /service/abc/ HTTP/1.1\r\nHost: gw\r\n\r\n";
    for _ in 0..3 {
        stream.write_all(request).await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
    }
    let (rest, waited) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(rest.is_empty(), "{rest}");
    assert!(
        waited >= Duration::from_millis(300),
        "closed after {waited:?}, before the idle timeout"
    );
    assert_eq!(
        app.connections(),
        1,
        "the upstream connection was reused too"
    );
}

#[tokio::test]
async fn a_request_head_that_trickles_in_is_cut_at_the_header_timeout() {
    let app = backend::echo().await;
    let gw = gateway(BIN)
        .route("abc", app.url())
        .env("ROUTER__HTTP__CLIENT_HEADER_TIMEOUT_MS", "300")
        .start()
        .await;
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    stream
        .write_all(b"GET /service/abc/ HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
        .await
        .unwrap();
    let (_, waited) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}"
    );
    assert!(app.seen().is_empty());
}

#[tokio::test]
async fn an_http_1_0_upstream_does_not_end_the_clients_keep_alive() {
    let app = backend::fixed(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello").await;
    let gw = gateway(BIN).route("old", app.url()).start().await;
    let stream = TcpStream::connect(gw.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..2 {
        let request = http::Request::get("/service/old/")
            .header("host", "gw")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender
            .send_request(request)
            .await
            .expect("the connection stays open");
        assert_eq!(response.version(), http::Version::HTTP_11);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap();
        assert_eq!(body.to_bytes(), "hello");
    }
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_too() {
    let app = backend::echo().await;
    let gw = gateway(BIN)
        .route("abc", app.url())
        .env("ROUTER__HTTP__IDLE_TIMEOUT_MS", "300")
        .start()
        .await;
    let stream = TcpStream::connect(gw.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let driver = tokio::spawn(conn);
    let request = http::Request::get(format!("http://{}/service/abc/", gw.addr()))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    drop(response);
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), driver).await;
    assert!(
        closed.is_ok(),
        "the HTTP/2 connection stayed open while idle"
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn an_upstream_that_closes_its_kept_alive_connection_costs_no_request() {
    // HTTP/1.1 without `Connection: close`, so the gateway keeps the connection for the next
    // request, but the app closes it right after answering.
    let app = backend::fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let gw = gateway(BIN).route("flaky", app.url()).start().await;
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    for round in 0..20 {
        stream
            .write_all(b"GET /service/flaky/ HTTP/1.1\r\nHost: gw\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 200 OK"), "round {round}: {head}");
        assert!(head.ends_with("ok"), "round {round}: {head}");
    }
}
