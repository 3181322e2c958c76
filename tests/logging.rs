//! Log lines are written in batches: a request's line waits for the batch, a warning goes
//! out at once, and nothing is lost when the gateway exits.

use std::time::Duration;

use gateway_testkit::{backend, client, gateway};
use http::StatusCode;

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");

#[tokio::test]
async fn lines_wait_for_their_batch_warnings_do_not_and_exit_writes_the_rest() {
    let app = backend::echo().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut gw = gateway(BIN)
        .route("app", app.url())
        .route("dead", dead)
        .env("ROUTER__LOG_FLUSH_MS", "10000")
        .start()
        .await;
    // The start-up warning about standalone mode is written at once.
    gw.wait_for_log("requests are not authenticated", Duration::from_secs(5))
        .await;

    let reply = client(gw.addr()).get("/service/app/batched").await;
    assert_eq!(reply.status, StatusCode::OK);
    // A 502 is logged as a warning: it goes out at once, with every line before it.
    let reply = client(gw.addr()).get("/service/dead/urgent").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    gw.wait_for_log("path=\"/service/dead/urgent\"", Duration::from_secs(5))
        .await;
    assert!(gw.logs().contains("path=\"/service/app/batched\""));

    // Nothing urgent since: this line waits for the batch, which is 10 s away.
    let reply = client(gw.addr()).get("/service/app/held").await;
    assert_eq!(reply.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!gw.logs().contains("/service/app/held"), "{}", gw.logs());

    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0));
    let logs = gw.logs();
    assert!(logs.contains("path=\"/service/app/held\""), "{logs}");
    assert!(logs.contains("drained; exiting"), "{logs}");
}
