//! From the listed tasks to what the gateway should serve and write: the route table, and
//! the `endpoint{S}` / `browser_endpoint{S}` keys that are missing or different (CONTRACT §5).
//! Pure: no I/O, so it runs on a blocking thread and is tested on its own.

use std::collections::HashSet;
use std::fmt::Write as _;

use gateway_clearml::{ListedTask, Runtime};
use gateway_proxy::routes::is_valid_route_key;
use gateway_proxy::{AddressPolicy, OwnAddresses, Route, RouteTable};
use serde_json::Value;

use crate::endpoints::{HttpEndpoint, Reach, http_endpoints, tcp_endpoints};
use crate::sessions::{TcpContext, TcpWant, written_keys};
use crate::settings::BrowserEndpoint;

/// What a plan is made from besides the tasks.
#[derive(Debug, Clone)]
pub struct PlanContext {
    /// `ROUTER_URL`, without a trailing `/`.
    pub router_url: String,
    /// `CLEARML_API_HOST`, for the `redirect` form of `browser_endpoint`.
    pub api_host: String,
    /// `ROUTER_NAME`.
    pub router_name: String,
    /// Which form `browser_endpoint` takes.
    pub browser_endpoint: BrowserEndpoint,
    /// Ids of the queues whose tasks this gateway routes; `None` for every queue.
    pub queues: Option<HashSet<String>>,
    /// Where task addresses may point.
    pub policy: AddressPolicy,
    /// The gateway's own addresses, which no endpoint may point at.
    pub own: OwnAddresses,
    /// TCP sessions; `None` when they are off.
    pub tcp: Option<TcpContext>,
}

/// Runtime keys to set on one task, and keys to remove.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteBack {
    /// The task.
    pub task_id: String,
    /// The keys and the values they should have.
    pub keys: Runtime,
    /// Keys to remove (`_ROUTER_ERROR{S}` once a session has its port).
    pub remove: Vec<String>,
}

/// A task, or one of its entries, that could not be routed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Skip {
    /// The task, where its id could be read.
    pub task_id: String,
    /// The runtime key at fault, if it is one key.
    pub key: Option<String>,
    /// Why.
    pub reason: String,
}

/// The outcome of one listing.
#[derive(Debug, Default)]
pub struct Plan {
    /// The routes to serve.
    pub table: RouteTable,
    /// The write-backs still to make.
    pub writes: Vec<WriteBack>,
    /// What had to be skipped.
    pub skipped: Vec<Skip>,
    /// Tasks that are this gateway's (running, in its queues).
    pub tasks: usize,
    /// The TCP sessions wanted.
    pub tcp: Vec<TcpWant>,
}

/// Plans the routes and write-backs for `tasks`, as `tasks.get_all` returned them.
pub fn plan(tasks: Vec<ListedTask>, context: &PlanContext) -> Plan {
    let mut plan = Plan::default();
    let mut routes = Vec::new();
    for raw in &tasks {
        let task = match TaskView::read(raw) {
            Ok(task) => task,
            Err(reason) => {
                let task_id = raw.id.clone().unwrap_or_else(|| "?".to_owned());
                plan.skipped.push(Skip {
                    task_id,
                    key: None,
                    reason,
                });
                continue;
            }
        };
        if !task.is_ours(context) {
            continue;
        }
        plan.tasks += 1;
        plan_task(&task, context, &mut plan, &mut routes);
    }
    plan.table = RouteTable::new(routes);
    plan
}

/// The fields of a listed task the plan reads. Only the id and the runtime must have their
/// type; a field of another type is read as absent, so that a stray value in a field the
/// gateway does not need never costs a task its routes.
struct TaskView<'a> {
    id: &'a str,
    status: Option<&'a str>,
    user: Option<&'a str>,
    queue: Option<&'a str>,
    runtime: Option<&'a Runtime>,
}

impl<'a> TaskView<'a> {
    fn read(raw: &'a ListedTask) -> Result<Self, String> {
        let id = raw
            .id
            .as_deref()
            .ok_or_else(|| "not a readable task entry: no string id".to_owned())?;
        let runtime = match &raw.runtime {
            Value::Null => None,
            Value::Object(runtime) => Some(runtime),
            _ => return Err("the runtime is not a map".to_owned()),
        };
        Ok(Self {
            id,
            status: raw.status.as_deref(),
            user: raw.user.as_deref(),
            queue: raw.queue.as_deref(),
            runtime,
        })
    }

