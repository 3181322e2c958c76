//! `fake-clearml`: the tests' fake ClearML API server as a process of its own, for the load
//! comparison in `benches/load/run.sh`.
//!
//! It starts the server, adds a user and `--tasks` running tasks owned by that user, each
//! with a default HTTP endpoint pointing at `--backend`, prints one JSON line on stdout —
//! `{"url", "token", "user", "stable": [ids], "tasks": [ids]}` — and serves until SIGTERM or
//! SIGINT. The token is the user's: a gateway in front of these tasks lets it through.
//!
//! - `--router-url URL` writes `endpoint` and `browser_endpoint` into the first tasks as a
//!   gateway at `URL` would have (a steady state from the first poll, no write-back storm).
//! - `--churn-per-second N`: once SIGUSR1 arrives (or `--churn-after` seconds have passed),
//!   N routes change per second, in ten steps a second: the oldest running non-stable task
//!   is stopped and a new one started, in turn. SIGUSR2 pauses the churn. The first
//!   `--stable` tasks are never touched.
//! - `--tcp-backend HOST:PORT --tcp-every N`: every Nth task (by number, churned ones too)
//!   also asks for a TCP endpoint named `ssh` at `HOST:PORT`, as `clearml-session` does;
//!   the JSON line lists the stable ones as `tcp_stable`.
//! - `--probe N --probe-gateway ADDR`: once the gateway at `ADDR` is ready, adds N new tasks
//!   (`--probe-spacing-ms` apart) and measures for each how long until its `endpoint` is
//!   written back and until its route answers 200 with the token; prints a second JSON line
//!   `{"probe": {...}}`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gateway_testkit::clearml::{FakeClearml, TaskSpec, task};
use gateway_testkit::client::{self, empty};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "\
usage: fake-clearml --backend HOST:PORT [options]

  --backend HOST:PORT        where every task's HTTP endpoint points (required)
  --tasks N                  running tasks with an HTTP endpoint at the start [1000]
  --stable N                 of which the first N are never churned [min(100, tasks)]
  --listen ADDR              address to serve the API on [127.0.0.1:0]
  --api-version X.Y          API version the server claims [2.31]
  --router-url URL           pre-write endpoint/browser_endpoint as a gateway at URL would
  --churn-per-second N       routes changed per second once churn starts [0]
  --churn-after SECS         start churning after SECS instead of on SIGUSR1
  --tcp-backend HOST:PORT     where TCP endpoints point (with --tcp-every)
  --tcp-every N              every Nth task also asks for a TCP endpoint named ssh [0: none]
  --probe N                  add N tasks once the gateway is ready, time their endpoints
  --probe-gateway ADDR       the gateway to probe (HOST:PORT, an IP address)
  --probe-spacing-ms MS      time between two probe tasks [250]
  --cookie-name NAME         auth cookie the probe sends [clearml_token_basic]

Signals: SIGUSR1 starts the churn, SIGUSR2 pauses it, SIGTERM/SIGINT stop the server.";

/// First word of every task id this process makes (32 hex digits in all, as ClearML's).
const ID_PREFIX: u32 = 0xbe9c_4a11;

/// How often the churn makes its changes.
const CHURN_TICK: Duration = Duration::from_millis(100);

/// A stopped task is deleted this long after it stopped, so the task list stays bounded.
const STOPPED_KEPT: Duration = Duration::from_secs(30);

