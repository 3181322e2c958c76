//! The sync loop: every poll interval, list the routable tasks, plan, publish the route table
//! in one swap, then write back the endpoints that are missing. While ClearML fails, the last
//! good table keeps serving; the outage is logged when it starts and when it ends, and
//! retries back off up to a cap.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_clearml::{ApiVersion, ClearmlClient, ClearmlError, GetAllTasks, ListedTask};
use gateway_proxy::{Readiness, RouteStore, RouteTable};
use gateway_tcp::{Placement, TcpSessions};

use crate::memory;
use crate::metrics::SyncMetrics;
use crate::plan::{Plan, PlanContext, Skip, WriteBack, plan};
use crate::queues::QueueFilter;
use crate::sessions::{TcpWant, tcp_writebacks};
use crate::settings::SyncSettings;
use crate::writer::Writer;

/// The fields of a task the gateway reads (CONTRACT §4).
const ONLY_FIELDS: &[&str] = &["id", "status", "user", "runtime", "execution.queue"];

/// A listing that runs on past this many pages is cut short, with a warning.
const MAX_PAGES: u32 = 10_000;

/// The filter of every listing: running tasks that asked for an endpoint (CONTRACT §4).
fn routable() -> GetAllTasks<'static> {
    GetAllTasks {
        system_tags: Some(&["external_service"]),
        status: Some(&["in_progress"]),
        search_hidden: true,
        only_fields: ONLY_FIELDS,
        ..GetAllTasks::default()
    }
}

fn task_id(task: &ListedTask) -> &str {
    task.id.as_deref().unwrap_or_default()
}

/// Why the sync cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// ClearML refused the gateway's own keys at the first login: the configuration is wrong.
    #[error(
        "ClearML refused the gateway's credentials ({0}); check CLEARML_API_ACCESS_KEY and CLEARML_API_SECRET_KEY"
    )]
    CredentialsRejected(#[source] ClearmlError),
    /// The first login got an answer that no ClearML API server gives.
    #[error(
        "{api_host} does not answer as a ClearML API server ({source}); check CLEARML_API_HOST"
    )]
    NotClearml {
        /// `CLEARML_API_HOST`.
        api_host: String,
        /// What it answered.
        #[source]
        source: ClearmlError,
    },
}

/// What one successful poll did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Tasks the listing returned (this gateway's or not).
    pub listed: usize,
    /// Tasks of this gateway that are running.
    pub tasks: usize,
    /// Routes now served.
    pub routes: usize,
    /// Whether the route table changed.
    pub changed: bool,
    /// Write-backs started (they finish in the background).
    pub writes_started: usize,
}

/// Keeps a [`RouteStore`] in step with ClearML.
pub struct Sync {
    client: Arc<ClearmlClient>,
    routes: Arc<RouteStore>,
    readiness: Arc<Readiness>,
    settings: SyncSettings,
    queues: QueueFilter,
    writer: Writer,
    sessions: Option<Arc<TcpSessions>>,
    waiting_for_port: HashSet<String>,
    metrics: Arc<SyncMetrics>,
    reported: HashSet<Skip>,
    outage: Option<Outage>,
}

struct Outage {
    since: Instant,
    failures: u32,
}

impl Sync {
    /// A sync that publishes into `routes` and marks `readiness` after its first poll.
    pub fn new(
        client: Arc<ClearmlClient>,
        routes: Arc<RouteStore>,
        readiness: Arc<Readiness>,
        settings: SyncSettings,
    ) -> Self {
        let metrics = Arc::new(SyncMetrics::default());
        Self {
            client: Arc::clone(&client),
            routes,
            readiness,
            queues: QueueFilter::new(settings.listen_queues.clone()),
            writer: Writer::new(
                Arc::clone(&metrics),
                Arc::clone(&client),
                settings.write_concurrency,
                settings.poll_interval,
            ),
            settings,
            sessions: None,
            waiting_for_port: HashSet::new(),
            metrics,
            reported: HashSet::new(),
            outage: None,
        }
    }