    /// Running, and run from one of this gateway's queues.
    fn is_ours(&self, context: &PlanContext) -> bool {
        if self.status != Some("in_progress") {
            return false;
        }
        match &context.queues {
            None => true,
            Some(queues) => self.queue.is_some_and(|queue| queues.contains(queue)),
        }
    }
}

/// Adds one task's routes, skipped entries and missing write-backs to the plan.
fn plan_task(task: &TaskView<'_>, context: &PlanContext, plan: &mut Plan, routes: &mut Vec<Route>) {
    if !is_valid_route_key(task.id) || task.id.contains("__") {
        plan.skipped.push(Skip {
            task_id: task.id.to_owned(),
            key: None,
            reason: "the task id cannot be a route key".to_owned(),
        });
        return;
    }
    let empty = Runtime::new();
    let runtime = task.runtime.unwrap_or(&empty);
    let reach = Reach {
        policy: &context.policy,
        own: &context.own,
    };
    let (endpoints, skipped) = http_endpoints(runtime, reach);
    plan.skipped.extend(skipped.into_iter().map(|s| Skip {
        task_id: task.id.to_owned(),
        key: Some(s.key),
        reason: s.reason,
    }));
    let mut missing = Runtime::new();
    for endpoint in endpoints {
        let key = endpoint.route_key(task.id);
        let Some(mut route) = Route::new(&key, endpoint.upstream.clone()) else {
            continue;
        };
        if let Some(user) = task.user {
            route = route.with_owner(user);
        }
        routes.push(route);
        for (name, value) in published_keys(task.id, &endpoint, context) {
            if runtime.get(&name).and_then(Value::as_str) != Some(value.as_str()) {
                missing.insert(name, Value::String(value));
            }
        }
    }
    if !missing.is_empty() {
        plan.writes.push(WriteBack {
            task_id: task.id.to_owned(),
            keys: missing,
            remove: Vec::new(),
        });
    }
    plan_tcp(task, runtime, context, plan);
}

/// The task's TCP sessions, or one skip line when sessions are off.
fn plan_tcp(task: &TaskView<'_>, runtime: &Runtime, context: &PlanContext, plan: &mut Plan) {
    let Some(tcp) = &context.tcp else {
        if runtime.keys().any(|k| k.starts_with("external_tcp_port")) {
            plan.skipped.push(Skip {
                task_id: task.id.to_owned(),
                key: Some("external_tcp_port".to_owned()),
                reason: "TCP sessions are off (TCP_PORT_START and TCP_PORT_END unset)".to_owned(),
            });
        }
        return;
    };
    let (endpoints, skipped) = tcp_endpoints(runtime, &tcp.router_address, &tcp.range);
    plan.skipped.extend(skipped.into_iter().map(|s| Skip {
        task_id: task.id.to_owned(),
        key: Some(s.key),
        reason: s.reason,
    }));
    for endpoint in endpoints {
        let current: Runtime = written_keys(&endpoint.suffix())
            .into_iter()
            .filter_map(|key| runtime.get(&key).map(|value| (key, value.clone())))
            .collect();
        plan.tcp.push(TcpWant {
            task_id: task.id.to_owned(),
            endpoint,
            current,
        });
    }
}

/// `endpoint{S}` and `browser_endpoint{S}` as this gateway publishes them.
fn published_keys(
    task_id: &str,
    endpoint: &HttpEndpoint,
    context: &PlanContext,
) -> [(String, String); 2] {
    let key = endpoint.route_key(task_id);
    let url = format!("{}/service/{key}/", context.router_url);
    let browser = match context.browser_endpoint {
        BrowserEndpoint::Direct => url.clone(),
        BrowserEndpoint::Redirect => format!(
            "{}/auth.redirect_to_router?router={}&task={task_id}&path=service%2F{key}",
            context.api_host,
            query_encode(&context.router_name),
        ),
    };
    let suffix = endpoint.suffix();
    [
        (format!("endpoint{suffix}"), url),
        (format!("browser_endpoint{suffix}"), browser),
    ]
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn query_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests;
