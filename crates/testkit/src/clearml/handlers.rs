//! The endpoints, with the real server's semantics for what the gateway and the SDK use.

use serde_json::{Map, Value, json};

use super::state::State;

/// Who made a call.
pub struct Caller {
    pub user: String,
    pub company: String,
}

/// An error envelope's code, subcode and message.
#[derive(Debug)]
pub struct ApiError {
    pub code: u16,
    pub subcode: u32,
    pub msg: String,
}

impl ApiError {
    pub fn new(code: u16, subcode: u32, msg: String) -> Self {
        Self { code, subcode, msg }
    }
}

const ENDPOINTS: &[&str] = &[
    "auth.login",
    "tasks.get_all",
    "tasks.get_by_id",
    "tasks.edit",
    "queues.get_all",
    "users.get_current_user",
];

/// Whether the server has `endpoint` (`tasks.edit_runtime` from API 2.34 on).
pub fn exists(state: &State, endpoint: &str) -> bool {
    ENDPOINTS.contains(&endpoint) || (endpoint == "tasks.edit_runtime" && has_edit_runtime(state))
}

fn has_edit_runtime(state: &State) -> bool {
    let mut parts = state.api_version.split('.');
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (2, 34)
}

pub fn handle(
    state: &mut State,
    endpoint: &str,
    caller: &Caller,
    data: &Value,
) -> Result<Value, ApiError> {
    match endpoint {
        "auth.login" => Ok(json!({ "token": state.issue_token(&caller.user) })),
        "tasks.get_all" => Ok(json!({ "tasks": tasks_get_all(state, caller, data) })),
        "tasks.get_by_id" => {
            let index = visible_task(state, caller, data)?;
            Ok(json!({ "task": state.tasks[index].clone() }))
        }
        "tasks.edit" => tasks_edit(state, caller, data),
        "tasks.edit_runtime" => tasks_edit_runtime(state, caller, data),
        "queues.get_all" => Ok(json!({ "queues": queues_get_all(state, data) })),
        "users.get_current_user" => current_user(state, caller),
        _ => Err(ApiError::new(
            404,
            0,
            format!("Unable to find endpoint for name {endpoint}"),
        )),
    }
}

fn can_see(state: &State, caller: &Caller, task: &Value) -> bool {
    let id = task["id"].as_str().unwrap_or_default();
    task["company"].as_str() == Some(caller.company.as_str())
        && !state
            .hidden_from
            .contains(&(id.to_owned(), caller.user.clone()))
}

/// A list field that may also be given as one string.
fn strings(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        ),
        _ => None,
    }
}

fn tasks_get_all(state: &State, caller: &Caller, data: &Value) -> Vec<Value> {
    let ids = strings(&data["id"]);
    let statuses = strings(&data["status"]);
    let projects = strings(&data["project"]);
    let tags = strings(&data["system_tags"]).unwrap_or_default();
    let search_hidden = data["search_hidden"].as_bool().unwrap_or(false);
    let matching: Vec<&Value> = state
        .tasks
        .iter()
        .filter(|t| can_see(state, caller, t))
        .filter(|t| {
            ids.as_ref()
                .is_none_or(|ids| ids.iter().any(|i| t["id"] == **i))
        })
        .filter(|t| {
            statuses
                .as_ref()
                .is_none_or(|s| s.iter().any(|s| t["status"] == **s))
        })
        .filter(|t| {
            projects
                .as_ref()
                .is_none_or(|p| p.iter().any(|p| t["project"] == **p))
        })
        .filter(|t| tags_match(&tags, &t["system_tags"]))
        .filter(|t| search_hidden || !has_tag(&t["system_tags"], "hidden"))
        .collect();
    let mut matching = matching;
    for field in strings(&data["order_by"]).unwrap_or_default().iter().rev() {
        let (field, descending) = match field.strip_prefix('-') {
            Some(field) => (field.to_owned(), true),
            None => (field.clone(), false),
        };
        matching.sort_by(|a, b| {
            let order = a[&field].to_string().cmp(&b[&field].to_string());
            if descending { order.reverse() } else { order }
        });
    }
    let page_size = data["page_size"].as_u64().map(|n| n as usize);
    let page = data["page"].as_u64().unwrap_or(0) as usize;
    let selected: Vec<&Value> = match page_size {
        Some(size) => matching.into_iter().skip(page * size).take(size).collect(),
        None => matching,
    };
    let fields = strings(&data["only_fields"]);
    selected
        .into_iter()
        .map(|t| match &fields {
            Some(fields) => project(t, fields),
            None => t.clone(),
        })
        .collect()
}

fn has_tag(tags: &Value, tag: &str) -> bool {
    tags.as_array()
        .is_some_and(|tags| tags.iter().any(|t| t == tag))
}

