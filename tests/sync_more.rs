//! The sync's timing and its corner cases: how soon a task is served and dropped, backoff,
//! queues that appear later, a token refused mid-run, a steady state on an older server, and
//! an address that is not ClearML.

use std::time::{Duration, Instant};

use gateway_testkit::clearml::{FakeClearml, Fault, task};
use gateway_testkit::wait::eventually;
use gateway_testkit::{backend, client, gateway};
use http::StatusCode;

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");

#[tokio::test]
async fn a_task_is_served_and_dropped_within_about_one_poll_interval() {
    let poll = Duration::from_millis(1000);
    let app = backend::echo().await;
    let server = FakeClearml::start().await;
    let token = server.token_for(&server.add_user("alice"));
    let gw = gateway(BIN)
        .clearml(&server)
        .env("ROUTER__SYNC__POLL_INTERVAL_MS", "1000")
        .start()
        .await;
    gw.wait_ready(Duration::from_secs(10)).await;

    let asked = Instant::now();
    let id = server.add_task(
        task()
            .in_progress()
            .http_endpoint("127.0.0.1", app.addr().port()),
    );
    let path = format!("/service/{id}/");
    let served = eventually(Duration::from_secs(10), || async {
        server.runtime(&id).contains_key("endpoint")
            && client(gw.addr()).bearer(&token).get(&path).await.status == StatusCode::OK
    })
    .await;
    let live_after = asked.elapsed();
    assert!(served);
    // A new endpoint waits at most one interval for the next poll; allow a second one for
    // a loaded machine, not more.
    assert!(
        live_after < poll * 2,
        "live and published after {live_after:?}"
    );

    server.set_status(&id, "stopped");
    let stopped = Instant::now();
    let gone = eventually(Duration::from_secs(10), || async {
        client(gw.addr()).bearer(&token).get(&path).await.status == StatusCode::NOT_FOUND
    })
    .await;
    let gone_after = stopped.elapsed();
    assert!(gone);
    assert!(gone_after < poll * 2, "route gone after {gone_after:?}");
    eprintln!("live after {live_after:?}, gone after {gone_after:?} (poll interval {poll:?})");
}

#[tokio::test]
async fn retries_back_off_up_to_the_cap() {
    let server = FakeClearml::start().await;
    let gw = gateway(BIN)
        .clearml(&server)
        .env("ROUTER__SYNC__MAX_BACKOFF_MS", "800")
        .start()
        .await;
    gw.wait_ready(Duration::from_secs(10)).await;
    server.set_outage(Some(Fault::Status(503)));
    let mut seen = Vec::new();
    let mut last = server.calls("tasks.get_all");
    let started = Instant::now();
    while seen.len() < 7 && started.elapsed() < Duration::from_secs(20) {
        let now = server.calls("tasks.get_all");
        if now != last {
            seen.push(Instant::now());
            last = now;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen.len(), 7, "the gateway keeps trying");
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1] - w[0]).collect();
    // 200 ms polls double: 400, 800, then the 800 ms cap.
    assert!(
        gaps[gaps.len() - 1] >= Duration::from_millis(600),
        "backed off: {gaps:?}"
    );
    assert!(
        gaps.iter().all(|g| *g < Duration::from_millis(1500)),
        "capped: {gaps:?}"
    );
}

#[tokio::test]
async fn a_queue_created_after_start_is_picked_up() {
    let app = backend::echo().await;
    let server = FakeClearml::start().await;
    let gw = gateway(BIN)
        .clearml(&server)
        .env("LISTEN_QUEUE_NAME", "late-queue")
        .start()
        .await;
    gw.wait_for_log("late-queue", Duration::from_secs(10)).await;
    let queue = server.add_queue("late-queue");
    let id = server.add_task(
        task()
            .in_progress()
            .queue(&queue)
            .http_endpoint("127.0.0.1", app.addr().port()),
    );
    let written = eventually(Duration::from_secs(10), || async {
        server.runtime(&id).contains_key("endpoint")
    })
    .await;
    assert!(written, "{}", gw.logs());
    assert!(gw.logs().contains("queue now exists"), "{}", gw.logs());
}

#[tokio::test]
async fn a_token_refused_mid_run_is_renewed_without_an_outage() {
    let app = backend::echo().await;
    let server = FakeClearml::start().await;
    let gw = gateway(BIN).clearml(&server).start().await;
    gw.wait_ready(Duration::from_secs(10)).await;
    server.invalidate_tokens();
    let id = server.add_task(
        task()
            .in_progress()
            .http_endpoint("127.0.0.1", app.addr().port()),
    );
    let written = eventually(Duration::from_secs(10), || async {
        server.runtime(&id).contains_key("endpoint")
    })
    .await;
    assert!(written, "{}", gw.logs());
    assert_eq!(server.calls("auth.login"), 2);
    assert!(!gw.logs().contains("ClearML is failing"), "{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_state_on_an_older_server_makes_no_writes_either() {
    let app = backend::echo().await;
    let server = FakeClearml::builder().api_version("2.31").start().await;
    let ids: Vec<String> = (0..100)
        .map(|_| {
            server.add_task(
                task()
                    .in_progress()
                    .http_endpoint("127.0.0.1", app.addr().port()),
            )
        })
        .collect();
    let gw = gateway(BIN).clearml(&server).start().await;
    let all_written = eventually(Duration::from_secs(30), || async {
        ids.iter()
            .all(|id| server.runtime(id).contains_key("browser_endpoint"))
    })
    .await;
    assert!(all_written, "{}", gw.logs());
    // Each write reads the runtime back after the edit: wait until every job has finished.
    let jobs_done = eventually(Duration::from_secs(10), || async {
        let page = client(gw.addr()).get("/_gateway/metrics").await.text();
        page.contains("clearml_gateway_writebacks_total{result=\"ok\"} 100\n")
    })
    .await;
    assert!(jobs_done, "{}", gw.logs());
    assert_eq!(
        server.calls("tasks.edit"),
        100,
        "one read-modify-write per task"
    );
    server.reset_calls();
    let polled = eventually(Duration::from_secs(10), || async {
        server.requests("tasks.get_all").len() >= 5
    })
    .await;
    assert!(polled);
    assert_eq!(server.writes(), 0);
    let reads: Vec<_> = server
        .requests("tasks.get_all")
        .into_iter()
        .filter(|body| body["only_fields"] == serde_json::json!(["runtime"]))
        .collect();
    assert!(reads.is_empty(), "no task was read for a write: {reads:?}");
}

#[tokio::test]
async fn an_address_that_is_not_clearml_stops_the_gateway_at_once() {
    let not_clearml = backend::echo().await;
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port().to_string();
    drop(probe);
    let server = FakeClearml::start().await;
    let (status, output) = gateway(BIN)
        .clearml(&server)
        .env("CLEARML_API_HOST", not_clearml.url())
        .env("ROUTER_URL", "http://gw.example")
        .env("ROUTER__WEBSERVER__SERVER_HOST", "127.0.0.1")
        .env("ROUTER__WEBSERVER__SERVER_PORT", port)
        .run(&[])
        .await;
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.contains("does not answer as a ClearML API server"),
        "{output}"
    );
    assert!(output.contains("check CLEARML_API_HOST"), "{output}");
}
