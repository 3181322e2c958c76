//! Connection limits: the cap on client connections answers one too many with a 503 at
//! once, running out of file descriptors is met the same way, and the open-file limit is
//! raised at start.

use std::time::Duration;

use futures_util::future::join_all;
use gateway_testkit::client::{KeptAlive, kept_alive, websocket};
use gateway_testkit::process::GatewayProcess;
use gateway_testkit::wait::eventually;
use gateway_testkit::{backend, gateway};

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");

/// Longer than any answer takes: a refusal must come, not hang until the client gives up.
const PROMPTLY: Duration = Duration::from_secs(5);

/// `count` connections to `gw`, each having been answered 200 once.
async fn served_connections(gw: &GatewayProcess, count: usize) -> Vec<KeptAlive> {
    let mut connections = Vec::with_capacity(count);
    for _ in 0..count {
        let mut connection = kept_alive(gw.addr()).await.unwrap();
        let reply = connection.get("/service/demo/").await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.head);
        connections.push(connection);
    }
    connections
}

/// Asserts that a new connection is answered with the gateway's 503 at once and closed.
async fn assert_refused(gw: &GatewayProcess) {
    let mut extra = kept_alive(gw.addr()).await.unwrap();
    let reply = tokio::time::timeout(PROMPTLY, extra.get("/service/demo/"))
        .await
        .expect("the refusal comes at once")
        .expect("the refusal is a whole response");
    assert_eq!(reply.status, 503, "{}", reply.head);
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(reply.header("retry-after"), Some("1"));
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["error"], "too_many_connections");
    assert!(
        extra.closed_within(PROMPTLY).await,
        "the refused connection is closed"
    );
}

/// Whether a new connection is served `path` with a 200 right now.
async fn served_now(gw: &GatewayProcess, path: &str) -> bool {
    let Ok(mut connection) = kept_alive(gw.addr()).await else {
        return false;
    };
    connection
        .get(path)
        .await
        .is_ok_and(|reply| reply.status == 200)
}

#[tokio::test]
async fn connections_beyond_the_cap_get_a_503_at_once_and_room_is_made_when_one_closes() {
    let app = backend::echo().await;
    let gw = gateway(BIN)
        .route("demo", app.url())
        .env("ROUTER__HTTP__MAX_CONNECTIONS", "20")
        .start()
        .await;
    // The start's health probe holds a place until the gateway sees it closed.
    gw.idle_fds().await;
    let mut open = served_connections(&gw, 20).await;
    for _ in 0..5 {
        assert_refused(&gw).await;
    }
    for connection in &mut open {
        let again = connection.get("/service/demo/").await.unwrap();
        assert_eq!(again.status, 200, "an open connection is still served");
    }

    drop(open.pop());
    let room = eventually(PROMPTLY, || served_now(&gw, "/service/demo/")).await;
    assert!(room, "a new connection is served once one has closed");
    drop(open);
    let room = eventually(PROMPTLY, || served_now(&gw, "/_gateway/metrics")).await;
    assert!(room, "the metrics page is served once there is room");
    assert!(gw.metric("clearml_gateway_connections_refused_total").await >= 5.0);
    assert_eq!(gw.metric("clearml_gateway_max_connections").await, 20.0);
    let warnings = gw.logs().matches("client connections at the cap").count();
    assert_eq!(warnings, 1, "one warning for the burst:\n{}", gw.logs());
}

#[tokio::test]
async fn a_websocket_holds_its_connections_place_under_the_cap_until_it_closes() {
    let (app, _) = backend::websocket_echo().await;
    let gw = gateway(BIN)
        .route("demo", app.url())
        .env("ROUTER__HTTP__MAX_CONNECTIONS", "2")
        .start()
        .await;
    // The start's health probe holds a place until the gateway sees it closed.
    gw.idle_fds().await;
    let mut first = websocket(gw.addr(), "/service/demo/ws").await;
    let _second = websocket(gw.addr(), "/service/demo/ws").await;
    let mut extra = kept_alive(gw.addr()).await.unwrap();
    let reply = tokio::time::timeout(PROMPTLY, extra.get("/service/demo/"))
        .await
        .expect("the refusal comes at once")
        .unwrap();
    assert_eq!(reply.status, 503);

    first.close(None).await.unwrap();
    drop(first);
    let freed = eventually(PROMPTLY, || served_now(&gw, "/_gateway/metrics")).await;
    assert!(freed, "the closed WebSocket gave its place back");
}

#[tokio::test]
async fn out_of_file_descriptors_new_connections_get_a_503_instead_of_hanging() {
    const LIMIT: u64 = 64;
    let app = backend::echo().await;
    let gw = gateway(BIN)
        .route("demo", app.url())
        .env("ROUTER__HTTP__MAX_CONNECTIONS", "1000")
        .open_files_limit(LIMIT, LIMIT)
        .start()
        .await;
    assert_eq!(gw.open_files_soft_limit(), LIMIT);
    // As many connections as the gateway has descriptors in all, sending nothing: those
    // accepted are held open, and the rest must be answered rather than left waiting. A
    // refusal comes at once; the wait is long so that a busy machine's slow refusal is not
    // taken for a held connection (whose descriptor would then be free again).
    let mut connections = Vec::new();
    for _ in 0..LIMIT {
        connections.push(kept_alive(gw.addr()).await.unwrap());
    }
    let answers = join_all(connections.into_iter().map(|mut connection| async move {
        let answer = tokio::time::timeout(Duration::from_secs(3), connection.reply()).await;
        (connection, answer.ok())
    }))
    .await;
    let mut held = Vec::new();
    let mut refused = 0;
    for (connection, answer) in answers {
        match answer {
            None => held.push(connection),
            Some(reply) => {
                let reply = reply.expect("the refusal is a whole response");
                assert_eq!(reply.status, 503, "{}", reply.head);
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "every connection was accepted");
    assert!(
        held.len() > 4,
        "only {} connections were accepted",
        held.len()
    );
    for _ in 0..3 {
        let mut extra = kept_alive(gw.addr()).await.unwrap();
        let reply = tokio::time::timeout(PROMPTLY, extra.reply()).await;
        let reply = reply
            .unwrap_or_else(|_| panic!("no refusal; fds {} log:\n{}", gw.open_fds(), gw.logs()))
            .unwrap();
        assert_eq!(reply.status, 503);
    }

    held.truncate(held.len() - 4);
    let room = eventually(PROMPTLY, || served_now(&gw, "/service/demo/")).await;
    assert!(room, "a new connection is served once some have closed");
    let warnings = gw.logs().matches("out of file descriptors").count();
    assert_eq!(warnings, 1, "one warning for the burst:\n{}", gw.logs());
}

#[tokio::test]
async fn the_open_file_limit_is_raised_to_the_hard_limit_at_start() {
    let app = backend::echo().await;
    let gw = gateway(BIN)
        .route("demo", app.url())
        .open_files_limit(256, 4096)
        .start()
        .await;
    assert_eq!(gw.open_files_soft_limit(), 4096);
    gw.wait_for_log("raised the open-file limit", PROMPTLY)
        .await;
    let logs = gw.logs();
    let line = logs
        .lines()
        .find(|line| line.contains("raised the open-file limit"))
        .unwrap();
    assert!(line.contains("open_file_limit=4096"), "{line}");
    assert!(line.contains("raised_from=256"), "{line}");
    // Half the limit, by default.
    assert!(line.contains("max_connections=2048"), "{line}");
    assert_eq!(gw.metric("clearml_gateway_max_connections").await, 2048.0);
}
