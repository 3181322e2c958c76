//! A fake ClearML API server that follows the real one's API to the letter (CONTRACT §2):
//! `{service}.{action}` paths with an optional `/vX.Y/` prefix, GET-with-body and POST, the
//! meta/data envelope with the HTTP status equal to `result_code`, Basic login returning an
//! HS256 JWT with the real claims, the 401 subcodes, `tasks.edit` replacing the whole
//! `runtime` (refusing tasks not `created` without `force`), `tasks.edit_runtime` when it
//! claims API 2.34, `system_tags` with `-tag` exclusion, paging, queues, users — and faults on
//! demand, with a count of calls per endpoint.
//!
//! `state` holds the data, `handlers` the endpoints, `server` the HTTP side (auth, faults).

mod handlers;
mod jwt;
mod server;
mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;

pub use state::Fault;
use state::State;

/// The gateway's own credentials on every fake server.
pub const GATEWAY_ACCESS_KEY: &str = "GATEWAY_ACCESS_KEY";
/// The secret that goes with [`GATEWAY_ACCESS_KEY`].
pub const GATEWAY_SECRET_KEY: &str = "gateway-secret-key";

/// A running fake ClearML server; stops when dropped.
pub struct FakeClearml {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// `None` while it is down.
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for FakeClearml {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

/// How a fake server starts.
#[derive(Debug, Clone)]
pub struct FakeClearmlBuilder {
    api_version: String,
    token_lifetime: Duration,
    addr: SocketAddr,
}

impl FakeClearml {
    /// A server claiming API 2.31 (no `tasks.edit_runtime`), tokens valid for 30 days.
    pub fn builder() -> FakeClearmlBuilder {
        FakeClearmlBuilder {
            api_version: "2.31".to_owned(),
            token_lifetime: Duration::from_secs(30 * 24 * 3600),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }

    /// Starts a server with the defaults of [`builder`](Self::builder).
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// `http://127.0.0.1:port`, for `CLEARML_API_HOST`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake ClearML state")
    }

    /// Adds a user of the default company; returns its id.
    pub fn add_user(&self, name: &str) -> String {
        self.state().add_user(name, state::COMPANY)
    }

    /// Adds a user of another company; returns its id.
    pub fn add_user_in_company(&self, name: &str, company: &str) -> String {
        self.state().add_user(name, company)
    }

    /// A fresh token for `user`, as the web app's login would give.
    pub fn token_for(&self, user: &str) -> String {
        self.state().issue_token(user)
    }

    /// A token for `user` that expired a minute ago (signed, so only its `exp` is wrong).
    pub fn expired_token_for(&self, user: &str) -> String {
        self.state().issue_token_for(user, -60)
    }

    /// The secret the server signs tokens with (what `AUTH_BASE64_JWKS_KEY` holds, in base64).
    pub fn token_secret(&self) -> Vec<u8> {
        self.state().secret.clone()
    }

    /// Makes the server refuse `token` from now on (401/31, blocked token).
    pub fn revoke(&self, token: &str) {
        self.state().revoked.insert(token.to_owned());
    }

    /// Invalidates every token issued so far (as a server whose token secret changed):
    /// the next call with one gets 401/30.
    pub fn invalidate_tokens(&self) {
        self.state().secret = format!("{:?}", std::time::Instant::now()).into_bytes();
    }

    /// Adds a queue; returns its id.
    pub fn add_queue(&self, name: &str) -> String {
        self.state().add_queue(name)
    }

    /// Adds a task described by `task` (see [`task`]); returns its id.
    pub fn add_task(&self, task: TaskSpec) -> String {
        self.state().add_task(task)
    }

    /// Sets a task's status, as an agent or a user would.
    pub fn set_status(&self, task: &str, status: &str) {
        self.state().set_field(task, "status", json!(status));
    }

    /// Deletes a task.
    pub fn delete_task(&self, task: &str) {
        self.state().delete_task(task);
    }

    /// A task's runtime map as stored now.
    pub fn runtime(&self, task: &str) -> Map<String, Value> {
        self.state().runtime(task)
    }

    /// Writes `key` into a task's runtime the way the SDK does (read, merge, replace).
    pub fn set_runtime_key(&self, task: &str, key: &str, value: Value) {
        let mut state = self.state();
        let mut runtime = state.runtime(task);
        runtime.insert(key.to_owned(), value);
        state.set_field(task, "runtime", Value::Object(runtime));
    }

    /// Hides `task` from `user` (the server will not list it to them).
    pub fn hide_task_from(&self, task: &str, user: &str) {
        self.state()
            .hidden_from
            .insert((task.to_owned(), user.to_owned()));
    }

    /// Makes the next `count` calls fail with `fault`.
    pub fn fail_next(&self, count: usize, fault: Fault) {
        let mut state = self.state();
        for _ in 0..count {
            state.faults.push_back(fault);
        }
    }

    /// Makes every call fail with `fault` until [`recover`](Self::recover) (`None` for none).
    pub fn set_outage(&self, fault: Option<Fault>) {
        self.state().outage = fault;
    }

    /// Ends an outage and clears pending faults.
    pub fn recover(&self) {
        let mut state = self.state();
        state.outage = None;
        state.faults.clear();
    }

    /// Delays every answer by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// Goes down as a crashed server does: its port closes (connecting is refused) and
    /// every open connection is closed. The data stays for [`come_back`](Self::come_back).
    pub async fn go_down(&self) {
        let task = self.task.lock().expect("fake ClearML task").take();
        if let Some(task) = task {
            task.abort();
            // Aborted means dropped only once the task has seen it: wait for the port.
            let _ = task.await;
        }
    }

    /// Listens again on the same port, with the same users, tasks and tokens.
    pub async fn come_back(&self) {
        let (_, task) = server::serve(Arc::clone(&self.state), self.addr)
            .await
            .expect("bind the fake ClearML's port again");
        let previous = self.task.lock().expect("fake ClearML task").replace(task);
        if let Some(previous) = previous {
            previous.abort();
        }
    }

    /// How many calls reached `endpoint` (e.g. `"tasks.get_all"`).
    pub fn calls(&self, endpoint: &str) -> usize {
        self.state().calls.get(endpoint).copied().unwrap_or(0)
    }

    /// Calls that wrote a task (`tasks.edit`, `tasks.edit_runtime`).
    pub fn writes(&self) -> usize {
        self.calls("tasks.edit") + self.calls("tasks.edit_runtime")
    }

    /// The bodies of the latest calls to `endpoint` that reached a handler, oldest first.
    pub fn requests(&self, endpoint: &str) -> Vec<Value> {
        self.state()
            .requests
            .iter()
            .filter(|(e, _)| e == endpoint)
            .map(|(_, body)| body.clone())
            .collect()
    }

    /// Forgets the call counts and the recorded requests.
    pub fn reset_calls(&self) {
        let mut state = self.state();
        state.calls.clear();
        state.requests.clear();
    }
}

impl FakeClearmlBuilder {
    /// The API version the server claims in its tokens; 2.34 and later answer
    /// `tasks.edit_runtime`.
    pub fn api_version(mut self, version: &str) -> Self {
        self.api_version = version.to_owned();
        self
    }

    /// How long the tokens it issues are valid.
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = lifetime;
        self
    }

    /// Listens on `addr` instead of a fresh port of `127.0.0.1`.
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Starts the server on a fresh port (or the one [`addr`](Self::addr) gave).
    pub async fn start(self) -> FakeClearml {
        self.try_start().await.expect("bind the fake ClearML")
    }

    /// Like [`start`](Self::start), with the error when the address cannot be bound.
    pub async fn try_start(self) -> std::io::Result<FakeClearml> {
        let state = Arc::new(Mutex::new(State::new(
            self.api_version,
            self.token_lifetime,
        )));
        let (addr, task) = server::serve(Arc::clone(&state), self.addr).await?;
        Ok(FakeClearml {
            addr,
            state,
            task: Mutex::new(Some(task)),
        })
    }
}

/// A task to add: `task().in_progress().runtime(json!({...}))`.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub(crate) id: Option<String>,
    pub(crate) name: String,
    pub(crate) status: String,
    pub(crate) user: Option<String>,
    pub(crate) queue: Option<String>,
    pub(crate) runtime: Map<String, Value>,
    pub(crate) system_tags: Vec<String>,
}

