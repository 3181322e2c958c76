//! A gateway restarted under running tasks, in ClearML mode, through the built binary:
//! SIGTERM lets the request in flight finish and refuses new connections; the new process
//! serves the HTTP routes from its first sync and the TCP sessions on their old ports; and
//! the restart writes nothing to the tasks — no key lost, none written twice. The same
//! holds after a crash (SIGKILL).

use std::ops::RangeInclusive;
use std::time::Duration;

use gateway_testkit::backend::{self, Backend, TcpEcho, tcp_echo};
use gateway_testkit::clearml::{FakeClearml, task};
use gateway_testkit::client::tcp_round_trip;
use gateway_testkit::process::{GatewayCommand, GatewayProcess, free_range};
use gateway_testkit::wait::eventually;
use gateway_testkit::{client, gateway};
use http::StatusCode;
use serde_json::{Map, Value};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_clearml-gateway");

/// Running tasks behind a gateway: one with two HTTP endpoints, one whose app takes its
/// time, one with a TCP session.
struct Tasks {
    server: FakeClearml,
    token: String,
    range: RangeInclusive<u16>,
    web: String,
    thinking: String,
    session: String,
    _app: Backend,
    slow: Backend,
    _ssh: TcpEcho,
}

impl Tasks {
    async fn start(api_version: &str) -> Self {
        let app = backend::echo().await;
        let slow = backend::slow(Duration::from_millis(1500)).await;
        let ssh = tcp_echo().await;
        let server = FakeClearml::builder()
            .api_version(api_version)
            .start()
            .await;
        let token = server.token_for(&server.add_user("alice"));
        let web = server.add_task(
            task()
                .in_progress()
                .http_endpoint("127.0.0.1", app.addr().port())
                .named_http_endpoint(Some("lab"), "127.0.0.1", app.addr().port()),
        );
        let thinking = server.add_task(
            task()
                .in_progress()
                .http_endpoint("127.0.0.1", slow.addr().port()),
        );
        let sdk_shaped = task().in_progress();
        let session =
            server.add_task(sdk_shaped.tcp_endpoint(None, "127.0.0.1", ssh.addr().port(), true));
        Self {
            server,
            token,
            range: free_range(4),
            web,
            thinking,
            session,
            _app: app,
            slow,
            _ssh: ssh,
        }
    }

    /// The same gateway each time: a fixed public URL (so the endpoints it writes do not
    /// depend on the port it got) and the same TCP session range.
    fn gateway(&self) -> GatewayCommand {
        gateway(BIN)
            .clearml(&self.server)
            .env("ROUTER_URL", "https://gw.example.com")
            .tcp_sessions(&self.range)
    }

    fn runtimes(&self) -> Vec<Map<String, Value>> {
        [&self.web, &self.thinking, &self.session]
            .map(|id| self.server.runtime(id))
            .into()
    }

    /// Starts the first gateway and waits until every write-back is done and several
    /// polls in a row write nothing; returns it and the session port it gave.
    async fn first_gateway(&self) -> (GatewayProcess, u16) {
        let gw = self.gateway().start().await;
        let server = &self.server;
        let written = eventually(Duration::from_secs(10), || async {
            server
                .runtime(&self.web)
                .contains_key("browser_endpoint__lab")
                && server
                    .runtime(&self.thinking)
                    .contains_key("browser_endpoint")
                && server
                    .runtime(&self.session)
                    .contains_key("upstream_task_address")
        })
        .await;
        assert!(written, "{}", gw.logs());
        let settled = eventually(Duration::from_secs(15), || async {
            server.reset_calls();
            let polled = eventually(Duration::from_secs(5), || async {
                server.calls("tasks.get_all") >= 5
            })
            .await;
            polled && server.writes() == 0
        })
        .await;
        assert!(settled, "the gateway keeps writing:\n{}", gw.logs());
        let port = server.runtime(&self.session)["external_tcp_port"]
            .as_u64()
            .unwrap() as u16;
        assert_eq!(tcp_round_trip(port, b"before").await, b"before");
        (gw, port)
    }

    /// SIGTERM with a request in flight: it finishes; new connections are refused; exit 0.
    async fn drain(&self, mut gw: GatewayProcess) {
        let addr = gw.addr();
        let in_flight = {
            let (token, path) = (self.token.clone(), format!("/service/{}/", self.thinking));
            tokio::spawn(async move { client(addr).bearer(&token).get(&path).await })
        };
        let arrived = eventually(Duration::from_secs(5), || async {
            !self.slow.seen().is_empty()
        })
        .await;
        assert!(arrived);
        gw.signal("TERM");
        gw.wait_for_log("shutting down", Duration::from_secs(5))
            .await;
        let refused = eventually(Duration::from_secs(5), || async {
            TcpStream::connect(addr).await.is_err()
        })
        .await;
        assert!(refused, "the listener closes at once");
        let reply = in_flight.await.unwrap();
        let answer = (reply.status, reply.text());
        assert_eq!(answer, (StatusCode::OK, "slow".to_owned()));
        assert!(gw.wait_exit(Duration::from_secs(10)).await.success());
    }

    /// A second gateway serves everything from its first sync, on the same session port,
    /// and writes nothing: the tasks' runtime is what it was.
    async fn second_gateway_changes_nothing(&self, port: u16, before: &[Map<String, Value>]) {
        let server = &self.server;
        server.reset_calls();
        let gw = self.gateway().start().await;
        gw.wait_ready(Duration::from_secs(10)).await;
        // Ready means the first sync is applied: everything is served from that moment on.
        for path in [
            format!("/service/{}/", self.web),
            format!("/service/{}__lab/", self.web),
        ] {
            let reply = client(gw.addr()).bearer(&self.token).get(&path).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}\n{}", gw.logs());
        }
        let echoed = tcp_round_trip(port, b"after").await;
        assert_eq!(echoed, b"after", "the same port");
        let polled = eventually(Duration::from_secs(10), || async {
            server.calls("tasks.get_all") >= 6
        })
        .await;
        assert!(polled, "{}", gw.logs());
        let wrote = server.writes();
        assert_eq!(wrote, 0, "the restarted gateway wrote:\n{}", gw.logs());
        assert_eq!(self.runtimes(), before, "the restart changed the runtime");
        assert_eq!(server.calls("tasks.get_by_id"), 0);
    }
}

async fn a_drained_restart_changes_nothing(api_version: &str) {
    let tasks = Tasks::start(api_version).await;
    let (first, port) = tasks.first_gateway().await;
    let before = tasks.runtimes();
    tasks.drain(first).await;
    tasks.second_gateway_changes_nothing(port, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_changes_nothing_on_the_tasks_with_read_modify_write() {
    a_drained_restart_changes_nothing("2.31").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_changes_nothing_on_the_tasks_with_edit_runtime() {
    a_drained_restart_changes_nothing("2.34").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_crash_changes_nothing_either() {
    let tasks = Tasks::start("2.31").await;
    let (mut first, port) = tasks.first_gateway().await;
    let before = tasks.runtimes();
    first.signal("KILL");
    let status = first.wait_exit(Duration::from_secs(10)).await;
    assert!(!status.success());
    tasks.second_gateway_changes_nothing(port, &before).await;
}
