//! Writing `endpoint{S}` / `browser_endpoint{S}` into a task's runtime without losing a key
//! that the task, its agent or anyone else wrote.
//!
//! Servers with API 2.34 or later merge keys in one call (`tasks.edit_runtime`). Older ones
//! only replace the whole map (`tasks.edit`): the gateway reads the map right before it
//! writes, writes the merge, and reads again to check its keys landed. A key another writer
//! adds in the one round trip between that read and the write can still be lost; the SDK
//! writes the same way, so this is the older API's own limit.

use gateway_clearml::{ClearmlClient, ClearmlError, Runtime};

use crate::plan::WriteBack;

/// How runtime keys reach a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// `tasks.edit_runtime` (API 2.34 and later): an atomic merge.
    EditRuntime,
    /// `tasks.get_by_id` then `tasks.edit {force, runtime}`, checked after.
    ReadModifyWrite,
}

/// Why a write-back did not land.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A call failed.
    #[error(transparent)]
    Clearml(#[from] ClearmlError),
    /// Another writer kept replacing the runtime; the next poll tries again.
    #[error("the task's runtime kept changing under the write; trying again at the next poll")]
    Contended,
}

/// Sets `write.keys` on the task, keeping every other key.
pub async fn write_back(
    client: &ClearmlClient,
    write: &WriteBack,
    mode: WriteMode,
) -> Result<(), WriteError> {
    match mode {
        WriteMode::EditRuntime => {
            client
                .tasks_edit_runtime(&write.task_id, &write.keys, &write.remove)
                .await?;
            Ok(())
        }
        WriteMode::ReadModifyWrite => read_modify_write(client, write).await,
    }
}

async fn read_modify_write(client: &ClearmlClient, write: &WriteBack) -> Result<(), WriteError> {
    for _ in 0..3 {
        let current = client.task_runtime(&write.task_id).await?;
        if holds(&current, write) {
            return Ok(());
        }
        let mut merged = current;
        merged.extend(write.keys.clone());
        for key in &write.remove {
            merged.remove(key);
        }
        client
            .tasks_replace_runtime(&write.task_id, &merged)
            .await?;
        let after = client.task_runtime(&write.task_id).await?;
        if holds(&after, write) {
            return Ok(());
        }
        tracing::debug!(task = %write.task_id, "the runtime changed during the write-back; writing again");
    }
    Err(WriteError::Contended)
}

/// Whether the runtime has the write's keys, and none of those it removes.
fn holds(runtime: &Runtime, write: &WriteBack) -> bool {
    write
        .keys
        .iter()
        .all(|(key, value)| runtime.get(key) == Some(value))
        && write.remove.iter().all(|key| !runtime.contains_key(key))
}