/// A task spec: `created`, no runtime, no tags, owned by the gateway's user.
pub fn task() -> TaskSpec {
    TaskSpec {
        id: None,
        name: "task".to_owned(),
        status: "created".to_owned(),
        user: None,
        queue: None,
        runtime: Map::new(),
        system_tags: Vec::new(),
    }
}

impl TaskSpec {
    /// Uses this id instead of a generated one.
    pub fn id(mut self, id: &str) -> Self {
        self.id = Some(id.to_owned());
        self
    }

    /// Names the task.
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// Sets its status.
    pub fn status(mut self, status: &str) -> Self {
        self.status = status.to_owned();
        self
    }

    /// Running: `in_progress`.
    pub fn in_progress(self) -> Self {
        self.status("in_progress")
    }

    /// Owned by `user`.
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_owned());
        self
    }

    /// Enqueued to (and run from) the queue with this id.
    pub fn queue(mut self, queue: &str) -> Self {
        self.queue = Some(queue.to_owned());
        self
    }

    /// With this runtime map (a JSON object).
    pub fn runtime(mut self, runtime: Value) -> Self {
        if let Value::Object(map) = runtime {
            self.runtime = map;
        }
        self
    }

    /// With these system tags.
    pub fn system_tags(mut self, tags: &[&str]) -> Self {
        self.system_tags = tags.iter().map(|t| (*t).to_owned()).collect();
        self
    }

    /// As `Task.request_external_endpoint(port, protocol="http")` leaves it: the runtime keys
    /// of CONTRACT §3 (default endpoint) and the `external_service` system tag.
    pub fn http_endpoint(self, address: &str, port: u16) -> Self {
        self.named_http_endpoint(None, address, port)
    }

    /// As `request_external_endpoint(port, protocol="tcp")` leaves it (`upstream_task_port`
    /// set) or, with `sdk: false`, as `clearml-session` does (without it).
    pub fn tcp_endpoint(mut self, name: Option<&str>, address: &str, port: u16, sdk: bool) -> Self {
        let suffix = name.map(|n| format!("__{n}")).unwrap_or_default();
        self.runtime
            .insert(format!("_SERVICE{suffix}"), json!("EXTERNAL_TCP"));
        self.runtime
            .insert(format!("external_address{suffix}"), json!(address));
        self.runtime
            .insert(format!("external_tcp_port{suffix}"), json!(port));
        if sdk {
            self.runtime
                .insert(format!("upstream_task_port{suffix}"), json!(port));
        }
        if !self.system_tags.iter().any(|t| t == "external_service") {
            self.system_tags.push("external_service".to_owned());
        }
        self
    }

    /// The same for a named endpoint (`_PORT__{name}` …), or the default with `None`.
    pub fn named_http_endpoint(mut self, name: Option<&str>, address: &str, port: u16) -> Self {
        let suffix = name.map(|n| format!("__{n}")).unwrap_or_default();
        self.runtime
            .insert(format!("_SERVICE{suffix}"), json!("EXTERNAL"));
        self.runtime
            .insert(format!("_ADDRESS{suffix}"), json!(address));
        self.runtime.insert(format!("_PORT{suffix}"), json!(port));
        if !self.system_tags.iter().any(|t| t == "external_service") {
            self.system_tags.push("external_service".to_owned());
        }
        self
    }
}
