//! Write-backs run beside the poll loop, so that a slow or failing server never holds up the
//! listing (and with it, the removal of stopped tasks' routes). A task has at most one write
//! in flight; a task whose write fails waits longer before each new try, and its failure is
//! logged when it starts or changes, not at every poll.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gateway_clearml::ClearmlClient;
use tokio::sync::Semaphore;

use crate::metrics::SyncMetrics;
use crate::plan::WriteBack;
use crate::writeback::{WriteError, WriteMode, write_back};

/// The longest a failing task waits before its write is tried again.
const MAX_RETRY: Duration = Duration::from_secs(300);

/// Runs write-backs in the background.
pub(crate) struct Writer {
    metrics: Arc<SyncMetrics>,
    client: Arc<ClearmlClient>,
    permits: Arc<Semaphore>,
    state: Arc<Mutex<State>>,
    edit_runtime: Arc<AtomicBool>,
    first_retry: Duration,
}

#[derive(Default)]
struct State {
    in_flight: HashSet<String>,
    failing: HashMap<String, Failing>,
    /// When each task's last write landed: a listing read before then cannot show it yet.
    landed: HashMap<String, Instant>,
}

struct Failing {
    failures: u32,
    retry_at: Instant,
    error: String,
}

impl Writer {
    /// A writer with `concurrency` writes at once; a failed task is first retried after
    /// `first_retry`.
    pub(crate) fn new(
        metrics: Arc<SyncMetrics>,
        client: Arc<ClearmlClient>,
        concurrency: usize,
        first_retry: Duration,
    ) -> Self {
        Self {
            metrics,
            client,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            state: Arc::default(),
            edit_runtime: Arc::new(AtomicBool::new(false)),
            first_retry,
        }
    }

    /// Uses `tasks.edit_runtime` (or not) from now on.
    pub(crate) fn use_edit_runtime(&self, usable: bool) {
        self.edit_runtime.store(usable, Ordering::Release);
    }

    /// How writes are made now.
    pub(crate) fn mode(&self) -> WriteMode {
        mode(&self.edit_runtime)
    }

    /// Starts the writes planned from a listing made at `listed_at` that are not already
    /// running, waiting to be retried, or landed after that listing was read; returns how
    /// many were started.
    pub(crate) fn submit(&self, writes: Vec<WriteBack>, listed_at: Instant) -> usize {
        let now = Instant::now();
        let mut started = 0;
        lock(&self.state).landed.retain(|_, at| *at > listed_at);
        for write in writes {
            {
                let mut state = lock(&self.state);
                let waiting = state
                    .failing
                    .get(&write.task_id)
                    .is_some_and(|f| f.retry_at > now);
                let landed = state.landed.contains_key(&write.task_id);
                if waiting || landed || !state.in_flight.insert(write.task_id.clone()) {
                    continue;
                }
            }
            started += 1;
            let job = Job {
                metrics: Arc::clone(&self.metrics),
                client: Arc::clone(&self.client),
                permits: Arc::clone(&self.permits),
                state: Arc::clone(&self.state),
                edit_runtime: Arc::clone(&self.edit_runtime),
                first_retry: self.first_retry,
            };
            tokio::spawn(job.run(write));
        }
        started
    }
}

/// One write-back, with what it needs to record its outcome.
struct Job {
    metrics: Arc<SyncMetrics>,
    client: Arc<ClearmlClient>,
    permits: Arc<Semaphore>,
    state: Arc<Mutex<State>>,
    edit_runtime: Arc<AtomicBool>,
    first_retry: Duration,
}

/// Takes a task off the in-flight set however its job ends, a panic included.
struct InFlight<'a> {
    state: &'a Mutex<State>,
    task: &'a str,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(self.state).in_flight.remove(self.task);
    }
}

impl Job {
    async fn run(self, write: WriteBack) {
        let _in_flight = InFlight {
            state: &self.state,
            task: &write.task_id,
        };
        let result = match self.permits.acquire().await {
            Ok(_permit) => self.write(&write).await,
            Err(_) => return,
        };
        self.metrics.written(result.is_ok());
        let mut state = lock(&self.state);
        match result {
            Ok(()) => {
                state.failing.remove(&write.task_id);
                state.landed.insert(write.task_id.clone(), Instant::now());
                let keys: Vec<&String> = write.keys.keys().collect();
                tracing::info!(task = %write.task_id, ?keys, "endpoint written to the task");
            }
            Err(err) => self.failed(&mut state, &write.task_id, &err),
        }
    }

    /// Writes; if the server turns `tasks.edit_runtime` down for anything but an outage or a
    /// refused token, falls back to read-modify-write for good.
    async fn write(&self, write: &WriteBack) -> Result<(), WriteError> {
        let mode = mode(&self.edit_runtime);
        match write_back(&self.client, write, mode).await {
            Err(WriteError::Clearml(err))
                if mode == WriteMode::EditRuntime && !err.is_outage() && !err.is_unauthorized() =>
            {
                if self.edit_runtime.swap(false, Ordering::AcqRel) {
                    tracing::warn!(error = %err, "tasks.edit_runtime was refused; writing with tasks.edit from now on");
                }
                write_back(&self.client, write, WriteMode::ReadModifyWrite).await
            }
            other => other,
        }
    }

    fn failed(&self, state: &mut State, task: &str, err: &WriteError) {
        let error = err.to_string();
        let entry = state.failing.entry(task.to_owned()).or_insert(Failing {
            failures: 0,
            retry_at: Instant::now(),
            error: String::new(),
        });
        entry.failures += 1;
        let doubling = 2u32.saturating_pow(entry.failures.saturating_sub(1).min(16));
        let wait = self.first_retry.saturating_mul(doubling).min(MAX_RETRY);
        entry.retry_at = Instant::now() + wait;
        if entry.error != error {
            tracing::warn!(task, error = %error, retry_in_s = wait.as_secs(), "could not write the endpoint to the task");
            entry.error = error;
        }
    }
}

fn mode(edit_runtime: &AtomicBool) -> WriteMode {
    if edit_runtime.load(Ordering::Acquire) {
        WriteMode::EditRuntime
    } else {
        WriteMode::ReadModifyWrite
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state stays consistent even if a holder panicked: each update is one step.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