/// Longest a probe task may wait for its endpoint and route.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Options {
    listen: SocketAddr,
    backend_host: String,
    backend_port: u16,
    tasks: usize,
    stable: Option<usize>,
    api_version: String,
    router_url: Option<String>,
    churn_per_second: u32,
    churn_after: Option<Duration>,
    tcp_backend: Option<(String, u16)>,
    tcp_every: u64,
    probe: usize,
    probe_gateway: Option<SocketAddr>,
    probe_spacing: Duration,
    cookie_name: String,
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("fake-clearml: {msg}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("fake-clearml: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("fake-clearml: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args() -> Result<Option<Options>, String> {
    use lexopt::prelude::*;
    let mut options = Options {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        backend_host: String::new(),
        backend_port: 0,
        tasks: 1000,
        stable: None,
        api_version: "2.31".to_owned(),
        router_url: None,
        churn_per_second: 0,
        churn_after: None,
        tcp_backend: None,
        tcp_every: 0,
        probe: 0,
        probe_gateway: None,
        probe_spacing: Duration::from_millis(250),
        cookie_name: "clearml_token_basic".to_owned(),
    };
    let mut backend = None;
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Long("help") | Short('h') => return Ok(None),
            Long("backend") => backend = Some(text(&mut parser, "--backend")?),
            Long("tasks") => options.tasks = number("--tasks", &text(&mut parser, "--tasks")?)?,
            Long("stable") => {
                options.stable = Some(number("--stable", &text(&mut parser, "--stable")?)?)
            }
            Long("listen") => {
                options.listen = address("--listen", &text(&mut parser, "--listen")?)?
            }
            Long("api-version") => options.api_version = text(&mut parser, "--api-version")?,
            Long("router-url") => {
                let url = text(&mut parser, "--router-url")?;
                if !url.starts_with("http://") && !url.starts_with("https://") {
                    return Err(format!(
                        "--router-url: {url:?} is not an http:// or https:// URL"
                    ));
                }
                options.router_url = Some(url.trim_end_matches('/').to_owned());
            }
            Long("churn-per-second") => {
                options.churn_per_second = number(
                    "--churn-per-second",
                    &text(&mut parser, "--churn-per-second")?,
                )?
            }
            Long("churn-after") => {
                let text = text(&mut parser, "--churn-after")?;
                let secs: f64 = text
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| format!("--churn-after: {text:?} is not a number of seconds"))?;
                options.churn_after = Some(Duration::from_secs_f64(secs));
            }
            Long("tcp-backend") => {
                let text = text(&mut parser, "--tcp-backend")?;
                options.tcp_backend = Some(host_port("--tcp-backend", &text)?);
            }
            Long("tcp-every") => {
                options.tcp_every = number("--tcp-every", &text(&mut parser, "--tcp-every")?)?
            }
            Long("probe") => options.probe = number("--probe", &text(&mut parser, "--probe")?)?,
            Long("probe-gateway") => {
                options.probe_gateway = Some(address(
                    "--probe-gateway",
                    &text(&mut parser, "--probe-gateway")?,
                )?)
            }
            Long("probe-spacing-ms") => {
                let ms: u64 = number(
                    "--probe-spacing-ms",
                    &text(&mut parser, "--probe-spacing-ms")?,
                )?;
                options.probe_spacing = Duration::from_millis(ms);
            }
            Long("cookie-name") => options.cookie_name = text(&mut parser, "--cookie-name")?,
            other => return Err(other.unexpected().to_string()),
        }
    }
    let backend = backend.ok_or("--backend HOST:PORT is required")?;
    (options.backend_host, options.backend_port) = host_port("--backend", &backend)?;
    if options.tcp_every > 0 && options.tcp_backend.is_none() {
        return Err("--tcp-every needs --tcp-backend HOST:PORT".to_owned());
    }
    if options.stable.is_some_and(|s| s > options.tasks) {
        return Err(format!(
            "--stable must not be more than --tasks ({})",
            options.tasks
        ));
    }
    if options.probe > 0 && options.probe_gateway.is_none() {
        return Err("--probe needs --probe-gateway HOST:PORT".to_owned());
    }
    Ok(Some(options))
}

/// The value of option `name`, as text.
fn text(parser: &mut lexopt::Parser, name: &str) -> Result<String, String> {
    let value = parser.value().map_err(|e| format!("{name}: {e}"))?;
    value
        .into_string()
        .map_err(|v| format!("{name}: {v:?} is not valid text"))
}

fn number<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{name}: {text:?} is not a non-negative whole number"))
}

/// `HOST:PORT`, with a host and a port in 1..=65535.
fn host_port(name: &str, text: &str) -> Result<(String, u16), String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("{name}: {text:?} is not HOST:PORT"))?;
    if host.is_empty() {
        return Err(format!("{name}: {text:?} has no host"));
    }
    let port = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{name}: {port:?} is not a port number in 1..=65535"))?;
    Ok((host.to_owned(), port))
}

fn address(name: &str, text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("{name}: {text:?} is not an IP address and port (e.g. 127.0.0.1:8080)")
    })
}

/// The id of the `n`th task this process makes.
fn task_id(n: u64) -> String {
    format!("{ID_PREFIX:08x}{n:024x}")
}

/// Whether the `n`th task also asks for a TCP endpoint.
fn has_tcp(options: &Options, n: u64) -> bool {
    options.tcp_every > 0 && n % options.tcp_every == 0
}

/// The `n`th task, running, with the default HTTP endpoint at the backend (and a TCP one
/// named `ssh` where [`has_tcp`]), owned by `user`.
fn running_task(options: &Options, n: u64, user: &str, prefill: bool) -> TaskSpec {
    let id = task_id(n);
    let mut spec = task().id(&id).name(&id).in_progress().user(user);
    // The pre-written runtime first: it replaces the whole map.
    if prefill && let Some(router_url) = &options.router_url {
        let url = format!("{router_url}/service/{id}/");
        spec = spec.runtime(json!({ "endpoint": url, "browser_endpoint": url }));
    }
    if let (true, Some((host, port))) = (has_tcp(options, n), &options.tcp_backend) {
        spec = spec.tcp_endpoint(Some("ssh"), host, *port, true);
    }
    spec.http_endpoint(&options.backend_host, options.backend_port)
}

