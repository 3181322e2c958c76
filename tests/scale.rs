//! Many connections at once through the built gateway: ten thousand idle keep-alive
//! connections held and served again, a thousand WebSockets open together.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt, stream};
use gateway_testkit::client::{KeptAlive, kept_alive, websocket};
use gateway_testkit::process::raise_open_files_limit;
use gateway_testkit::wait::eventually;
use gateway_testkit::{backend, gateway};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");

/// Connections opened at once while building up; the listen queue holds more, but a
/// handshake dropped from a full queue waits a second for its retry.
const OPENING_AT_ONCE: usize = 200;

/// Longest the build-up or the clean-up may take before the test says what was left.
const PATIENCE: Duration = Duration::from_secs(60);

const IDLE_CONNECTIONS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_keep_alive_connections_are_held_and_served_again() {
    // The test's ends and the gateway's: one descriptor each, and some to spare.
    raise_open_files_limit(IDLE_CONNECTIONS as u64 + 2_000);
    let app = backend::echo().await;
    let gw = gateway(BIN)
        .route("demo", app.url())
        .env(
            "ROUTER__HTTP__MAX_CONNECTIONS",
            IDLE_CONNECTIONS.to_string(),
        )
        // Idle for the whole test, however slow the machine.
        .env("ROUTER__HTTP__IDLE_TIMEOUT_MS", "300000")
        .env("ROUTER__HTTP__CLIENT_HEADER_TIMEOUT_MS", "300000")
        .start()
        .await;
    let before = gw.idle_fds().await;

    let mut connections: Vec<KeptAlive> = stream::iter(0..IDLE_CONNECTIONS)
        .map(|_| async {
            let mut connection = kept_alive(gw.addr()).await.expect("connect");
            let reply = connection
                .get("/service/demo/")
                .await
                .expect("a first answer");
            assert_eq!(reply.status, 200, "{}", reply.head);
            connection
        })
        .buffer_unordered(OPENING_AT_ONCE)
        .collect()
        .await;
    let held = gw.open_fds();
    assert!(
        held >= before + IDLE_CONNECTIONS,
        "the gateway holds {held} descriptors, {before} before the connections"
    );

    let again: Vec<u16> = stream::iter(connections.iter_mut())
        .map(|connection| async move {
            let reply = connection
                .get("/service/demo/")
                .await
                .expect("a second answer");
            reply.status
        })
        .buffer_unordered(OPENING_AT_ONCE)
        .collect()
        .await;
    assert_eq!(again.len(), IDLE_CONNECTIONS);
    assert!(again.iter().all(|status| *status == 200));

    drop(connections);
    // What may stay: the idle pooled connections to the app (at most 256 by default).
    let released = eventually(PATIENCE, || async { gw.open_fds() <= before + 256 }).await;
    assert!(released, "{} descriptors still open", gw.open_fds());
    assert_eq!(gw.client_connections(), 0);
}

const WEBSOCKETS: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_websockets_are_open_at_once_and_each_echoes() {
    // Each WebSocket: the client's end and the app's here, two in the gateway.
    raise_open_files_limit(2 * WEBSOCKETS as u64 + 1_000);
    let (app, _) = backend::websocket_echo().await;
    let gw = gateway(BIN).route("demo", app.url()).start().await;

    let mut sockets: Vec<_> = stream::iter(0..WEBSOCKETS)
        .map(|_| websocket(gw.addr(), "/service/demo/ws"))
        .buffer_unordered(OPENING_AT_ONCE)
        .collect()
        .await;
    let all_open = eventually(PATIENCE, || async {
        gw.metric("clearml_gateway_open_websockets").await == WEBSOCKETS as f64
    })
    .await;
    assert!(all_open, "the gateway does not count {WEBSOCKETS} tunnels");

    let echoed: Vec<bool> = stream::iter(sockets.iter_mut().enumerate())
        .map(|(n, socket)| async move {
            let text = format!("message {n}");
            socket.send(Message::text(text.clone())).await.unwrap();
            let echo = socket.next().await.unwrap().unwrap();
            echo == Message::text(text)
        })
        .buffer_unordered(OPENING_AT_ONCE)
        .collect()
        .await;
    assert_eq!(echoed.len(), WEBSOCKETS);
    assert!(
        echoed.iter().all(|ok| *ok),
        "a WebSocket echoed something else"
    );

    for socket in &mut sockets {
        socket.close(None).await.unwrap();
    }
    drop(sockets);
    let all_closed = eventually(PATIENCE, || async {
        gw.metric("clearml_gateway_open_websockets").await == 0.0
    })
    .await;
    assert!(all_closed, "tunnels are still counted open");
}
