//! Requests the gateway refuses itself, before or while forwarding: each gets its status,
//! a JSON body where a response can be written, and never reaches the upstream half-read.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use gateway_testkit::client::raw_exchange;
use gateway_testkit::{backend, client, gateway};
use http::{Method, StatusCode};
use http_body_util::channel::Channel;
use tokio::io::AsyncWriteExt;

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");

#[tokio::test]
async fn malformed_requests_are_400_and_never_reach_the_upstream() {
    let app = backend::echo().await;
    let gw = gateway(BIN).route("abc", app.url()).start().await;
    let raw = raw_exchange(gw.addr(), b"GARBAGE\r\n\r\n").await;
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    let raw = raw_exchange(
        gw.addr(),
        b"GET /service/abc/ HTTP/1.1\r\nBad Header\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(app.seen().is_empty());
}

#[tokio::test]
async fn connect_and_trace_are_405() {
    let app = backend::echo().await;
    let gw = gateway(BIN).route("abc", app.url()).start().await;
    for method in ["TRACE", "CONNECT"] {
        let request =
            format!("{method} /service/abc/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
        let raw = raw_exchange(gw.addr(), request.as_bytes()).await;
        assert!(raw.starts_with("HTTP/1.1 405"), "{method}: {raw}");
        assert!(raw.contains("method_not_allowed"), "{method}: {raw}");
    }
    assert!(app.seen().is_empty());
}

#[tokio::test]
async fn transfer_codings_other_than_chunked_are_501() {
    let app = backend::echo().await;
    let gw = gateway(BIN).route("abc", app.url()).start().await;
    let request =
        b"POST /service/abc/ HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: gzip, chunked\r\n\
        Connection: close\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
    let raw = raw_exchange(gw.addr(), request).await;
    assert!(raw.starts_with("HTTP/1.1 501"), "{raw}");
    assert!(raw.contains("unsupported_transfer_encoding"), "{raw}");
    assert!(app.seen().is_empty());
}

#[tokio::test]
async fn h2c_upgrades_are_not_tunnelled_even_in_a_list() {
    let app = backend::echo().await;
    let gw = gateway(BIN).route("abc", app.url()).start().await;
    for offer in ["h2c", "websocket, h2c", "H2C , websocket"] {
        let c = client(gw.addr());
        let request = c
            .request(Method::GET, "/service/abc/")
            .header("connection", "Upgrade, HTTP2-Settings")
            .header("upgrade", offer)
            .header("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA")
            .body(gateway_testkit::client::empty())
            .unwrap();
        let reply = c.send(request).await;
        assert_eq!(reply.status, StatusCode::OK, "{offer}");
        let headers = reply.json()["headers"].clone();
        assert!(headers.get("upgrade").is_none(), "{offer}: {headers}");
        assert!(
            headers.get("http2-settings").is_none(),
            "{offer}: {headers}"
        );
    }
}

#[tokio::test]
async fn a_body_over_the_configured_limit_is_413_declared_or_counted() {
    let app = backend::echo().await;
    let gw = gateway(BIN)
        .route("abc", app.url())
        .env("ROUTER__HTTP__MAX_BODY_BYTES", "1000")
        .start()
        .await;
    let reply = client(gw.addr())
        .post("/service/abc/", vec![b'x'; 1001])
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.json()["error"], "body_too_large");
    let reply = client(gw.addr())
        .post("/service/abc/", vec![b'x'; 1000])
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["body_length"], 1000);

    // Chunked, with no length declared: the limit is counted as the body streams.
    let (mut sender, body) = Channel::<Bytes, Infallible>::new(2);
    tokio::spawn(async move {
        for _ in 0..4 {
            if sender
                .send_data(Bytes::from(vec![b'y'; 400]))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let c = client(gw.addr());
    let reply = c
        .send(c.request(Method::POST, "/service/abc/").body(body).unwrap())
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.json()["error"], "body_too_large");
}

#[tokio::test]
async fn an_upload_that_stalls_is_408_and_not_blamed_on_the_upstream() {
    let app = backend::echo().await;
    let gw = gateway(BIN)
        .route("abc", app.url())
        .env("ROUTER__HTTP__CLIENT_BODY_TIMEOUT_MS", "300")
        .start()
        .await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    stream
        .write_all(b"POST /service/abc/ HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\nabc")
        .await
        .unwrap();
    let mut received = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut received);
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    let raw = String::from_utf8_lossy(&received);
    assert!(raw.starts_with("HTTP/1.1 408"), "{raw}");
    assert!(raw.contains("client_body_timeout"), "{raw}");
}

#[tokio::test]
async fn a_client_that_leaves_before_the_answer_gets_a_499_line() {
    let app = backend::slow(Duration::from_secs(2)).await;
    let gw = gateway(BIN).route("slow", app.url()).start().await;
    let addr = gw.addr();
    let impatient = tokio::spawn(async move { client(addr).get("/service/slow/").await });
    let arrived = gateway_testkit::wait::eventually(Duration::from_secs(5), || async {
        !app.seen().is_empty()
    })
    .await;
    assert!(arrived);
    impatient.abort();
    gw.wait_for_log("status=499", Duration::from_secs(5)).await;
    assert!(
        gw.logs().contains("route=\"slow\" status=499"),
        "{}",
        gw.logs()
    );
}
