//! The built `clearml-gateway` binary as a child process: configured through its real
//! environment and routes file, watched through its real logs and `/proc`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::clearml::{FakeClearml, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY};
use crate::client::{client, empty, kept_alive};
use crate::tempdir::TempDir;
use crate::wait::eventually;

/// How a gateway process is to be started.
#[derive(Debug, Clone)]
pub struct GatewayCommand {
    binary: PathBuf,
    routes: Vec<(String, String)>,
    routes_toml: Option<String>,
    env: Vec<(String, String)>,
    clearml: bool,
    open_files: Option<(u64, u64)>,
}

/// A gateway process for the binary at `binary` (pass `env!("CARGO_BIN_EXE_clearml-gateway")`).
pub fn gateway(binary: impl Into<PathBuf>) -> GatewayCommand {
    GatewayCommand {
        binary: binary.into(),
        routes: Vec::new(),
        routes_toml: None,
        env: Vec::new(),
        clearml: false,
        open_files: None,
    }
}

impl GatewayCommand {
    /// Adds a `[[route]]` to the routes file.
    pub fn route(mut self, id: &str, upstream: impl Into<String>) -> Self {
        self.routes.push((id.to_owned(), upstream.into()));
        self
    }

    /// ClearML mode against `server`, logging in with the gateway's keys; `ROUTER_URL` is
    /// the gateway's own address and ClearML is polled every 200 ms, unless set with `env`.
    pub fn clearml(mut self, server: &FakeClearml) -> Self {
        self.clearml = true;
        self.env("CLEARML_API_HOST", server.url())
            .env("CLEARML_API_ACCESS_KEY", GATEWAY_ACCESS_KEY)
            .env("CLEARML_API_SECRET_KEY", GATEWAY_SECRET_KEY)
    }

    /// Serves TCP sessions on the ports of `range`, telling tasks to reach them at
    /// 127.0.0.1.
    pub fn tcp_sessions(self, range: &std::ops::RangeInclusive<u16>) -> Self {
        self.env("TCP_ROUTER_ADDRESS", "127.0.0.1")
            .env("TCP_PORT_START", range.start().to_string())
            .env("TCP_PORT_END", range.end().to_string())
    }

    /// Sets an environment variable of the process.
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.push((name.to_owned(), value.into()));
        self
    }

    /// Starts the process with this soft and hard open-file limit (`RLIMIT_NOFILE`).
    pub fn open_files_limit(mut self, soft: u64, hard: u64) -> Self {
        self.open_files = Some((soft, hard));
        self
    }

    /// Uses `text` as the whole routes file instead of the `route`s.
    pub fn routes_toml(mut self, text: impl Into<String>) -> Self {
        self.routes_toml = Some(text.into());
        self
    }

    fn routes_text(&self) -> String {
        if let Some(text) = &self.routes_toml {
            return text.clone();
        }
        routes_toml(&self.routes)
    }

    /// Starts the gateway on a free port and waits until `/_gateway/health` answers.
    pub async fn start(self) -> GatewayProcess {
        let dir = TempDir::new("gateway");
        let routes = dir.path().join("routes.toml");
        std::fs::write(&routes, self.routes_text()).expect("write the routes file");
        // A port found free can be taken before the gateway binds it: try a few.
        for _ in 0..5 {
            let addr = free_port();
            let (mut child, logs, log_reader) = self.spawn(&routes, addr);
            if wait_healthy(&mut child, addr).await {
                return GatewayProcess {
                    child,
                    addr,
                    logs,
                    log_reader,
                    routes,
                    _dir: dir,
                };
            }
            let log = logs.lock().expect("logs").clone();
            assert!(
                log.contains("cannot listen"),
                "the gateway did not become healthy; its log:\n{log}"
            );
        }
        panic!("the gateway found no free port in five tries");
    }

    /// Starts a gateway that serves TLS and waits until it says it is listening (the plain
    /// health probe of [`start`](Self::start) cannot speak to it).
    pub async fn start_tls(self) -> GatewayProcess {
        let dir = TempDir::new("gateway");
        let routes = dir.path().join("routes.toml");
        std::fs::write(&routes, self.routes_text()).expect("write the routes file");
        let addr = free_port();
        let (mut child, logs, log_reader) = self.spawn(&routes, addr);
        let started = eventually(Duration::from_secs(20), || {
            let logs = Arc::clone(&logs);
            async move { logs.lock().expect("logs").contains("listening") }
        })
        .await;
        let exited = matches!(child.try_wait(), Ok(Some(_)));
        let log = logs.lock().expect("logs").clone();
        assert!(
            started && !exited,
            "the gateway did not start; its log:\n{log}"
        );
        GatewayProcess {
            child,
            addr,
            logs,
            log_reader,
            routes,
            _dir: dir,
        }
    }

    fn spawn(
        &self,
        routes: &Path,
        addr: SocketAddr,
    ) -> (Child, Arc<Mutex<String>>, Option<JoinHandle<()>>) {
        let mut command = Command::new(&self.binary);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("ROUTER__WEBSERVER__SERVER_HOST", addr.ip().to_string())
            .env("ROUTER__WEBSERVER__SERVER_PORT", addr.port().to_string())
            // Tests read a line as soon as it is logged; batching has its own tests.
            .env("ROUTER__LOG_FLUSH_MS", "0");
        if self.clearml {
            command
                .env("ROUTER_URL", format!("http://{addr}"))
                .env("ROUTER__SYNC__POLL_INTERVAL_MS", "200");
        } else {
            command.arg("--routes").arg(routes);
        }
        if let Some((soft, hard)) = self.open_files {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: between fork and exec only `setrlimit` runs, which is async-signal-safe,
            // on a struct copied into the closure.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the gateway binary");
        let logs = Arc::new(Mutex::new(String::new()));
        let log_reader = collect_stderr(&mut child, Arc::clone(&logs));
        (child, logs, log_reader)
    }

    /// Runs the binary with `args` (no routes file, no port) and returns its exit status
    /// and everything it printed, for tests of start-up errors and `--check-config`.
    pub async fn run(self, args: &[&str]) -> (ExitStatus, String) {
        let output = Command::new(&self.binary)
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output();
        let output = tokio::time::timeout(Duration::from_secs(20), output)
            .await
            .expect("the gateway exits")
            .expect("run the gateway binary");
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        (output.status, text)
    }
}

