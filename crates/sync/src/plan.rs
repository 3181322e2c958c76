//! From the listed tasks to what the gateway should serve and write: the route table, and
//! the `endpoint{S}` / `browser_endpoint{S}` keys that are missing or different (CONTRACT §5).
//! Pure: no I/O, so it runs on a blocking thread and is tested on its own.

use std::collections::HashSet;
use std::fmt::Write as _;

use gateway_clearml::{Runtime, Task};
use gateway_proxy::routes::is_valid_route_key;
use gateway_proxy::{AddressPolicy, Route, RouteTable};
use serde_json::Value;

use crate::endpoints::{HttpEndpoint, http_endpoints};
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
}

/// Runtime keys to set on one task.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteBack {
    /// The task.
    pub task_id: String,
    /// The keys and the values they should have.
    pub keys: Runtime,
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
}

/// Plans the routes and write-backs for `tasks`, as `tasks.get_all` returned them.
pub fn plan(tasks: Vec<Value>, context: &PlanContext) -> Plan {
    let mut plan = Plan::default();
    let mut routes = Vec::new();
    for raw in tasks {
        let task = match serde_json::from_value::<Task>(raw.clone()) {
            Ok(task) => task,
            Err(err) => {
                let task_id = raw
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned();
                let reason = format!("not a readable task entry: {err}");
                plan.skipped.push(Skip {
                    task_id,
                    key: None,
                    reason,
                });
                continue;
            }
        };
        if !is_ours(&task, context) {
            continue;
        }
        plan.tasks += 1;
        if !is_valid_route_key(&task.id) || task.id.contains("__") {
            plan.skipped.push(Skip {
                task_id: task.id.clone(),
                key: None,
                reason: "the task id cannot be a route key".to_owned(),
            });
            continue;
        }
        let empty = Runtime::new();
        let runtime = task.runtime.as_ref().unwrap_or(&empty);
        let (endpoints, skipped) = http_endpoints(runtime, &context.policy);
        plan.skipped.extend(skipped.into_iter().map(|s| Skip {
            task_id: task.id.clone(),
            key: Some(s.key),
            reason: s.reason,
        }));
        let mut missing = Runtime::new();
        for endpoint in endpoints {
            let key = endpoint.route_key(&task.id);
            let Some(mut route) = Route::new(&key, endpoint.upstream.clone()) else {
                continue;
            };
            if let Some(user) = &task.user {
                route = route.with_owner(user.as_str());
            }
            routes.push(route);
            for (name, value) in published_keys(&task.id, &endpoint, context) {
                if runtime.get(&name).and_then(Value::as_str) != Some(value.as_str()) {
                    missing.insert(name, Value::String(value));
                }
            }
        }
        if !missing.is_empty() {
            plan.writes.push(WriteBack {
                task_id: task.id.clone(),
                keys: missing,
            });
        }
    }
    plan.table = RouteTable::new(routes);
    plan
}

/// Running, and run from one of this gateway's queues.
fn is_ours(task: &Task, context: &PlanContext) -> bool {
    if task.status.as_deref() != Some("in_progress") {
        return false;
    }
    match &context.queues {
        None => true,
        Some(queues) => task
            .execution
            .as_ref()
            .and_then(|e| e.queue.as_ref())
            .is_some_and(|queue| queues.contains(queue)),
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
