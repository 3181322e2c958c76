//! Several gateways on one tenant.

use std::time::Duration;

use gateway_testkit::clearml::{FakeClearml, task};
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
