//! The calls the gateway makes, with their request and answer shapes (CONTRACT §2).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::client::ClearmlClient;
use crate::error::ClearmlError;

/// A task's `runtime` map: keys written by the task, its agent and the gateway.
pub type Runtime = Map<String, Value>;

/// A queue's id and name.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Queue {
    /// Queue id.
    pub id: String,
    /// Queue name.
    #[serde(default)]
    pub name: String,
}

/// The user a token belongs to (`users.get_current_user`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct User {
    /// User id.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Company id.
    #[serde(default)]
    pub company: Value,
    /// Role.
    #[serde(default)]
    pub role: String,
}

/// The body of `tasks.get_all`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct GetAllTasks<'a> {
    /// Only these task ids.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a [&'a str]>,
    /// Only these statuses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'a [&'a str]>,
    /// System tags, OR-ed; `-tag` excludes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_tags: Option<&'a [&'a str]>,
    /// Include hidden tasks.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub search_hidden: bool,
    /// Return only these fields (dot paths).
    pub only_fields: &'a [&'a str],
    /// Page number, from 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// Tasks per page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u32>,
    /// Sort order (field names, `-` for descending): paging needs a stable one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_by: Option<&'a [&'a str]>,
}

/// A task of a listing, reduced as it is read to the fields routing uses: a listing of
/// thousands of tasks is never held as a tree of every field. A field is kept only when it
/// has its expected type, so one odd entry never fails the page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListedTask {
    /// The task's id; `None` when the entry has no string id (it cannot be used).
    pub id: Option<String>,
    /// `status`, e.g. `in_progress`.
    pub status: Option<String>,
    /// The owner's user id.
    pub user: Option<String>,
    /// `execution.queue`: the queue the task was run from.
    pub queue: Option<String>,
    /// `runtime` as sent: `Null` when absent, normally a map; the reader judges the rest.
    pub runtime: Value,
}

impl<'de> Deserialize<'de> for ListedTask {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // One entry's tree at a time, taken apart at once; its other fields are dropped here.
        let Value::Object(mut fields) = Value::deserialize(deserializer)? else {
            return Ok(Self::default());
        };
        let mut text = |name: &str| match fields.remove(name) {
            Some(Value::String(text)) => Some(text),
            _ => None,
        };
        let (id, status, user) = (text("id"), text("status"), text("user"));
        let queue = match fields.get_mut("execution").and_then(|e| e.get_mut("queue")) {
            Some(Value::String(queue)) => Some(std::mem::take(queue)),
            _ => None,
        };
        Ok(Self {
            id,
            status,
            user,
            queue,
            runtime: fields.remove("runtime").unwrap_or(Value::Null),
        })
    }
}

#[derive(Deserialize)]
struct TasksData {
    #[serde(default)]
    tasks: Vec<ListedTask>,
}

#[derive(Deserialize)]
struct QueuesData {
    #[serde(default)]
    queues: Vec<Queue>,
}

#[derive(Deserialize)]
struct UserData {
    user: User,
}

impl ClearmlClient {
    /// One page of `tasks.get_all`, each task reduced to what routing reads: a caller that
    /// reads them one by one can skip a broken entry without losing the page.
    pub async fn tasks_get_all(
        &self,
        query: &GetAllTasks<'_>,
    ) -> Result<Vec<ListedTask>, ClearmlError> {
        let data: TasksData = self.call("tasks.get_all", query).await?;
        Ok(data.tasks)
    }

    /// The runtime map of one task, read now (`tasks.get_all` by id, the runtime only).
    pub async fn task_runtime(&self, task: &str) -> Result<Runtime, ClearmlError> {
        let ids = [task];
        let query = GetAllTasks {
            id: Some(&ids),
            only_fields: &["runtime"],
            search_hidden: true,
            ..GetAllTasks::default()
        };
        let data: TasksData = self.call("tasks.get_all", &query).await?;
        let found = data
            .tasks
            .into_iter()
            .find(|t| t.id.as_deref() == Some(task));
        match found {
            Some(found) => Ok(match found.runtime {
                Value::Object(runtime) => runtime,
                _ => Runtime::new(),
            }),
            None => Err(ClearmlError::Api {
                endpoint: "tasks.get_all".to_owned(),
                result_code: 400,
                result_subcode: 101,
                result_msg: format!("task {task} is not listed"),
            }),
        }
    }

    /// Merges `add_or_update` into a task's runtime and removes `remove`, atomically, on
    /// servers with API 2.34 or later (`tasks.edit_runtime`).
    pub async fn tasks_edit_runtime(
        &self,
        task: &str,
        add_or_update: &Runtime,
        remove: &[String],
    ) -> Result<(), ClearmlError> {
        let body = serde_json::json!({
            "task": task,
            "add_or_update": add_or_update,
            "remove": remove,
            "force": true,
        });
        let _: Value = self.call("tasks.edit_runtime", &body).await?;
        Ok(())
    }

    /// Replaces a task's whole runtime map (`tasks.edit` with `force`, for any status).
    pub async fn tasks_replace_runtime(
        &self,
        task: &str,
        runtime: &Runtime,
    ) -> Result<(), ClearmlError> {
        let body = serde_json::json!({ "task": task, "force": true, "runtime": runtime });
        let _: Value = self.call("tasks.edit", &body).await?;
        Ok(())
    }

    /// Queues whose name matches the regular expression `name` (`queues.get_all`).
    pub async fn queues_get_all(&self, name: &str) -> Result<Vec<Queue>, ClearmlError> {
        let body = serde_json::json!({ "name": name, "only_fields": ["id", "name"] });
        let data: QueuesData = self.call("queues.get_all", &body).await?;
        Ok(data.queues)
    }

    /// The user `token` belongs to, as the server sees it (`users.get_current_user`).
    pub async fn current_user(&self, token: &str) -> Result<User, ClearmlError> {
        let data: UserData = self
            .call_with_token(token, "users.get_current_user", &serde_json::json!({}))
            .await?;
        Ok(data.user)
    }

    /// Whether the holder of `token` can see `task` (`tasks.get_all` by id, as that user).
    pub async fn task_visible_to(&self, token: &str, task: &str) -> Result<bool, ClearmlError> {
        let ids = [task];
        let query = GetAllTasks {
            id: Some(&ids),
            only_fields: &["id"],
            search_hidden: true,
            ..GetAllTasks::default()
        };
        let data: TasksData = self.call_with_token(token, "tasks.get_all", &query).await?;
        Ok(data.tasks.iter().any(|t| t.id.as_deref() == Some(task)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_listed_task_keeps_what_routing_reads_and_drops_the_rest() {
        let page = json!({"tasks": [
            {"id": "t1", "name": "vllm", "status": "in_progress", "user": "u1",
             "project": "p1", "execution": {"queue": "q1"}, "system_tags": ["external_service"],
             "runtime": {"_PORT": 8000}},
            {"id": 7, "status": ["odd"], "user": null, "execution": "not a map", "runtime": "text"},
            "not a task",
        ]});
        let data: TasksData = serde_json::from_value(page).unwrap();
        assert_eq!(
            data.tasks[0],
            ListedTask {
                id: Some("t1".to_owned()),
                status: Some("in_progress".to_owned()),
                user: Some("u1".to_owned()),
                queue: Some("q1".to_owned()),
                runtime: json!({"_PORT": 8000}),
            }
        );
        assert_eq!(
            data.tasks[1],
            ListedTask {
                runtime: json!("text"),
                ..ListedTask::default()
            }
        );
        assert_eq!(data.tasks[2], ListedTask::default());
    }
}
