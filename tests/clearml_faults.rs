//! ClearML failing under a running gateway, through the built binary: down with its port
//! closed, answering 500, answering JSON that breaks off, closing the connection in the
//! middle of an answer, slow beyond the request timeout and slow within it; and TCP
//! sessions that go on while it is down.
//!
//! Each story is the same: a task is routed; ClearML fails; the route keeps serving and the
//! gateway says once that ClearML is failing, and why; a task starts meanwhile; ClearML
//! comes back, and the new task is routed and gets its endpoint without anyone's help.

use std::time::Duration;

use gateway_testkit::backend::{self, Backend};
use gateway_testkit::clearml::{FakeClearml, Fault, task};
use gateway_testkit::client::tcp_round_trip;
use gateway_testkit::process::{GatewayProcess, free_range};
use gateway_testkit::wait::eventually;
use gateway_testkit::{client, gateway};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");

/// A gateway in ClearML mode with one task routed, and a user whose token it has checked.
struct Running {
    app: Backend,
    server: FakeClearml,
    gw: GatewayProcess,
    token: String,
    routed: String,
}

impl Running {
    async fn start(request_timeout_ms: u64) -> Self {
        let app = backend::echo().await;
        let server = FakeClearml::start().await;
        let token = server.token_for(&server.add_user("alice"));
        let routed = server.add_task(
            task()
                .in_progress()
                .http_endpoint("127.0.0.1", app.addr().port()),
        );
        let gw = gateway(BIN)
            .clearml(&server)
            .env("ROUTER__SYNC__MAX_BACKOFF_MS", "800")
            .env(
                "ROUTER__SYNC__REQUEST_TIMEOUT_MS",
                request_timeout_ms.to_string(),
            )
            .start()
            .await;
        gw.wait_ready(Duration::from_secs(10)).await;
        let running = Self {
            app,
            server,
            gw,
            token,
            routed,
        };
        assert_eq!(
            running.status_of(&running.routed.clone()).await,
            StatusCode::OK
        );
        running
    }

    async fn status_of(&self, task: &str) -> StatusCode {
        let path = format!("/service/{task}/");
        client(self.gw.addr())
            .bearer(&self.token)
            .get(&path)
            .await
            .status
    }

    /// Waits until the gateway has said ClearML is failing; checks the line names `cause`
    /// and the routed task still answers; starts a task meanwhile and returns its id.
    async fn fails_with(&self, cause: &str) -> String {
        self.gw
            .wait_for_log("ClearML is failing", Duration::from_secs(10))
            .await;
        let logs = self.gw.logs();
        let line = logs
            .lines()
            .find(|l| l.contains("ClearML is failing"))
            .unwrap_or_default();
        assert!(line.contains(cause), "the cause is named: {line}");
        eprintln!("the gateway logged: {line}");
        assert_eq!(
            self.status_of(&self.routed).await,
            StatusCode::OK,
            "the last good table keeps serving"
        );
        self.server.add_task(
            task()
                .in_progress()
                .http_endpoint("127.0.0.1", self.app.addr().port()),
        )
    }

    /// Once ClearML answers again, `meanwhile` gets its endpoint and its route, and the
    /// outage was logged once as it began and once as it ended.
    async fn recovers_with(&self, meanwhile: &str) {
        let routed = eventually(Duration::from_secs(15), || async {
            self.server.runtime(meanwhile).contains_key("endpoint")
                && self.status_of(meanwhile).await == StatusCode::OK
        })
        .await;
        assert!(routed, "{}", self.gw.logs());
        self.gw
            .wait_for_log("sync resumed", Duration::from_secs(5))
            .await;
        let logs = self.gw.logs();
        assert_eq!(logs.matches("ClearML is failing").count(), 1, "{logs}");
        assert_eq!(logs.matches("sync resumed").count(), 1, "{logs}");
        assert_eq!(self.status_of(&self.routed).await, StatusCode::OK);
    }

    /// Keeps `fault` on every call until the gateway has tried three more times.
    async fn outage(&self, fault: Fault, cause: &str) -> String {
        self.server.set_outage(Some(fault));
        let meanwhile = self.fails_with(cause).await;
        self.keeps_trying().await;
        self.server.recover();
        meanwhile
    }

