//! Who runs a job, and how another process takes it over when that one is gone.
//!
//! The protocol, all of it on `_config` (so it works wherever the catalog does, the embedded
//! log and Kafka alike):
//!
//! - **Holding.** The process that starts a job holds it under epoch 0 (the record names it:
//!   node, instance, epoch). While it runs the job it *renews* the record every [`RENEW`],
//!   with the job's progress and resume point; every renewal is a new catalog event.
//! - **Gone.** Each other node watches the running jobs it does not hold. A record that has
//!   not changed for [`LEASE`], measured from when *this* node first saw its current version
//!   (its own monotonic clock: no two clocks are compared), has a holder that is gone.
//!   A node that just started has seen nothing yet, so it waits a whole [`LEASE`] too. On
//!   the embedded log only one process can hold the log (its `LOCK`), so a job recorded as
//!   running by another instance is orphaned: it is taken over at once.
//! - **Claim.** The taker first applies `_config` up to its current end (it decides on the
//!   latest renewal), then creates the claim `job-claim/<id>.<epoch+1>`. A catalog `created`
//!   event for a name that exists loses, so of several nodes claiming the same epoch the log
//!   picks exactly one. The winner records itself as holder (the new epoch, `resumes` + 1) and
//!   resumes the work from the recorded checkpoint.
//! - **Fencing.** A holder stops its work (and records nothing more) when it sees a claim of a
//!   higher epoch than its own, or when it has not renewed successfully for [`FENCE`], well
//!   before anyone may take over ([`LEASE`]): a holder cut off from `_config` stops before a
//!   taker starts. Work stops at its next step (a restore between batches, a replay at once).
//! - **Cancel.** `POST .../cancel` on any node creates `job-cancel/<id>`; the holder sees it
//!   within a catalog step and stops; a job taken over with a cancel pending ends cancelled at
//!   once, with the result it had recorded.
//! - **End.** The holder records the outcome, removes the job's claims and cancel request,
//!   and removes the oldest finished records of the kind beyond [`super::KEEP_FINISHED`].
//!
//! What a takeover may redo is the work after the last recorded checkpoint; each kind makes
//! that harmless (restores skip keys the job already wrote, replays re-deliver at least once,
//! syncs re-diff).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use tidemark_core::Error as CoreError;
use tidemark_core::catalog::{Action, Catalog, Entry};
use tokio::time::Instant;
use uuid::Uuid;

use super::record::{CANCEL_KIND, CLAIM_KIND, Holder, JOB_KIND, Record};
use super::{Job, Jobs, Local, State};
use crate::Result;

/// A holder whose record has not changed for this long (as each node observes it) is gone,
/// and its job may be taken over.
pub const LEASE: Duration = Duration::from_secs(10);
/// How often a holder renews its record.
pub const RENEW: Duration = Duration::from_secs(2);
/// A holder that has not renewed for this long stops its work itself: well within [`LEASE`].
pub const FENCE: Duration = Duration::from_secs(5);
/// How often running jobs are looked over besides every catalog change.
const SCAN: Duration = Duration::from_secs(1);
/// How long a taker waits to have applied `_config` to its end.
const CATCH_UP: Duration = Duration::from_secs(30);

/// Starts the work of a job taken over (each kind knows its own).
pub trait Resume: Send + Sync {
    /// The work of `job` from its checkpoint ([`Job::checkpoint`]; `None`: from the start).
    fn resume(&self, job: Arc<Job>) -> BoxFuture<'static, Result<Value>>;
}

/// The lease's durations ([`LEASE`], [`RENEW`], [`FENCE`]; shorter in unit tests).
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    pub lease: Duration,
    pub renew: Duration,
    pub fence: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease: LEASE,
            renew: RENEW,
            fence: FENCE,
        }
    }
}

/// The jobs' place in `_config`, and this process's name there.
pub(super) struct Store {
    catalog: Arc<Catalog>,
    pub(super) timing: Timing,
    /// Finished jobs kept per kind ([`super::KEEP_FINISHED`]).
    pub(super) keep: usize,
    node: Option<String>,
    /// This process: unique per start.
    instance: String,
    /// No other process shares `_config` (the embedded log).
    alone: bool,
}

impl Store {
    pub(super) fn new(catalog: Arc<Catalog>, node: Option<String>, alone: bool) -> Store {
        Store {
            catalog,
            timing: Timing::default(),
            keep: super::KEEP_FINISHED,
            node,
            instance: Uuid::now_v7().simple().to_string(),
            alone,
        }
    }

    pub(super) fn holder(&self, epoch: u64) -> Holder {
        Holder {
            node: self.node.clone(),
            instance: self.instance.clone(),
            epoch,
        }
    }

