//! Large bodies stream through the gateway with flat memory, both ways.

use std::convert::Infallible;

use bytes::Bytes;
use gateway_testkit::{backend, client, gateway};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use http_body_util::channel::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");
const GIB: u64 = 1 << 30;
const RSS_LIMIT: u64 = 64 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gib_upload_and_download_pass_with_flat_memory() {
    let sink = backend::echo().await;
    let source = backend::source(GIB).await;
    let gw = gateway(BIN)
        .route("sink", sink.url())
        .route("source", source.url())
        .start()
        .await;

    let (mut sender, body) = Channel::<Bytes, Infallible>::new(4);
    tokio::spawn(async move {
        let chunk = Bytes::from(vec![b'u'; 256 * 1024]);
        for _ in 0..GIB / chunk.len() as u64 {
            if sender.send_data(chunk.clone()).await.is_err() {
                return;
            }
        }
    });
    let c = client(gw.addr());
    let upload = c
        .request(Method::POST, "/service/sink/upload")
        .body(body)
        .unwrap();
    let reply = c.send(upload).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["body_length"], GIB);
    assert_eq!(reply.json()["headers"]["transfer-encoding"][0], "chunked");

    let download = c
        .request(Method::GET, "/service/source/big")
        .body(gateway_testkit::client::empty())
        .unwrap();
    let response = c.open(download).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.unwrap().data_ref() {
            received += data.len() as u64;
        }
    }
    assert_eq!(received, GIB);

    let peak = gw.peak_rss_bytes();
    eprintln!(
        "gateway peak RSS after 2 GiB through it: {} KiB",
        peak >> 10
    );
    assert!(
        peak < RSS_LIMIT,
        "the gateway's peak resident memory was {} MiB",
        peak >> 20
    );
}
