//! Long-running jobs (re-deliveries, restores, syncs): each has an id, a state, progress
//! (`done` of `total`), kind-specific counters and result, and can be cancelled. A failed job
//! keeps its error's kind: it says whether running it again may help.
//!
//! On a server the jobs are durable: each is a record in `_config` (`record.rs`) written when
//! it starts, renewed every [`lease::RENEW`] with its progress and resume point, and written
//! once more when it ends; so every node lists every job, a restart forgets none, and a job
//! whose process is gone is taken over and resumed (`lease.rs` says how, and why two
//! processes never both run one). Finished jobs are kept, the newest [`KEEP_FINISHED`] of each
//! kind. Without `_config` ([`Jobs::default`], unit tests) jobs live in memory only.
//!
//! # Layout
//! - `mod.rs`: a job as the process running it sees it ([`Job`]); the jobs ([`Jobs`]): start,
//!   list, show, cancel.
//! - `record.rs`: a job as `_config` holds it.
//! - `lease.rs`: who runs a job: renewal, claims, takeover, cancel across nodes.

mod lease;
mod record;

pub use lease::{LEASE, Resume};
pub use record::Record;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tidemark_core::ErrorKind;
use tidemark_core::catalog::Catalog;
use tidemark_core::time::now_us;
use tokio::sync::{Notify, watch};

use crate::{Error, Result};
use lease::Store;
use record::Holder;

/// Finished jobs kept per kind (in `_config`, or in memory without it).
pub const KEEP_FINISHED: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }

    fn parse(text: &str) -> State {
        match text {
            "succeeded" => State::Succeeded,
            "failed" => State::Failed,
            "cancelled" => State::Cancelled,
            _ => State::Running,
        }
    }
}

pub struct Job {
    /// `<kind>-<uuid v7>`: sorts by creation time.
    pub id: String,
    pub kind: String,
    /// The request, as accepted.
    pub spec: Value,
    /// What resuming needs that is never shown (see [`Record::private`]).
    pub private: Value,
    pub created_at: i64,
    pub total: AtomicU64,
    pub done: AtomicU64,
    inner: Mutex<Inner>,
    cancel: watch::Sender<bool>,
    /// The process running the job, under the epoch it claimed.
    holder: Holder,
    /// Times the job was taken over before this run.
    resumes: u64,
    /// Another process runs the job now (or this one could not renew its lease in time): the
    /// work stops, and this process records nothing more of it.
    lost: AtomicBool,
    /// Where the job is recorded; `None`: in memory only.
    store: Option<Arc<Store>>,
    /// Record writes one at a time, each with the job as it is when it starts, so an older
    /// state never lands after a newer one.
    writing: tokio::sync::Mutex<()>,
    /// Wakes the lease keeper when the work has ended, to record the outcome at once.
    ended: Notify,
}

struct Inner {
    state: State,
    finished_at: Option<i64>,
    /// Kind-specific counters while running, and the result once finished.
    detail: Value,
    error: Option<(String, ErrorKind)>,
    /// The latest resume point the work reported (or the one it was resumed from).
    checkpoint: Option<Value>,
}

impl Job {
    fn new(
        kind: &str,
        spec: Value,
        private: Value,
        holder: Holder,
        store: Option<Arc<Store>>,
    ) -> Job {
        Job::with(
            format!("{kind}-{}", uuid::Uuid::now_v7().simple()),
            Record {
                kind: kind.into(),
                spec,
                private,
                state: State::Running.as_str().into(),
                created_at: now_us(),
                finished_at: None,
                done: 0,
                total: 0,
                result: json!({}),
                error: None,
                error_kind: None,
                checkpoint: None,
                holder,
                resumes: 0,
            },
            store,
        )
    }

    /// The job as `record` describes it, run by `record.holder`.
    fn with(id: String, record: Record, store: Option<Arc<Store>>) -> Job {
        let error = record.error.map(|m| {
            (
                m,
                record::parse_kind(record.error_kind.as_deref().unwrap_or("")),
            )
        });
        Job {
            id,
            kind: record.kind,
            spec: record.spec,
            private: record.private,
            created_at: record.created_at,
            total: AtomicU64::new(record.total),
            done: AtomicU64::new(record.done),
            inner: Mutex::new(Inner {
                state: State::parse(&record.state),
                finished_at: record.finished_at,
                detail: record.result,
                error,
                checkpoint: record.checkpoint,
            }),
            cancel: watch::Sender::new(false),
            holder: record.holder,
            resumes: record.resumes,
            lost: AtomicBool::new(false),
            store,
            writing: tokio::sync::Mutex::new(()),
            ended: Notify::new(),
        }
    }