    pub(super) fn record(&self, id: &str) -> Option<(Entry, Record)> {
        let entry = self.catalog.get(JOB_KIND, id)?;
        let record = Record::parse(&entry.spec)?;
        Some((entry, record))
    }

    /// Every recorded job of `kind`, oldest first.
    pub(super) fn records(&self, kind: &str) -> Vec<(String, Record)> {
        self.catalog
            .list_prefix(JOB_KIND, &format!("{kind}-"), None, usize::MAX)
            .into_iter()
            .filter_map(|e| Record::parse(&e.spec).map(|r| (e.name, r)))
            .filter(|(_, r)| r.kind == kind)
            .collect()
    }

    pub(super) async fn create(&self, id: &str, record: &Record) -> Result<()> {
        let spec = serde_json::to_string(record).expect("a record serializes");
        self.catalog
            .change(JOB_KIND, id, Action::Create, Some(spec), None)
            .await?;
        Ok(())
    }

    pub(super) async fn update(&self, id: &str, record: &Record) -> Result<()> {
        let spec = serde_json::to_string(record).expect("a record serializes");
        self.catalog
            .change(JOB_KIND, id, Action::Update, Some(spec), None)
            .await?;
        Ok(())
    }

    /// The highest epoch claimed for job `id` (0: never taken over).
    pub(super) fn claimed(&self, id: &str) -> u64 {
        let prefix = format!("{id}.");
        self.catalog
            .list_prefix(CLAIM_KIND, &prefix, None, usize::MAX)
            .iter()
            .filter_map(|e| e.name[prefix.len()..].parse::<u64>().ok())
            .max()
            .unwrap_or(0)
    }

