//! Several gateways on one tenant, and a ClearML server that goes away and comes back.

use std::time::Duration;

use gateway_testkit::clearml::{FakeClearml, Fault, task};
use gateway_testkit::wait::eventually;
use gateway_testkit::{backend, client, gateway};
use http::StatusCode;

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_route_and_write_only_their_own_queues_tasks() {
    let app = backend::echo().await;
    let server = FakeClearml::start().await;
    let token = server.token_for(&server.add_user("alice"));
    let queues: Vec<String> = ["queue1", "queue2", "queue3", "queue4", "queue5"]
        .iter()
        .map(|name| server.add_queue(name))
        .collect();
    let tasks: Vec<String> = queues
        .iter()
        .map(|queue| {
            server.add_task(
                task()
                    .in_progress()
                    .queue(queue)
                    .http_endpoint("127.0.0.1", app.addr().port()),
            )
        })
        .collect();
    let a = gateway(BIN)
        .clearml(&server)
        .env("ROUTER_NAME", "router-a")
        .env("LISTEN_QUEUE_NAME", "queue1,queue2")
        .start()
        .await;
    let b = gateway(BIN)
        .clearml(&server)
        .env("ROUTER_NAME", "router-b")
        .env("LISTEN_QUEUE_NAME", "queue3 queue4 no-such-queue")
        .start()
        .await;
    let written = eventually(Duration::from_secs(10), || async {
        tasks[..4]
            .iter()
            .all(|t| server.runtime(t).contains_key("endpoint"))
    })
    .await;
    assert!(written, "{}\n{}", a.logs(), b.logs());

    let a_url = format!("http://{}/service/", a.addr());
    let b_url = format!("http://{}/service/", b.addr());
    for (i, task) in tasks.iter().enumerate() {
        let endpoint = server.runtime(task).get("endpoint").cloned();
        let owner = match i {
            0 | 1 => Some(&a_url),
            2 | 3 => Some(&b_url),
            _ => None,
        };
        match owner {
            Some(url) => assert_eq!(endpoint.unwrap(), format!("{url}{task}/").as_str()),
            None => assert!(endpoint.is_none(), "queue5's task belongs to no gateway"),
        }
        let (on_a, on_b) = (
            client(a.addr())
                .bearer(&token)
                .get(&format!("/service/{task}/"))
                .await
                .status,
            client(b.addr())
                .bearer(&token)
                .get(&format!("/service/{task}/"))
                .await
                .status,
        );
        let expected = |mine: bool| {
            if mine {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            }
        };
        assert_eq!(on_a, expected(i < 2), "task {i} on router-a");
        assert_eq!(on_b, expected(i == 2 || i == 3), "task {i} on router-b");
    }
    assert!(
        b.logs().contains("no-such-queue"),
        "a missing queue is warned about"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_keep_serving_through_an_outage_and_sync_resumes_by_itself() {
    let app = backend::echo().await;
    let server = FakeClearml::start().await;
    let token = server.token_for(&server.add_user("alice"));
    let before = server.add_task(
        task()
            .in_progress()
            .http_endpoint("127.0.0.1", app.addr().port()),
    );
    let gw = gateway(BIN)
        .clearml(&server)
        .env("ROUTER__SYNC__MAX_BACKOFF_MS", "800")
        .env("ROUTER__SYNC__REQUEST_TIMEOUT_MS", "300")
        .start()
        .await;
    gw.wait_ready(Duration::from_secs(10)).await;
    let path = format!("/service/{before}/");
    assert_eq!(
        client(gw.addr()).bearer(&token).get(&path).await.status,
        StatusCode::OK
    );

    for fault in [Fault::Status(503), Fault::Garbage, Fault::Drop] {
        server.set_outage(Some(fault));
        let calls = server.calls("tasks.get_all");
        let failing = eventually(Duration::from_secs(10), || async {
            server.calls("tasks.get_all") >= calls + 3
        })
        .await;
        assert!(
            failing,
            "the gateway keeps trying during the outage ({fault:?})"
        );
        assert_eq!(
            client(gw.addr()).bearer(&token).get(&path).await.status,
            StatusCode::OK,
            "{fault:?}"
        );
    }
    server.set_outage(None);
    server.set_delay(Duration::from_millis(600));
    let calls = server.calls("tasks.get_all");
    let slow = eventually(Duration::from_secs(10), || async {
        server.calls("tasks.get_all") >= calls + 3
    })
    .await;
    assert!(
        slow,
        "a server slower than the request timeout counts as failing"
    );
    assert_eq!(
        client(gw.addr()).bearer(&token).get(&path).await.status,
        StatusCode::OK,
        "slow server"
    );
    server.set_delay(Duration::ZERO);
    let meanwhile = server.add_task(
        task()
            .in_progress()
            .http_endpoint("127.0.0.1", app.addr().port()),
    );
    server.recover();
    let addr = gw.addr();
    let new_path = format!("/service/{meanwhile}/");
    let reachable = eventually(Duration::from_secs(10), || {
        let new_path = new_path.clone();
        let token = token.clone();
        async move { client(addr).bearer(&token).get(&new_path).await.status == StatusCode::OK }
    })
    .await;
    assert!(reachable, "{}", gw.logs());
    gw.wait_for_log("sync resumed", Duration::from_secs(5))
        .await;
    let logs = gw.logs();
    assert_eq!(
        logs.matches("ClearML is failing").count(),
        1,
        "logged once when it starts:\n{logs}"
    );
    assert_eq!(
        logs.matches("sync resumed").count(),
        1,
        "and once when it ends:\n{logs}"
    );
}