    /// The sync's counters, for `/_gateway/metrics`.
    pub fn metrics(&self) -> Arc<SyncMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Opens and closes TCP session ports with `sessions` (with `SyncSettings::tcp` set).
    pub fn with_tcp(mut self, sessions: Arc<TcpSessions>) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// Logs in for the first time. While ClearML cannot be reached this keeps trying; if it
    /// refuses the gateway's keys, that is an error for the operator.
    pub async fn connect(&mut self) -> Result<(), SyncError> {
        loop {
            match self.client.login().await {
                Ok(claims) => {
                    self.end_outage();
                    let api = claims.api();
                    self.writer
                        .use_edit_runtime(api.is_some_and(|v| v >= ApiVersion::EDIT_RUNTIME));
                    let user = claims.identity.map(|i| i.user_name).unwrap_or_default();
                    tracing::info!(
                        server = %self.settings.api_host,
                        user = %user,
                        api = %api.map_or_else(|| "unknown".to_owned(), |v| v.to_string()),
                        write_mode = ?self.writer.mode(),
                        "logged in to ClearML"
                    );
                    return Ok(());
                }
                Err(err) if err.is_unauthorized() => {
                    return Err(SyncError::CredentialsRejected(err));
                }
                Err(err) if !err.is_transient() => {
                    return Err(SyncError::NotClearml {
                        api_host: self.settings.api_host.clone(),
                        source: err,
                    });
                }
                Err(err) => {
                    let pause = self.failed(&err);
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Polls for ever (until the task is dropped).
    pub async fn run(mut self) {
        let mut next = tokio::time::Instant::now();
        loop {
            tokio::time::sleep_until(next).await;
            let started = tokio::time::Instant::now();
            match self.sync_once().await {
                Ok(report) => {
                    memory::release_after_poll(report.listed);
                    self.metrics.succeeded(started.elapsed());
                    self.end_outage();
                    next = started + self.settings.poll_interval;
                }
                Err(err) => {
                    self.metrics.failed();
                    next = tokio::time::Instant::now() + self.failed(&err);
                }
            }
        }
    }

    /// One poll: list, plan, publish, write back.
    pub async fn sync_once(&mut self) -> Result<Report, ClearmlError> {
        let missing_every = self.settings.poll_interval.saturating_mul(5);
        if self.queues.due(self.settings.queue_refresh, missing_every) {
            self.queues.resolve(&self.client).await?;
        }
        let listed_at = Instant::now();
        let tasks = self.list_tasks().await?;
        let listed = tasks.len();
        let context = PlanContext {
            router_url: self.settings.router_url.clone(),
            api_host: self.settings.api_host.clone(),
            router_name: self.settings.router_name.clone(),
            browser_endpoint: self.settings.browser_endpoint,
            queues: self.queues.ids(),
            policy: self.settings.policy.clone(),
            own: self.settings.own.clone(),
            tcp: self.settings.tcp.clone(),
        };
        // Planning thousands of tasks is CPU work: keep it off the request threads.
        let planned = tokio::task::spawn_blocking(move || plan(tasks, &context)).await;
        let Ok(Plan {
            table,
            mut writes,
            skipped,
            tasks,
            tcp,
        }) = planned
        else {
            tracing::error!("planning the route table failed; keeping the current one");
            return Ok(Report::default());
        };
        self.report_skips(skipped);
        let routes = table.len();
        let changed = self.publish(table).await;
        if let (Some(sessions), Some(context)) = (self.sessions.clone(), self.settings.tcp.clone())
        {
            let placements = sessions
                .apply(tcp.iter().map(TcpWant::wanted).collect())
                .await;
            self.report_exhausted(&placements);
            writes.extend(tcp_writebacks(&tcp, &placements, &context));
        }
        let writes = merge_by_task(writes);
        self.readiness.set_ready(true);
        let writes_started = self.writer.submit(writes, listed_at);
        Ok(Report {
            listed,
            tasks,
            routes,
            changed,
            writes_started,
        })
    }

    /// Every routable task, once. Pages are read in id order; a task that moves between
    /// pages while they are read (another one stopped or started meanwhile) could be missed,
    /// so any task routed now but not listed is asked about by id before its routes go.
    async fn list_tasks(&self) -> Result<Vec<ListedTask>, ClearmlError> {
        let mut tasks = Vec::new();
        let mut complete = false;
        for page in 0..MAX_PAGES {
            let query = GetAllTasks {
                page: Some(page),
                page_size: Some(self.settings.page_size),
                order_by: Some(&["id"]),
                ..routable()
            };
            let batch = self.client.tasks_get_all(&query).await?;
            let last = batch.len() < self.settings.page_size as usize;
            tasks.extend(batch);
            if last {
                complete = true;
                break;
            }
        }
        if !complete {
            tracing::warn!(
                pages = MAX_PAGES,
                "the task listing did not end; routing what was read"
            );
        }
        let mut seen = HashSet::new();
        tasks.retain(|task| seen.insert(task_id(task).to_owned()));
        let current = self.routes.snapshot();
        let session_keys = match &self.sessions {
            Some(sessions) => sessions.keys().await,
            None => Vec::new(),
        };
        let session_tasks = session_keys
            .iter()
            .map(|key| key.split_once("__").map_or(key.as_str(), |(task, _)| task));
        let unlisted: HashSet<&str> = current
            .iter()
            .map(|route| route.task_id())
            .chain(session_tasks)
            .filter(|id| !seen.contains(*id))
            .collect();
        if !unlisted.is_empty() {
            let ids: Vec<&str> = unlisted.into_iter().collect();
            let query = GetAllTasks {
                id: Some(&ids),
                ..routable()
            };
            let confirmed = self.client.tasks_get_all(&query).await?;
            tasks.extend(
                confirmed
                    .into_iter()
                    .filter(|t| seen.insert(task_id(t).to_owned())),
            );
        }
        Ok(tasks)
    }

    /// Swaps the table in when it differs from the one served; logs what changed.
    async fn publish(&self, table: RouteTable) -> bool {
        let current = self.routes.snapshot();
        if current.same_routes(&table) {
            return false;
        }
        log_changes(&current, &table);
        drop(current);
        self.routes.replace(table).await;
        true
    }

    /// Says when sessions start waiting for a port, once, not at every poll.
    fn report_exhausted(&mut self, placements: &std::collections::HashMap<String, Placement>) {
        let waiting: HashSet<String> = placements
            .iter()
            .filter(|(_, p)| **p == Placement::Exhausted)
            .map(|(key, _)| key.clone())
            .collect();
        let new: Vec<&String> = waiting.difference(&self.waiting_for_port).collect();
        if !new.is_empty() {
            tracing::warn!(sessions = ?new, "the TCP session port range is exhausted: these wait for a port, and their tasks get _ROUTER_ERROR");
        }
        self.waiting_for_port = waiting;
    }

    /// Logs each skipped entry once, for as long as it stays skipped.
    fn report_skips(&mut self, skipped: Vec<Skip>) {
        let current: HashSet<Skip> = skipped.into_iter().collect();
        for skip in current.difference(&self.reported) {
            tracing::warn!(
                task = %skip.task_id,
                key = skip.key.as_deref().unwrap_or("-"),
                reason = %skip.reason,
                "task entry skipped"
            );
        }
        self.reported = current;
    }

    /// Notes a failure; returns how long to wait before trying again.
    fn failed(&mut self, err: &ClearmlError) -> Duration {
        let serving = self.readiness.is_ready();
        let outage = self.outage.get_or_insert_with(|| {
            if serving {
                tracing::warn!(error = %error_chain(err), "ClearML is failing; the last good route table keeps serving");
            } else {
                tracing::warn!(error = %error_chain(err), "ClearML cannot be reached yet; retrying");
            }
            Outage {
                since: Instant::now(),
                failures: 0,
            }
        });
        outage.failures += 1;
        tracing::debug!(failures = outage.failures, error = %error_chain(err), "ClearML call failed");
        let doubling = 2u32.saturating_pow(outage.failures.saturating_sub(1).min(16));
        let cap = self.settings.max_backoff.max(self.settings.poll_interval);
        self.settings
            .poll_interval
            .saturating_mul(doubling)
            .min(cap)
    }

    fn end_outage(&mut self) {
        if let Some(outage) = self.outage.take() {
            tracing::info!(
                after_s = outage.since.elapsed().as_secs(),
                failures = outage.failures,
                "ClearML answers again; sync resumed"
            );
        }
    }
}

/// One write-back per task: the HTTP and TCP keys of a task go in one write.
fn merge_by_task(writes: Vec<WriteBack>) -> Vec<WriteBack> {
    let mut merged: Vec<WriteBack> = Vec::with_capacity(writes.len());
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for write in writes {
        match index.get(&write.task_id) {
            Some(&at) => {
                merged[at].keys.extend(write.keys);
                merged[at].remove.extend(write.remove);
            }
            None => {
                index.insert(write.task_id.clone(), merged.len());
                merged.push(write);
            }
        }
    }
    merged
}

fn log_changes(old: &RouteTable, new: &RouteTable) {
    const DETAILED: usize = 20;
    let added: Vec<_> = new
        .iter()
        .filter(|r| old.lookup(r.key()) != Some(*r))
        .collect();
    let removed: Vec<_> = old
        .iter()
        .filter(|r| new.lookup(r.key()).is_none())
        .collect();
    for route in added.iter().take(DETAILED) {
        tracing::info!(route = route.key(), upstream = %route.upstream(), task = route.task_id(), "route live");
    }
    for route in removed.iter().take(DETAILED) {
        tracing::info!(route = route.key(), task = route.task_id(), "route removed");
    }
    if added.len() + removed.len() > 2 * DETAILED {
        tracing::info!(
            added = added.len(),
            removed = removed.len(),
            routes = new.len(),
            "route table replaced"
        );
    }
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}