/// The routes file for `routes`.
pub fn routes_toml(routes: &[(String, String)]) -> String {
    routes
        .iter()
        .map(|(id, upstream)| format!("[[route]]\nid = \"{id}\"\nupstream = \"{upstream}\"\n\n"))
        .collect()
}

/// A range of `size` ports of 127.0.0.1 free now (for TCP session ranges).
pub fn free_range(size: u16) -> std::ops::RangeInclusive<u16> {
    loop {
        let start = free_port().port();
        let Some(end) = start.checked_add(size - 1) else {
            continue;
        };
        if (start..=end).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return start..=end;
        }
    }
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("find a free port");
    listener.local_addr().expect("local address")
}

/// Copies the child's stderr into `logs` line by line; the task ends when the pipe closes.
fn collect_stderr(child: &mut Child, logs: Arc<Mutex<String>>) -> Option<JoinHandle<()>> {
    let stderr = child.stderr.take()?;
    Some(tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut logs = logs.lock().expect("logs");
            logs.push_str(&line);
            logs.push('\n');
        }
    }))
}

/// A running gateway; killed when dropped.
pub struct GatewayProcess {
    child: Child,
    addr: SocketAddr,
    logs: Arc<Mutex<String>>,
    log_reader: Option<JoinHandle<()>>,
    routes: PathBuf,
    _dir: TempDir,
}