    async fn keeps_trying(&self) {
        let calls = self.server.calls("tasks.get_all");
        let retried = eventually(Duration::from_secs(10), || async {
            self.server.calls("tasks.get_all") >= calls + 3
        })
        .await;
        assert!(retried, "the gateway keeps trying");
        assert_eq!(self.status_of(&self.routed).await, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearml_down_with_its_port_closed() {
    let running = Running::start(5_000).await;
    running.server.go_down().await;
    let refused =
        tokio::net::TcpStream::connect(running.server.url().trim_start_matches("http://"))
            .await
            .is_err();
    assert!(refused, "the port is closed");
    let meanwhile = running.fails_with("Connection refused").await;
    running.server.come_back().await;
    running.recovers_with(&meanwhile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_outage_of_changing_kinds_is_logged_once() {
    let running = Running::start(5_000).await;
    running.server.set_outage(Some(Fault::Status(503)));
    let meanwhile = running.fails_with("failed with 503/0").await;
    for fault in [Fault::Garbage, Fault::Drop] {
        running.server.set_outage(Some(fault));
        running.keeps_trying().await;
    }
    running.server.recover();
    running.recovers_with(&meanwhile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearml_answering_500() {
    let running = Running::start(5_000).await;
    let meanwhile = running
        .outage(
            Fault::Status(500),
            "failed with 500/0: general server error",
        )
        .await;
    running.recovers_with(&meanwhile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearml_answering_json_that_breaks_off() {
    let running = Running::start(5_000).await;
    let meanwhile = running
        .outage(
            Fault::InvalidJson,
            "is not its API envelope: EOF while parsing",
        )
        .await;
    running.recovers_with(&meanwhile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearml_closing_the_connection_mid_answer() {
    let running = Running::start(5_000).await;
    let meanwhile = running
        .outage(
            Fault::CutMidAnswer,
            "end of file before message length reached",
        )
        .await;
    running.recovers_with(&meanwhile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearml_slower_than_the_request_timeout() {
    let running = Running::start(1_000).await;
    running.server.set_delay(Duration::from_secs(2));
    let meanwhile = running.fails_with("timed out").await;
    running.server.set_delay(Duration::ZERO);
    running.recovers_with(&meanwhile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearml_taking_seconds_within_the_request_timeout_is_waited_for() {
    let running = Running::start(10_000).await;
    running.server.set_delay(Duration::from_millis(1500));
    let slow_task = running.server.add_task(
        task()
            .in_progress()
            .http_endpoint("127.0.0.1", running.app.addr().port()),
    );
    let routed = eventually(Duration::from_secs(20), || async {
        running.server.runtime(&slow_task).contains_key("endpoint")
            && running.status_of(&slow_task).await == StatusCode::OK
    })
    .await;
    assert!(routed, "{}", running.gw.logs());
    assert_eq!(
        running.status_of(&running.routed).await,
        StatusCode::OK,
        "requests never wait for a poll"
    );
    assert!(
        !running.gw.logs().contains("ClearML is failing"),
        "a slow answer within the timeout is no failure:\n{}",
        running.gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_sessions_keep_their_ports_while_clearml_is_down() {
    let ssh = backend::tcp_echo().await;
    let server = FakeClearml::start().await;
    let session = server.add_task(task().in_progress().tcp_endpoint(
        None,
        "127.0.0.1",
        ssh.addr().port(),
        true,
    ));
    let range = free_range(2);
    let gw = gateway(BIN)
        .clearml(&server)
        .tcp_sessions(&range)
        .start()
        .await;
    let placed = eventually(Duration::from_secs(10), || async {
        server
            .runtime(&session)
            .contains_key("upstream_task_address")
    })
    .await;
    assert!(placed, "{}", gw.logs());
    let port = server.runtime(&session)["external_tcp_port"]
        .as_u64()
        .unwrap() as u16;
    let mut open = TcpStream::connect(("127.0.0.1", port)).await.unwrap();

    server.go_down().await;
    gw.wait_for_log("ClearML is failing", Duration::from_secs(10))
        .await;
    assert_eq!(tcp_round_trip(port, b"still here").await, b"still here");
    open.write_all(b"and this one").await.unwrap();
    let mut echoed = [0u8; 12];
    open.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"and this one", "an open session goes on");

    server.come_back().await;
    gw.wait_for_log("sync resumed", Duration::from_secs(15))
        .await;
    assert_eq!(tcp_round_trip(port, b"after").await, b"after");
    assert_eq!(
        server.runtime(&session)["external_tcp_port"],
        u64::from(port),
        "the same port"
    );
}