async fn run(options: Options) -> Result<(), String> {
    // Before the JSON line: whoever reads it may signal at once.
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut start = signal(SignalKind::user_defined1()).map_err(|e| format!("SIGUSR1: {e}"))?;
    let mut pause = signal(SignalKind::user_defined2()).map_err(|e| format!("SIGUSR2: {e}"))?;
    let server = FakeClearml::builder()
        .api_version(&options.api_version)
        .addr(options.listen)
        .try_start()
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", options.listen))?;
    let server = Arc::new(server);
    let user = server.add_user("bench");
    let token = server.token_for(&user);
    let stable = options.stable.unwrap_or(options.tasks.min(100));
    let mut ids = Vec::with_capacity(options.tasks);
    for n in 0..options.tasks as u64 {
        server.add_task(running_task(&options, n, &user, true));
        ids.push(task_id(n));
    }
    let tcp_stable: Vec<String> = (0..stable as u64)
        .filter(|n| has_tcp(&options, *n))
        .map(task_id)
        .collect();
    let line = json!({
        "url": server.url(),
        "token": token,
        "user": user,
        "stable": ids[..stable],
        "tcp_stable": tcp_stable,
        "tasks": ids,
    });
    println!("{line}");

    let churning = Arc::new(AtomicBool::new(false));
    let changes = Arc::new(AtomicU64::new(0));
    let options = Arc::new(options);
    if options.churn_per_second > 0 {
        let churn = Churn {
            server: Arc::clone(&server),
            options: Arc::clone(&options),
            user: user.clone(),
            running: ids[stable..].iter().cloned().collect(),
            stopped: VecDeque::new(),
            // Churned tasks get ids far from the probe's.
            next_n: 1 << 40,
            stop_next: true,
            changes: Arc::clone(&changes),
        };
        tokio::spawn(churn.run(Arc::clone(&churning)));
        if let Some(delay) = options.churn_after {
            let churning = Arc::clone(&churning);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                churning.store(true, Ordering::Relaxed);
            });
        }
    }
    if options.probe > 0 {
        let server = Arc::clone(&server);
        let options = Arc::clone(&options);
        let (user, token) = (user.clone(), token.clone());
        // Probe tasks are numbered on from the first tasks.
        let first = options.tasks as u64;
        tokio::spawn(async move {
            let result = probe(&server, &options, &user, &token, first).await;
            match result {
                Ok(report) => println!("{}", json!({ "probe": report })),
                Err(msg) => {
                    eprintln!("fake-clearml: probe failed: {msg}");
                    println!("{}", json!({ "probe": { "error": msg } }));
                }
            }
        });
    }
    loop {
        tokio::select! {
            _ = interrupt.recv() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
            _ = start.recv() => {
                churning.store(true, Ordering::Relaxed);
                eprintln!("fake-clearml: churn started; {} route changes so far", changes.load(Ordering::Relaxed));
            }
            _ = pause.recv() => {
                churning.store(false, Ordering::Relaxed);
                eprintln!("fake-clearml: churn paused; {} route changes so far", changes.load(Ordering::Relaxed));
            }
        }
    }
}

/// Stops and starts tasks so that `churn_per_second` routes change per second.
struct Churn {
    server: Arc<FakeClearml>,
    options: Arc<Options>,
    user: String,
    running: VecDeque<String>,
    stopped: VecDeque<(Instant, String)>,
    next_n: u64,
    stop_next: bool,
    /// Route changes made so far.
    changes: Arc<AtomicU64>,
}

impl Churn {
    async fn run(mut self, churning: Arc<AtomicBool>) {
        let rate = f64::from(self.options.churn_per_second);
        let mut owed = 0.0;
        let mut last = Instant::now();
        let mut tick = tokio::time::interval(CHURN_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Owed by the clock, not by the ticks: a late tick makes up for lost time.
            let elapsed = std::mem::replace(&mut last, Instant::now()).elapsed();
            if !churning.load(Ordering::Relaxed) {
                owed = 0.0;
                continue;
            }
            owed += rate * elapsed.as_secs_f64();
            while owed >= 1.0 {
                owed -= 1.0;
                self.change();
                self.changes.fetch_add(1, Ordering::Relaxed);
            }
            while self
                .stopped
                .front()
                .is_some_and(|(at, _)| at.elapsed() > STOPPED_KEPT)
            {
                if let Some((_, id)) = self.stopped.pop_front() {
                    self.server.delete_task(&id);
                }
            }
        }
    }