impl GatewayProcess {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the gateway is running")
    }

    /// Its routes file, to rewrite before a SIGHUP.
    pub fn routes_path(&self) -> &Path {
        &self.routes
    }

    /// Everything it has logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().expect("logs").clone()
    }

    /// Waits until its log holds `needle`; panics with the log after `timeout`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let logs = Arc::clone(&self.logs);
        let found = eventually(timeout, || {
            let logs = Arc::clone(&logs);
            async move { logs.lock().expect("logs").contains(needle) }
        })
        .await;
        assert!(
            found,
            "no {needle:?} in the gateway's log:\n{}",
            self.logs()
        );
    }

    /// Waits until `/_gateway/ready` answers 200 (the first sync applied).
    pub async fn wait_ready(&self, timeout: Duration) {
        let addr = self.addr;
        let ready = eventually(timeout, || async move {
            client(addr)
                .get("/_gateway/ready")
                .await
                .status
                .is_success()
        })
        .await;
        assert!(
            ready,
            "the gateway did not become ready; its log:\n{}",
            self.logs()
        );
    }

    /// Sends `signal` (`"TERM"`, `"INT"`, `"HUP"`).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the gateway did not exit; its log:\n{}", self.logs()))
            .expect("wait for the gateway");
        // The last lines can still be in the pipe when the process is reaped.
        if let Some(reader) = self.log_reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        status
    }

    /// How many file descriptors it has open (`/proc/<pid>/fd`): sockets, files, pipes.
    pub fn open_fds(&self) -> usize {
        let dir = format!("/proc/{}/fd", self.pid());
        std::fs::read_dir(&dir)
            .unwrap_or_else(|err| panic!("read {dir}: {err}"))
            .count()
    }

    /// How many client connections it holds open: its sockets on its listening port, other
    /// than the listener (read from `/proc/<pid>/fd` and `/proc/<pid>/net/tcp`).
    pub fn client_connections(&self) -> usize {
        let pid = self.pid();
        let sockets: std::collections::HashSet<String> =
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
                .filter_map(|target| {
                    let target = target.to_string_lossy().into_owned();
                    Some(
                        target
                            .strip_prefix("socket:[")?
                            .strip_suffix(']')?
                            .to_owned(),
                    )
                })
                .collect();
        let port = format!(":{:04X}", self.addr.port());
        let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
        table
            .lines()
            .skip(1)
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .filter(|fields| fields.len() > 9 && sockets.contains(fields[9]))
            .filter(|fields| fields[1].ends_with(&port) && fields[3] != "0A")
            .count()
    }

    /// Its open file descriptors once it holds no client connection (the start-up health
    /// probe's is gone): the baseline to find a leak against.
    pub async fn idle_fds(&self) -> usize {
        let idle = eventually(Duration::from_secs(5), || async {
            self.client_connections() == 0
        })
        .await;
        assert!(idle, "client connections stay open:\n{}", self.logs());
        self.open_fds()
    }

    /// Its peak resident memory (`VmHWM` of `/proc/<pid>/status`), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:") * 1024
    }

    /// Its current resident memory (`VmRSS`), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:") * 1024
    }

    /// Its soft open-file limit, from `/proc/<pid>/limits`.
    pub fn open_files_soft_limit(&self) -> u64 {
        let limits =
            std::fs::read_to_string(format!("/proc/{}/limits", self.pid())).expect("read limits");
        limits
            .lines()
            .find_map(|line| {
                line.strip_prefix("Max open files")?
                    .split_whitespace()
                    .next()
            })
            .and_then(|soft| soft.parse().ok())
            .expect("a numeric soft limit of open files")
    }

    /// The value of the sample `name` (labels included) on `/_gateway/metrics`; panics
    /// when the page is not served or lacks it.
    pub async fn metric(&self, name: &str) -> f64 {
        let mut connection = kept_alive(self.addr).await.expect("connect");
        let page = connection
            .get("/_gateway/metrics")
            .await
            .expect("the metrics page");
        let text = String::from_utf8_lossy(&page.body);
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no sample {name} on the metrics page:\n{text}"))
    }
}

/// Raises this process's soft open-file limit to its hard limit, so that a test can open
/// thousands of sockets (the gateway it starts inherits it); panics, naming the limit, when
/// the hard limit is below `needed`.
pub fn raise_open_files_limit(needed: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` and `setrlimit` read or write the struct given, alive across the calls.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_max != libc::RLIM_INFINITY {
            limit.rlim_cur = limit.rlim_max;
        } else {
            limit.rlim_cur = limit.rlim_cur.max(needed);
        }
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(
        limit.rlim_cur >= needed,
        "this test needs {needed} open files, and the hard limit (ulimit -Hn) is {}",
        limit.rlim_max
    );
    limit.rlim_cur
}

/// Polls `/_gateway/health` until it answers 2xx; false if the process exits first or
/// 20 s pass.
async fn wait_healthy(child: &mut Child, addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        let probe = async {
            let health = client(addr);
            let request = health.request(http::Method::GET, "/_gateway/health");
            let response = health.try_open(request.body(empty()).ok()?).await.ok()?;
            Some(response.status().is_success())
        };
        if let Ok(Some(true)) = tokio::time::timeout(Duration::from_secs(2), probe).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}