/// System tags filter: any of the plain tags (OR), none of the `-tag` ones.
fn tags_match(filter: &[String], tags: &Value) -> bool {
    let (excluded, wanted): (Vec<&String>, Vec<&String>) =
        filter.iter().partition(|t| t.starts_with('-'));
    let none_excluded = excluded.iter().all(|t| !has_tag(tags, &t[1..]));
    let any_wanted = wanted.is_empty() || wanted.iter().any(|t| has_tag(tags, t));
    none_excluded && any_wanted
}

/// The task with only `fields` (dot paths), and its id.
fn project(task: &Value, fields: &[String]) -> Value {
    let mut out = Map::new();
    out.insert("id".to_owned(), task["id"].clone());
    for field in fields {
        let mut source = task;
        let parts: Vec<&str> = field.split('.').collect();
        let mut found = true;
        for part in &parts {
            match source.get(*part) {
                Some(next) => source = next,
                None => found = false,
            }
        }
        if found {
            insert_path(&mut out, &parts, source.clone());
        }
    }
    Value::Object(out)
}

fn insert_path(out: &mut Map<String, Value>, parts: &[&str], value: Value) {
    match parts {
        [] => {}
        [last] => {
            out.insert((*last).to_owned(), value);
        }
        [first, rest @ ..] => {
            let entry = out
                .entry((*first).to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// The index of the task named by `data.task`, if the caller can see it.
fn visible_task(state: &State, caller: &Caller, data: &Value) -> Result<usize, ApiError> {
    let id = data["task"].as_str().unwrap_or_default();
    state
        .tasks
        .iter()
        .position(|t| t["id"] == *id && can_see(state, caller, t))
        .ok_or_else(|| ApiError::new(400, 101, format!("Invalid task id: id={id}")))
}

fn check_editable(task: &Value, data: &Value) -> Result<(), ApiError> {
    let force = data["force"].as_bool().unwrap_or(false);
    let status = task["status"].as_str().unwrap_or_default();
    if !force && status != "created" {
        return Err(ApiError::new(
            400,
            110,
            format!("Invalid task status: expected=created, status={status}"),
        ));
    }
    Ok(())
}

/// `tasks.edit`: every field given replaces the task's (`runtime` whole).
fn tasks_edit(state: &mut State, caller: &Caller, data: &Value) -> Result<Value, ApiError> {
    let index = visible_task(state, caller, data)?;
    check_editable(&state.tasks[index], data)?;
    let mut fields = Map::new();
    if let (Value::Object(task), Value::Object(given)) = (&mut state.tasks[index], data) {
        for (key, value) in given {
            if key != "task" && key != "force" {
                task.insert(key.clone(), value.clone());
                fields.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(json!({ "updated": 1, "fields": fields }))
}

/// `tasks.edit_runtime`: keys merged and removed in one step.
fn tasks_edit_runtime(state: &mut State, caller: &Caller, data: &Value) -> Result<Value, ApiError> {
    let index = visible_task(state, caller, data)?;
    check_editable(&state.tasks[index], data)?;
    let task = &mut state.tasks[index];
    let mut runtime = match task.get("runtime") {
        Some(Value::Object(runtime)) => runtime.clone(),
        _ => Map::new(),
    };
    if let Some(Value::Object(add)) = data.get("add_or_update") {
        for (key, value) in add {
            runtime.insert(key.clone(), value.clone());
        }
    }
    for key in strings(&data["remove"]).unwrap_or_default() {
        runtime.remove(&key);
    }
    task["runtime"] = Value::Object(runtime);
    Ok(json!({ "updated": 1 }))
}

/// `queues.get_all` with `name` read as the real server reads it, a regular expression;
/// this fake understands anchors and literal text, which is what clients send.
fn queues_get_all(state: &State, data: &Value) -> Vec<Value> {
    let pattern = data["name"].as_str();
    state
        .queues
        .iter()
        .filter(|(_, name)| pattern.is_none_or(|p| regex_lite_match(p, name)))
        .map(|(id, name)| json!({ "id": id, "name": name }))
        .collect()
}

fn regex_lite_match(pattern: &str, text: &str) -> bool {
    let anchored_start = pattern.starts_with('^');
    let anchored_end = pattern.ends_with('$') && !pattern.ends_with("\\$");
    let core = pattern.trim_start_matches('^');
    let core = if anchored_end {
        &core[..core.len() - 1]
    } else {
        core
    };
    let literal = core.replace('\\', "");
    match (anchored_start, anchored_end) {
        (true, true) => text == literal,
        (true, false) => text.starts_with(&literal),
        (false, true) => text.ends_with(&literal),
        (false, false) => text.contains(&literal),
    }
}

fn current_user(state: &State, caller: &Caller) -> Result<Value, ApiError> {
    let user = state
        .users
        .get(&caller.user)
        .ok_or_else(|| ApiError::new(400, 301, format!("Invalid user id: id={}", caller.user)))?;
    Ok(json!({
        "user": {
            "id": user.id,
            "name": user.name,
            "company": { "id": user.company, "name": "Test Company" },
            "role": "user",
        }
    }))
}