    /// Claim `epoch` of job `id`: true if this process's claim is the one the log kept.
    async fn claim(&self, id: &str, epoch: u64) -> Result<bool> {
        let spec = serde_json::to_string(&self.holder(epoch)).expect("a holder serializes");
        let name = format!("{id}.{epoch}");
        match self
            .catalog
            .change(CLAIM_KIND, &name, Action::Create, Some(spec), None)
            .await
        {
            Ok(_) => Ok(true),
            Err(CoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) fn cancel_requested(&self, id: &str) -> bool {
        self.catalog.get(CANCEL_KIND, id).is_some()
    }

    pub(super) async fn request_cancel(&self, id: &str) -> Result<()> {
        match self
            .catalog
            .change(CANCEL_KIND, id, Action::Create, Some("{}".into()), None)
            .await
        {
            Ok(_) | Err(CoreError::Conflict(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Remove what a finished job leaves besides its record: claims, cancel request. Another
    /// node doing the same at the same time is no error.
    async fn forget(&self, id: &str) {
        let claims = self
            .catalog
            .list_prefix(CLAIM_KIND, &format!("{id}."), None, usize::MAX);
        let cancel = self.catalog.get(CANCEL_KIND, id);
        for e in claims.iter().chain(cancel.iter()) {
            self.remove(&e.kind, &e.name).await;
        }
    }

    async fn remove(&self, kind: &str, name: &str) {
        match self
            .catalog
            .change(kind, name, Action::Delete, None, None)
            .await
        {
            Ok(_) | Err(CoreError::NotFound(_)) => {}
            Err(e) => tracing::warn!("removing {kind} '{name}' from _config: {e}"),
        }
    }

    /// Remove the oldest finished jobs of `kind` beyond the newest [`Store::keep`].
    async fn prune(&self, kind: &str) {
        let finished: Vec<String> = self
            .records(kind)
            .into_iter()
            .filter(|(_, r)| !r.running())
            .map(|(id, _)| id)
            .collect();
        let excess = finished.len().saturating_sub(self.keep);
        for id in &finished[..excess] {
            self.forget(id).await;
            self.remove(JOB_KIND, id).await;
        }
    }
}

/// Keep `job`'s lease while it runs: renew its record, stop it when another process claimed
/// it or when renewing failed for [`FENCE`], pass on a cancel request, and record its outcome
/// once it ends. Then it is no longer this process's.
///
/// Alone on `_config` (the embedded log) nobody watches for renewals: the record is written
/// only when it changed, and a holder that cannot write keeps its job (nobody else could run
/// it) and tries again.
pub(super) async fn keep(job: Arc<Job>, store: Arc<Store>, local: Local) {
    // The record was written just before the work started.
    let mut renewed = Instant::now();
    let mut written: Option<Record> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(store.timing.renew) => {}
            _ = job.ended.notified() => {}
        }
        if job.is_lost() {
            break;
        }
        if store.claimed(&job.id) > job.holder.epoch {
            job.lose("another node took the job over");
            break;
        }
        if !store.alone && renewed.elapsed() > store.timing.fence {
            job.lose(
                "its lease in _config could not be renewed in time; another node may take it over",
            );
            break;
        }
        if store.cancel_requested(&job.id) {
            job.cancel();
        }
        let ended = job.state() != State::Running;
        if store.alone && !ended && written.as_ref() == Some(&job.record()) {
            continue;
        }
        let started = Instant::now();
        match job.write().await {
            Ok(_) if ended => {
                store.forget(&job.id).await;
                store.prune(&job.kind).await;
                break;
            }
            Ok(record) => {
                renewed = started;
                written = record;
            }
            Err(e) if job.is_lost() => {
                tracing::debug!(job = job.id, "{e}");
                break;
            }
            Err(e) => tracing::warn!(job = job.id, "recording the job in _config: {e}; retrying"),
        }
    }
    local.lock().unwrap().remove(&job.id);
}

/// What this process knows of a running job it does not hold.
struct Seen {
    /// The record's version, and since when (this process's clock) it is unchanged.
    changed_by: Uuid,
    since: Instant,
    running: bool,
    instance: String,
}

impl Jobs {
    /// Watch the recorded jobs for as long as this process runs: take over those whose holder
    /// is gone (resuming them with `resume`), and pass cancel requests to the jobs this
    /// process runs. Returns at once for jobs kept in memory only.
    pub async fn supervise(self: Arc<Self>, resume: Arc<dyn Resume>) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let mut changes = store.catalog.watch();
        let mut seen: HashMap<String, Seen> = HashMap::new();
        loop {
            for job in self.local.lock().unwrap().values() {
                if store.cancel_requested(&job.id) {
                    job.cancel();
                }
            }
            for (id, version) in self.orphans(&store, &mut seen) {
                if let Err(e) = self.take_over(&store, &id, version, &resume).await {
                    tracing::warn!(job = id, "taking over the job: {e}; retrying later");
                }
                seen.remove(&id);
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(SCAN) => {}
            }
        }
    }

    /// The running jobs whose holder is gone (see the module's protocol), each with the
    /// version of its record that went unrenewed; updates `seen`.
    fn orphans(&self, store: &Store, seen: &mut HashMap<String, Seen>) -> Vec<(String, Uuid)> {
        let versions = store.catalog.versions(JOB_KIND);
        seen.retain(|id, _| versions.iter().any(|(name, _)| name == id));
        let now = Instant::now();
        let mut out = Vec::new();
        for (id, changed_by) in versions {
            if seen.get(&id).is_none_or(|s| s.changed_by != changed_by) {
                let Some((_, record)) = store.record(&id) else {
                    continue;
                };
                seen.insert(
                    id.clone(),
                    Seen {
                        changed_by,
                        since: now,
                        running: record.running(),
                        instance: record.holder.instance,
                    },
                );
            }
            let s = &seen[&id];
            if !s.running || self.local(&id).is_some() {
                continue;
            }
            let gone = if store.alone {
                s.instance != store.instance
            } else {
                now.duration_since(s.since) >= store.timing.lease
            };
            if gone {
                out.push((id, changed_by));
            }
        }
        out
    }

    /// Claim job `id` and resume it, unless its record changed from `version` meanwhile or
    /// another process won the claim.
    async fn take_over(
        &self,
        store: &Arc<Store>,
        id: &str,
        version: Uuid,
        resume: &Arc<dyn Resume>,
    ) -> Result<()> {
        tokio::time::timeout(CATCH_UP, store.catalog.caught_up())
            .await
            .map_err(|_| CoreError::Unavailable("_config could not be read to its end".into()))??;
        let Some((entry, record)) = store.record(id) else {
            return Ok(());
        };
        // Renewed after all (this node was behind on `_config`): the holder is alive.
        if !record.running() || (!store.alone && entry.changed_by != version) {
            return Ok(());
        }
        let epoch = store.claimed(id).max(record.holder.epoch) + 1;
        if !store.claim(id, epoch).await? {
            return Ok(());
        }
        // The claim is applied, and so is everything the log put before it.
        let Some((_, mut record)) = store.record(id) else {
            return Ok(());
        };
        if !record.running() {
            store.forget(id).await;
            return Ok(());
        }
        tracing::info!(
            job = id,
            epoch,
            from = ?record.holder.node,
            "taking over the job: its holder is gone"
        );
        record.holder = store.holder(epoch);
        record.resumes += 1;
        let job = Arc::new(Job::with(id.to_string(), record, Some(store.clone())));
        job.save().await?;
        if store.cancel_requested(id) {
            job.cancel();
            let mut result = job.detail();
            if let Some(r) = result.as_object_mut() {
                r.insert("cancelled".into(), true.into());
            }
            self.launch(job, async move { Ok::<_, crate::Error>(result) });
            return Ok(());
        }
        let work = resume.resume(job.clone());
        self.launch(job, work);
        Ok(())
    }
}
