//! Write-backs: they keep every key the task writes, and a steady state writes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gateway_testkit::clearml::{FakeClearml, task};
use gateway_testkit::wait::eventually;
use gateway_testkit::{backend, gateway};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");

/// The task edits its runtime all along: a heartbeat it rewrites, and (where the server
/// can merge) new keys of its own. After the gateway's write-back, nothing of the task's is
/// missing and the endpoint is there.
async fn keys_survive_a_task_that_keeps_writing(api_version: &str, new_keys: bool) {
    let app = backend::echo().await;
    let server = Arc::new(
        FakeClearml::builder()
            .api_version(api_version)
            .start()
            .await,
    );
    let id = server.add_task(
        task()
            .in_progress()
            .runtime(json!({"custom": "kept", "heartbeat": 0}))
            .http_endpoint("127.0.0.1", app.addr().port()),
    );
    let writing = Arc::new(AtomicBool::new(true));
    let task_side = {
        let (server, id, writing) = (Arc::clone(&server), id.clone(), Arc::clone(&writing));
        tokio::spawn(async move {
            let mut step = 0u64;
            while writing.load(Ordering::Acquire) {
                step += 1;
                server.set_runtime_key(&id, "heartbeat", json!(step));
                if new_keys {
                    server.set_runtime_key(&id, &format!("step_{step}"), json!(step));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            step
        })
    };
    let _gw = gateway(BIN).clearml(&server).start().await;
    let done = eventually(Duration::from_secs(10), || async {
        server.runtime(&id).contains_key("browser_endpoint")
    })
    .await;
    assert!(done, "no write-back: {:?}", server.runtime(&id));
    tokio::time::sleep(Duration::from_millis(300)).await;
    writing.store(false, Ordering::Release);
    let last = task_side.await.unwrap();

    let runtime = server.runtime(&id);
    assert_eq!(runtime["custom"], "kept");
    assert_eq!(runtime["_PORT"], app.addr().port());
    assert!(runtime.contains_key("endpoint"), "{runtime:?}");
    assert_eq!(runtime["heartbeat"], last, "the task's latest write stands");
    if new_keys {
        let missing: Vec<u64> = (1..=last)
            .filter(|n| !runtime.contains_key(&format!("step_{n}")))
            .collect();
        assert!(
            missing.is_empty(),
            "keys the task wrote were lost: {missing:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_survive_with_edit_runtime() {
    keys_survive_a_task_that_keeps_writing("2.34", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_survive_with_read_modify_write() {
    keys_survive_a_task_that_keeps_writing("2.31", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_state_of_1000_tasks_makes_no_writes() {
    let app = backend::echo().await;
    let server = FakeClearml::builder().api_version("2.34").start().await;
    let ids: Vec<String> = (0..1000)
        .map(|_| {
            server.add_task(
                task()
                    .in_progress()
                    .http_endpoint("127.0.0.1", app.addr().port()),
            )
        })
        .collect();
    let gw = gateway(BIN).clearml(&server).start().await;
    let all_written = eventually(Duration::from_secs(60), || async {
        ids.iter()
            .all(|id| server.runtime(id).contains_key("endpoint"))
    })
    .await;
    assert!(all_written, "{}", gw.logs());
    assert_eq!(server.writes(), 1000, "one write per task");

    server.reset_calls();
    let polled = eventually(Duration::from_secs(10), || async {
        server.calls("tasks.get_all") >= 3 * 3
    })
    .await;
    assert!(polled);
    assert_eq!(server.writes(), 0, "a steady state writes nothing");
    assert_eq!(server.calls("tasks.get_by_id"), 0);
    // 1000 tasks at 500 a page: each poll reads two full pages and the empty third that
    // ends the listing, and nothing else.
    let pages: Vec<u64> = server
        .requests("tasks.get_all")
        .iter()
        .map(|body| body["page"].as_u64().unwrap_or(u64::MAX))
        .collect();
    let first_poll = pages.iter().position(|p| *p == 0).unwrap();
    for (i, page) in pages[first_poll..].iter().enumerate() {
        assert_eq!(*page, (i % 3) as u64, "pages requested: {pages:?}");
    }
    assert_eq!(
        server.requests("tasks.get_all")[first_poll]["page_size"],
        500
    );
}