    pub fn state(&self) -> State {
        self.inner.lock().unwrap().state
    }

    /// Why a failed job failed, as a kind a caller can act on (retry or not).
    pub fn failure_kind(&self) -> Option<ErrorKind> {
        self.inner.lock().unwrap().error.as_ref().map(|e| e.1)
    }

    /// Ask the job to stop; it stops at its next step and reports how far it got.
    pub fn cancel(&self) {
        self.cancel.send_replace(true);
    }

    /// True once the job is asked to stop: cancelled, or lost to another process.
    pub fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Turns true when the job is asked to stop.
    pub fn cancelled(&self) -> watch::Receiver<bool> {
        self.cancel.subscribe()
    }

    /// Whether another process runs the job now: this one's work stopped for that reason and
    /// must leave shared things (stored secrets) alone.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    fn lose(&self, why: &str) {
        tracing::warn!(job = self.id, "stopping the job here: {why}");
        self.lost.store(true, Ordering::SeqCst);
        self.cancel();
    }

    /// How many times the job was taken over before this run (0 for a first run).
    pub fn resumes(&self) -> u64 {
        self.resumes
    }

    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    pub fn add_done(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// Replace the kind-specific counters shown while running.
    pub fn set_detail(&self, detail: Value) {
        self.inner.lock().unwrap().detail = detail;
    }

    /// The counters shown now (after a takeover: as last recorded).
    pub fn detail(&self) -> Value {
        self.inner.lock().unwrap().detail.clone()
    }

    /// Where the work resumes: the point it last reported, or, right after a takeover, the
    /// one recorded by the process before. `None`: start from the beginning.
    pub fn checkpoint(&self) -> Option<Value> {
        self.inner.lock().unwrap().checkpoint.clone()
    }

    /// Report a resume point; it is recorded with the next renewal (or [`Job::save`]).
    pub fn set_checkpoint(&self, checkpoint: Value) {
        self.inner.lock().unwrap().checkpoint = Some(checkpoint);
    }

    /// Record the job now (its progress and resume point), for work that must not go on
    /// before its resume point is durable. A no-op for a job kept in memory only.
    pub async fn save(&self) -> Result<()> {
        self.write().await.map(|_| ())
    }

    /// Record the job as it is now; returns what was recorded (`None`: in memory only).
    async fn write(&self) -> Result<Option<Record>> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let _one = self.writing.lock().await;
        if !self.is_lost() && store.claimed(&self.id) > self.holder.epoch {
            self.lose("another node took the job over");
        }
        if self.is_lost() {
            return Err(Error::Core(tidemark_core::Error::Conflict(format!(
                "job {} is run by another node now",
                self.id
            ))));
        }
        let record = self.record();
        store.update(&self.id, &record).await?;
        Ok(Some(record))
    }

    fn finish(&self, outcome: Result<Value>) {
        let mut inner = self.inner.lock().unwrap();
        inner.finished_at = Some(now_us());
        match outcome {
            Ok(result) => {
                inner.state = if self.is_cancelled() {
                    State::Cancelled
                } else {
                    State::Succeeded
                };
                inner.detail = result;
            }
            Err(e) => {
                inner.state = State::Failed;
                inner.error = Some((e.to_string(), e.kind()));
            }
        }
        drop(inner);
        self.ended.notify_one();
    }

    /// The job as `_config` records it.
    pub fn record(&self) -> Record {
        let inner = self.inner.lock().unwrap();
        Record {
            kind: self.kind.clone(),
            spec: self.spec.clone(),
            private: self.private.clone(),
            state: inner.state.as_str().into(),
            created_at: self.created_at,
            finished_at: inner.finished_at,
            done: self.done.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
            result: inner.detail.clone(),
            error: inner.error.as_ref().map(|e| e.0.clone()),
            error_kind: inner.error.as_ref().map(|e| record::kind_name(e.1).into()),
            // A finished job is never resumed.
            checkpoint: (inner.state == State::Running)
                .then(|| inner.checkpoint.clone())
                .flatten(),
            holder: self.holder.clone(),
            resumes: self.resumes,
        }
    }

    /// `GET /v1/replays/ID` (and restores, syncs): what the job is, where it is, what it did.
    pub fn to_json(&self) -> Value {
        self.record().to_json(&self.id)
    }
}

/// Local jobs by id: those this process runs (and, without `_config`, those it finished).
type Local = Arc<Mutex<BTreeMap<String, Arc<Job>>>>;

/// The jobs: with `_config`, those of every node; in memory, those of this process.
#[derive(Default)]
pub struct Jobs {
    store: Option<Arc<Store>>,
    local: Local,
}

