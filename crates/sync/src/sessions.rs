//! TCP endpoints in the sync (CONTRACT §6): the sessions wanted from the listed tasks, and,
//! once their ports are placed, the keys to write back — `upstream_task_address{S}` /
//! `upstream_task_port{S}` keep the task's own address, `external_address{S}` /
//! `external_tcp_port{S}` become the gateway's, `_ROUTER_ERROR{S}` says when the range ran out.

use std::collections::HashMap;
use std::ops::RangeInclusive;

use gateway_clearml::Runtime;
use gateway_tcp::{Placement, PortChoice, Target, Wanted};
use serde_json::Value;

use crate::endpoints::TcpEndpoint;
use crate::plan::WriteBack;

/// The TCP session settings of this gateway.
#[derive(Debug, Clone)]
pub struct TcpContext {
    /// `TCP_ROUTER_ADDRESS`: what clients are told to connect to.
    pub router_address: String,
    /// `TCP_PORT_START..=TCP_PORT_END`.
    pub range: RangeInclusive<u16>,
}

/// A TCP session a task wants, with the keys the task holds now.
#[derive(Debug, Clone)]
pub struct TcpWant {
    /// The task.
    pub task_id: String,
    /// The endpoint.
    pub endpoint: TcpEndpoint,
    /// The task's current values of the keys the gateway writes.
    pub current: Runtime,
}

impl TcpWant {
    /// `{task_id}` or `{task_id}__{name}`: the session's key.
    pub fn key(&self) -> String {
        format!("{}{}", self.task_id, self.endpoint.suffix())
    }

    /// What the session ports are asked for.
    pub fn wanted(&self) -> Wanted {
        Wanted {
            target: Target {
                key: self.key(),
                host: self.endpoint.host.clone(),
                port: self.endpoint.port,
            },
            port: PortChoice::Allocate {
                adopt: self.endpoint.adopt,
            },
        }
    }
}

/// The keys a TCP write-back touches, for `suffix`.
pub fn written_keys(suffix: &str) -> [String; 5] {
    [
        format!("upstream_task_address{suffix}"),
        format!("upstream_task_port{suffix}"),
        format!("external_address{suffix}"),
        format!("external_tcp_port{suffix}"),
        format!("_ROUTER_ERROR{suffix}"),
    ]
}

/// The write-backs that bring each task's keys in line with where its sessions were placed.
pub fn tcp_writebacks(
    wants: &[TcpWant],
    placements: &HashMap<String, Placement>,
    context: &TcpContext,
) -> Vec<WriteBack> {
    let mut by_task: HashMap<&str, WriteBack> = HashMap::new();
    for want in wants {
        let suffix = want.endpoint.suffix();
        let [up_address, up_port, ext_address, ext_port, error] = written_keys(&suffix);
        let mut set = Runtime::new();
        let mut remove = Vec::new();
        match placements.get(&want.key()) {
            Some(Placement::Serving(port)) => {
                set.insert(up_address, Value::from(want.endpoint.host.clone()));
                set.insert(up_port, Value::from(want.endpoint.port));
                set.insert(ext_address, Value::from(context.router_address.clone()));
                set.insert(ext_port, Value::from(*port));
                remove.push(error);
            }
            Some(Placement::Exhausted) => {
                let reason = format!(
                    "no free TCP session port in {}..={}; one will be given as soon as one frees",
                    context.range.start(),
                    context.range.end()
                );
                set.insert(error, Value::from(reason));
            }
            Some(Placement::Failed(reason)) => {
                set.insert(error, Value::from(format!("TCP session port: {reason}")));
            }
            None => continue,
        }
        set.retain(|key, value| !same(want.current.get(key), value));
        remove.retain(|key| want.current.contains_key(key));
        if set.is_empty() && remove.is_empty() {
            continue;
        }
        let entry = by_task.entry(&want.task_id).or_insert_with(|| WriteBack {
            task_id: want.task_id.clone(),
            keys: Runtime::new(),
            remove: Vec::new(),
        });
        entry.keys.extend(set);
        entry.remove.extend(remove);
    }
    by_task.into_values().collect()
}

/// Equal, with a port written as a number or as a string counting the same.
fn same(current: Option<&Value>, wanted: &Value) -> bool {
    match (current, wanted) {
        (Some(Value::String(text)), Value::Number(n)) => text.trim() == n.to_string(),
        (Some(current), wanted) => current == wanted,
        (None, _) => false,
    }
}