    /// One route change: the oldest churnable task stops, or a new one starts, in turn.
    fn change(&mut self) {
        let stop = self.stop_next;
        self.stop_next = !stop;
        if stop && let Some(id) = self.running.pop_front() {
            self.server.set_status(&id, "stopped");
            self.stopped.push_back((Instant::now(), id));
            return;
        }
        let n = self.next_n;
        self.next_n += 1;
        // A new task asks for its endpoint: nothing is pre-written, the gateway writes it.
        self.server
            .add_task(running_task(&self.options, n, &self.user, false));
        self.running.push_back(task_id(n));
    }
}

/// Adds `options.probe` tasks and times, for each, its endpoint's write-back and its route.
async fn probe(
    server: &Arc<FakeClearml>,
    options: &Options,
    user: &str,
    token: &str,
    first: u64,
) -> Result<Value, String> {
    let gateway = options
        .probe_gateway
        .ok_or("--probe needs --probe-gateway")?;
    wait_ready(gateway).await?;
    let cookie = format!("{}={token}", options.cookie_name);
    let mut watchers = Vec::with_capacity(options.probe);
    for n in first..first + options.probe as u64 {
        let id = task_id(n);
        let added = Instant::now();
        server.add_task(running_task(options, n, user, false));
        let server = Arc::clone(server);
        let cookie = cookie.clone();
        watchers.push(tokio::spawn(async move {
            watch(&server, gateway, &id, &cookie, added).await
        }));
        tokio::time::sleep(options.probe_spacing).await;
    }
    let (mut endpoint, mut route, mut ready) = (Vec::new(), Vec::new(), Vec::new());
    let mut failures = Vec::new();
    for watcher in watchers {
        match watcher.await {
            Ok(Ok((e, r))) => {
                endpoint.push(e);
                route.push(r);
                ready.push(e.max(r));
            }
            Ok(Err(msg)) => failures.push(msg),
            Err(err) => failures.push(format!("watcher failed: {err}")),
        }
    }
    Ok(json!({
        "tasks": options.probe,
        "spacing_ms": options.probe_spacing.as_millis() as u64,
        "endpoint_written_ms": summary(&mut endpoint),
        "route_answers_ms": summary(&mut route),
        "both_ms": summary(&mut ready),
        "failed": failures.len(),
        "failures": failures.iter().take(5).collect::<Vec<_>>(),
    }))
}

/// Polls the gateway's readiness until it answers 200 (60 s at most).
async fn wait_ready(gateway: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let http = client::client(gateway);
    loop {
        let request = http.request(Method::GET, "/_gateway/ready").body(empty());
        let request = request.map_err(|e| format!("building a request: {e}"))?;
        if let Ok(response) = http.try_open(request).await
            && response.status() == StatusCode::OK
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the gateway at {gateway} was not ready within 60 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Milliseconds until `endpoint` is in the task's runtime and until its route answers 200.
async fn watch(
    server: &FakeClearml,
    gateway: SocketAddr,
    id: &str,
    cookie: &str,
    added: Instant,
) -> Result<(f64, f64), String> {
    let http = client::client(gateway);
    let path = format!("/service/{id}/");
    let (mut endpoint, mut route) = (None, None);
    loop {
        if endpoint.is_none() && server.runtime(id).contains_key("endpoint") {
            endpoint = Some(added.elapsed());
        }
        if route.is_none() {
            let request = http
                .request(Method::GET, &path)
                .header("cookie", cookie)
                .body(empty())
                .map_err(|e| format!("building a request: {e}"))?;
            if let Ok(response) = http.try_open(request).await
                && response.status() == StatusCode::OK
            {
                route = Some(added.elapsed());
            }
        }
        if let (Some(e), Some(r)) = (endpoint, route) {
            return Ok((millis(e), millis(r)));
        }
        if added.elapsed() > PROBE_TIMEOUT {
            return Err(format!(
                "task {id}: endpoint {} and route {} after 60 s",
                if endpoint.is_some() {
                    "written"
                } else {
                    "not written"
                },
                if route.is_some() {
                    "answering"
                } else {
                    "not answering"
                },
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e4).round() / 10.0
}

/// Median, 90th percentile, minimum and maximum.
fn summary(samples: &mut [f64]) -> Value {
    if samples.is_empty() {
        return Value::Null;
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    json!({ "median": at(0.5), "p90": at(0.9), "min": at(0.0), "max": at(1.0), "n": samples.len() })
}
