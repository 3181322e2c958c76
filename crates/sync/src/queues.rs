//! `LISTEN_QUEUE_NAME`: the queues whose tasks this gateway routes, resolved from names to
//! ids with `queues.get_all` and resolved again from time to time (queues can be created
//! after the gateway starts).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use gateway_clearml::{ClearmlClient, ClearmlError};

/// The queue filter of one gateway.
#[derive(Debug)]
pub struct QueueFilter {
    names: Vec<String>,
    ids: HashSet<String>,
    resolved_at: Option<Instant>,
    reported_missing: HashSet<String>,
}

impl QueueFilter {
    /// A filter for `names`; empty means every queue.
    pub fn new(names: Vec<String>) -> Self {
        Self {
            names,
            ids: HashSet::new(),
            resolved_at: None,
            reported_missing: HashSet::new(),
        }
    }

    /// The ids to keep, or `None` when every queue is this gateway's. Until the names are
    /// resolved this is an empty set: nothing is routed rather than everything.
    pub fn ids(&self) -> Option<HashSet<String>> {
        (!self.names.is_empty()).then(|| self.ids.clone())
    }

    /// Whether the names should be resolved (again): every `every`, or every `missing_every`
    /// while a name has no queue yet (so that a queue created later is picked up soon).
    pub fn due(&self, every: Duration, missing_every: Duration) -> bool {
        let period = if self.reported_missing.is_empty() {
            every
        } else {
            missing_every.min(every)
        };
        !self.names.is_empty() && self.resolved_at.is_none_or(|at| at.elapsed() >= period)
    }

    /// Resolves every name; a name no queue has is warned about once, not an error.
    pub async fn resolve(&mut self, client: &ClearmlClient) -> Result<(), ClearmlError> {
        let mut ids = HashSet::new();
        for name in &self.names {
            let found = queue_ids(client, name).await?;
            if found.is_empty() {
                if self.reported_missing.insert(name.clone()) {
                    tracing::warn!(queue = %name, "LISTEN_QUEUE_NAME names a queue ClearML does not have; its tasks will be routed once it exists");
                }
            } else if self.reported_missing.remove(name) {
                tracing::info!(queue = %name, "queue now exists; routing its tasks");
            }
            ids.extend(found);
        }
        if self.resolved_at.is_none() {
            tracing::info!(queues = ?self.names, ids = ids.len(), "routing only the tasks of these queues");
        }
        self.ids = ids;
        self.resolved_at = Some(Instant::now());
        Ok(())
    }
}

/// The ids of the queues named exactly `name` (the server matches a regular expression).
pub async fn queue_ids(client: &ClearmlClient, name: &str) -> Result<Vec<String>, ClearmlError> {
    let pattern = format!("^{}$", regex_escape(name));
    Ok(client
        .queues_get_all(&pattern)
        .await?
        .into_iter()
        .filter(|q| q.name == name)
        .map(|q| q.id)
        .collect())
}

/// Escapes a queue name for the server's regular expression match.
fn regex_escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if "\\.^$|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_matched_literally() {
        assert_eq!(regex_escape("gpu.large (a100)"), "gpu\\.large \\(a100\\)");
    }

    #[test]
    fn an_unresolved_filter_routes_nothing_and_no_filter_routes_everything() {
        assert_eq!(
            QueueFilter::new(vec!["q".into()]).ids(),
            Some(HashSet::new())
        );
        assert_eq!(QueueFilter::new(Vec::new()).ids(), None);
        assert!(!QueueFilter::new(Vec::new()).due(Duration::ZERO, Duration::ZERO));
        assert!(QueueFilter::new(vec!["q".into()]).due(Duration::MAX, Duration::MAX));
    }
}
