//! What the fake server knows: users and their credentials, tasks, queues, faults, counts.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::{GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, TaskSpec, jwt};

/// The company every user belongs to unless said otherwise.
pub const COMPANY: &str = "d1bd92a3b039400cbafc60a7a5b1e52b";

/// A way for a call to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status and a server-error envelope.
    Status(u16),
    /// Answer with this result code and subcode (e.g. 401/1, not authorized).
    Refusal(u16, u32),
    /// Answer 200 with a body that is not JSON (an HTML page).
    Garbage,
    /// Answer 200 as `application/json` with the start of an envelope that never ends.
    InvalidJson,
    /// Close the connection without an answer.
    Drop,
    /// Send the head and the first bytes of the answer, then close the connection short of
    /// the announced `Content-Length`.
    CutMidAnswer,
}

#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: String,
    pub name: String,
    pub company: String,
}

pub struct State {
    pub secret: Vec<u8>,
    pub api_version: String,
    pub token_lifetime: Duration,
    /// access key → (secret key, user id)
    pub credentials: HashMap<String, (String, String)>,
    pub users: HashMap<String, UserRecord>,
    pub revoked: HashSet<String>,
    pub tasks: Vec<Value>,
    pub queues: Vec<(String, String)>,
    pub hidden_from: HashSet<(String, String)>,
    pub faults: VecDeque<Fault>,
    pub outage: Option<Fault>,
    pub delay: Duration,
    pub calls: HashMap<String, usize>,
    /// The bodies of the latest calls, oldest first, as `(endpoint, body)`.
    pub requests: VecDeque<(String, Value)>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A 32-hex-digit id, as ClearML's.
fn new_id() -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:016x}{:08x}{:08x}", n, nanos, std::process::id())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl State {
    pub fn new(api_version: String, token_lifetime: Duration) -> Self {
        let mut state = Self {
            secret: new_id().into_bytes(),
            api_version,
            token_lifetime,
            credentials: HashMap::new(),
            users: HashMap::new(),
            revoked: HashSet::new(),
            tasks: Vec::new(),
            queues: Vec::new(),
            hidden_from: HashSet::new(),
            faults: VecDeque::new(),
            outage: None,
            delay: Duration::ZERO,
            calls: HashMap::new(),
            requests: VecDeque::new(),
        };
        let gateway = state.add_user("clearml-gateway", COMPANY);
        state.credentials.insert(
            GATEWAY_ACCESS_KEY.to_owned(),
            (GATEWAY_SECRET_KEY.to_owned(), gateway),
        );
        state
    }

    pub fn add_user(&mut self, name: &str, company: &str) -> String {
        let id = new_id();
        let record = UserRecord {
            id: id.clone(),
            name: name.to_owned(),
            company: company.to_owned(),
        };
        self.users.insert(id.clone(), record);
        id
    }

    /// The user id the gateway's credentials log in as.
    pub fn gateway_user(&self) -> String {
        self.credentials
            .get(GATEWAY_ACCESS_KEY)
            .map(|(_, user)| user.clone())
            .unwrap_or_default()
    }

    /// A token as `auth.login` issues it: identity, `iat`, `exp`, and the server's API
    /// version, server version and feature set, which the SDK reads.
    pub fn issue_token(&self, user: &str) -> String {
        self.issue_token_for(user, self.token_lifetime.as_secs() as i64)
    }

    /// A token for `user` that expires `lifetime` seconds from now (in the past if negative).
    pub fn issue_token_for(&self, user: &str, lifetime: i64) -> String {
        let record = self.users.get(user).cloned().unwrap_or(UserRecord {
            id: user.to_owned(),
            name: user.to_owned(),
            company: COMPANY.to_owned(),
        });
        let iat = now_secs();
        let payload = json!({
            "identity": {
                "user": record.id,
                "company": record.company,
                "role": "user",
                "user_name": record.name,
                "company_name": "Test Company",
            },
            "iat": iat,
            "exp": iat.saturating_add_signed(lifetime),
            "env": "test",
            "api_version": self.api_version,
            "server_version": "1.16.0",
            "feature_set": "advanced",
        });
        jwt::sign(&payload, &self.secret)
    }

    pub fn add_queue(&mut self, name: &str) -> String {
        let id = new_id();
        self.queues.push((id.clone(), name.to_owned()));
        id
    }

    pub fn add_task(&mut self, spec: TaskSpec) -> String {
        let id = spec.id.unwrap_or_else(new_id);
        let user = spec.user.unwrap_or_else(|| self.gateway_user());
        let company = self
            .users
            .get(&user)
            .map_or(COMPANY.to_owned(), |u| u.company.clone());
        let mut execution = Map::new();
        if let Some(queue) = spec.queue {
            execution.insert("queue".to_owned(), json!(queue));
        }
        self.tasks.push(json!({
            "id": id,
            "name": spec.name,
            "type": "training",
            "status": spec.status,
            "user": user,
            "company": company,
            "project": "9a1b2c3d4e5f4a6b8c7d6e5f4a3b2c1d",
            "runtime": spec.runtime,
            "execution": execution,
            "system_tags": spec.system_tags,
            "tags": [],
            "created": "2026-12-04T00:00:00.000000+00:00",
        }));
        id
    }

    pub fn task_mut(&mut self, id: &str) -> Option<&mut Value> {
        self.tasks
            .iter_mut()
            .find(|t| t.get("id").and_then(Value::as_str) == Some(id))
    }

    pub fn set_field(&mut self, task: &str, field: &str, value: Value) {
        if let Some(Value::Object(task)) = self.task_mut(task) {
            task.insert(field.to_owned(), value);
        }
    }

    pub fn delete_task(&mut self, task: &str) {
        self.tasks
            .retain(|t| t.get("id").and_then(Value::as_str) != Some(task));
    }

    pub fn runtime(&mut self, task: &str) -> Map<String, Value> {
        match self.task_mut(task).and_then(|t| t.get("runtime")) {
            Some(Value::Object(runtime)) => runtime.clone(),
            _ => Map::new(),
        }
    }

    /// The next fault to inject, if any: a pending one, else the outage.
    pub fn take_fault(&mut self) -> Option<Fault> {
        self.faults.pop_front().or(self.outage)
    }
}