impl Jobs {
    /// Jobs recorded in `catalog` (`_config`). `node` names this node in listings. `alone`:
    /// no other process shares the catalog (the embedded log, which one process holds), so a
    /// job another process was running is resumed as soon as this one starts; otherwise only
    /// once its holder has been silent for [`LEASE`].
    pub fn durable(catalog: Arc<Catalog>, node: Option<String>, alone: bool) -> Jobs {
        Jobs {
            store: Some(Arc::new(Store::new(catalog, node, alone))),
            local: Local::default(),
        }
    }

    /// A job not yet recorded or running: its id is known before its work is set up, and a
    /// dry run can report through it without ever starting it.
    pub fn prepare(&self, kind: &str, spec: Value, private: Value) -> Arc<Job> {
        let holder = match &self.store {
            Some(s) => s.holder(0),
            None => Holder {
                node: None,
                instance: String::new(),
                epoch: 0,
            },
        };
        Arc::new(Job::new(kind, spec, private, holder, self.store.clone()))
    }

    /// Record `job` (so it is durable before anyone is told of it) and run `fut` for it in its
    /// own task. `fut` returns the job's result (also when it stopped early because it was
    /// cancelled) or its error.
    pub async fn start<Fut, E>(&self, job: Arc<Job>, fut: Fut) -> Result<Arc<Job>>
    where
        Fut: Future<Output = std::result::Result<Value, E>> + Send + 'static,
        E: Into<Error>,
    {
        if let Some(store) = &self.store {
            store.create(&job.id, &job.record()).await?;
        }
        self.launch(job.clone(), fut);
        Ok(job)
    }

    /// Run `fut` for `job` (recorded already) in its own task, and keep its lease.
    fn launch<Fut, E>(&self, job: Arc<Job>, fut: Fut)
    where
        Fut: Future<Output = std::result::Result<Value, E>> + Send + 'static,
        E: Into<Error>,
    {
        self.remember(job.clone());
        let me = job.clone();
        tokio::spawn(async move {
            let outcome = fut.await.map_err(Into::into);
            if let Err(e) = &outcome
                && !me.is_lost()
            {
                tracing::error!(job = me.id, "job failed: {e}");
            }
            me.finish(outcome);
        });
        if let Some(store) = &self.store {
            tokio::spawn(lease::keep(job, store.clone(), self.local.clone()));
        }
    }

    fn remember(&self, job: Arc<Job>) {
        let mut local = self.local.lock().unwrap();
        local.insert(job.id.clone(), job.clone());
        if self.store.is_some() {
            return;
        }
        let finished: Vec<String> = local
            .values()
            .filter(|j| j.kind == job.kind && j.state() != State::Running)
            .map(|j| j.id.clone())
            .collect();
        for id in finished
            .iter()
            .take(finished.len().saturating_sub(KEEP_FINISHED))
        {
            local.remove(id);
        }
    }

    fn local(&self, id: &str) -> Option<Arc<Job>> {
        self.local.lock().unwrap().get(id).cloned()
    }

    /// The job `id` of `kind`, as JSON: this process's live view if it runs it, else the
    /// record of whichever node does (or did).
    pub fn view(&self, kind: &str, id: &str) -> Option<Value> {
        if let Some(job) = self.local(id).filter(|j| j.kind == kind) {
            return Some(job.to_json());
        }
        let (_, record) = self.store.as_ref()?.record(id)?;
        (record.kind == kind).then(|| record.to_json(id))
    }

    /// Every job of `kind`, oldest first, as JSON.
    pub fn list(&self, kind: &str) -> Vec<Value> {
        let local = self.local.lock().unwrap().clone();
        let Some(store) = &self.store else {
            return local
                .values()
                .filter(|j| j.kind == kind)
                .map(|j| j.to_json())
                .collect();
        };
        store
            .records(kind)
            .into_iter()
            .map(|(id, record)| match local.get(&id) {
                Some(job) => job.to_json(),
                None => record.to_json(&id),
            })
            .collect()
    }

    /// Ask job `id` of `kind` to stop, wherever it runs: recorded in `_config`, where the node
    /// running it (or the one that takes it over) sees it. Returns the job as it is now;
    /// `None` when there is no such job. A finished job is left as it is.
    pub async fn cancel(&self, kind: &str, id: &str) -> Result<Option<Value>> {
        let Some(view) = self.view(kind, id) else {
            return Ok(None);
        };
        if view["state"] != State::Running.as_str() {
            return Ok(Some(view));
        }
        if let Some(store) = &self.store {
            store.request_cancel(id).await?;
        }
        if let Some(job) = self.local(id) {
            job.cancel();
        }
        Ok(self.view(kind, id))
    }
}

#[cfg(test)]
mod tests;
