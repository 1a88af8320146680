//! A restore as a durable job: planned once, its plan's summary and a checkpoint recorded
//! before anything is written, and resumed after a restart (or on another node) without
//! writing any compensating event twice.
//!
//! Invariant: every key up to the checkpoint's `after` is finished and counted in its tally;
//! every event the job wrote for a later key is past `scan_from` in the log. So a resume
//! re-plans only the keys after `after`, and reads the log from `scan_from` for the events
//! whose request id is the job's: for each key it finds, the state before the job's first
//! event on it is what the original plan compared, and the state now says what is left (most
//! often nothing). The keys are counted as the uninterrupted run would have counted them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tidemark_core::OBJECTS_TOPIC;
use tidemark_core::blobs::BlobStore;
use tidemark_core::blocking::blocking;
use tidemark_core::event::ObjectState;
use tidemark_core::ingest::{Ingestor, Writer};

use super::apply::{Tally, Target, apply};
use super::plan::{Plan, actions_for, plan};
use super::{Restore, Sources, catch_up, index_at, objects_in};
use crate::jobs::Job;
use crate::{Error, Result};

/// Records read from the log at a time while looking for the job's own events.
const SCAN_CHUNK: usize = 1000;

/// Where a restore job is, as `_config` records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The plan's answer as first made (counts, samples, unavailable keys).
    pub planned: Value,
    /// Steps of the first plan.
    pub total: u64,
    /// Steps gone through (restored, skipped or failed).
    pub processed: u64,
    /// Every key up to this one is finished.
    pub after: Option<String>,
    /// Per partition of `objects`, where the log ended when the checkpoint was taken: the
    /// job's events on keys after `after` are all past it.
    pub scan_from: BTreeMap<u32, u64>,
    pub tally: Tally,
}

impl Checkpoint {
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a checkpoint serializes")
    }
}

/// The work of restore `job` (spec: [`Restore::to_json`]): plan and apply it, or, with a
/// checkpoint, re-plan and apply what is left.
pub async fn run(
    sources: Sources,
    ingestor: Arc<Ingestor>,
    writer: Arc<dyn Writer>,
    job: Arc<Job>,
) -> Result<Value> {
    let restore = Restore::of_job(&job.spec)?;
    let (plan, mut at) = match job.checkpoint() {
        Some(c) => {
            let at: Checkpoint = serde_json::from_value(c).map_err(|e| {
                Error::Internal(format!("restore {} has a damaged checkpoint: {e}", job.id))
            })?;
            let plan = replan(&sources, &restore, &at, &job.id).await?;
            (plan, at)
        }
        None => {
            job.set_detail(json!({"phase": "planning"}));
            let plan = super::prepare(&sources, &restore).await?;
            let at = Checkpoint {
                planned: plan.to_json(),
                total: plan.steps.len() as u64,
                processed: 0,
                after: None,
                scan_from: sources.materializer.log_ends().await?,
                tally: Tally::default(),
            };
            job.set_total(at.total);
            job.set_checkpoint(at.to_json());
            // Durable before the first write: a takeover knows the plan and where in the log
            // this job's events start.
            job.save().await?;
            (plan, at)
        }
    };
    let target = Target {
        ingestor: &ingestor,
        writer: writer.as_ref(),
        materializer: &sources.materializer,
    };
    apply(&plan, &mut at, target, &job, restore.rate).await
}

/// The steps left after `at`, given what job `job_id` wrote past `at.scan_from`.
async fn replan(
    sources: &Sources,
    restore: &Restore,
    at: &Checkpoint,
    job_id: &str,
) -> Result<Plan> {
    catch_up(sources).await?;
    let then = index_at(
        sources.log.clone(),
        sources.codec.clone(),
        sources.snapshots.clone(),
        restore.at,
    )
    .await?;
    let mut written = written_by(sources, &restore.bucket, job_id, &at.scan_from).await?;
    let (index, blobs, r, after) = (
        sources.index.clone(),
        sources.blobs.clone(),
        restore.clone(),
        at.after.clone(),
    );
    blocking(move || {
        let now = objects_in(&index, &r.bucket, &r.prefix, after.as_deref())?;
        let old = objects_in(&then.index, &r.bucket, &r.prefix, after.as_deref())?;
        written.retain(|k, _| after.as_ref().is_none_or(|a| k > a));
        resume_plan(&r.bucket, &now, &old, &written, blobs.as_ref())
    })
    .await
    .map_err(Error::from)
}

/// The plan the first run made for these keys, with what is left of each: `before` is, for
/// each key the job wrote, its state before the job's first event on it.
pub fn resume_plan(
    bucket: &str,
    now: &BTreeMap<String, ObjectState>,
    then: &BTreeMap<String, ObjectState>,
    before: &BTreeMap<String, Option<ObjectState>>,
    blobs: &dyn BlobStore,
) -> tidemark_core::Result<Plan> {
    let mut as_planned = now.clone();
    for (key, state) in before {
        match state {
            Some(s) => as_planned.insert(key.clone(), s.clone()),
            None => as_planned.remove(key),
        };
    }
    let mut plan = plan(bucket, &as_planned, then, blobs)?;
    for step in plan
        .steps
        .iter_mut()
        .filter(|s| before.contains_key(&s.key))
    {
        let current = now.get(&step.key);
        let left = actions_for(current, step.then.as_ref());
        step.done_before = step
            .actions
            .iter()
            .filter(|a| !left.contains(a))
            .copied()
            .collect();
        step.actions = left;
        step.now = current.cloned();
    }
    Ok(plan)
}

/// The keys of `bucket` that job `job_id` wrote in the log from `from` (per partition) to its
/// end, each with its state before the job's first event on it.
async fn written_by(
    sources: &Sources,
    bucket: &str,
    job_id: &str,
    from: &BTreeMap<u32, u64>,
) -> Result<BTreeMap<String, Option<ObjectState>>> {
    let log = sources.log.as_ref();
    let prefix = format!("{bucket}/");
    let mut out = BTreeMap::new();
    for p in 0..log.partitions(OBJECTS_TOPIC)? {
        let range = log.offsets(OBJECTS_TOPIC, p).await?;
        let mut next = from
            .get(&p)
            .copied()
            .unwrap_or(range.start)
            .max(range.start);
        while next < range.end {
            let records = log
                .read(OBJECTS_TOPIC, p, next, SCAN_CHUNK, Duration::ZERO)
                .await?;
            let Some(last) = records.last().map(|r| r.offset) else {
                break;
            };
            for rec in records
                .iter()
                .filter(|r| r.key.starts_with(prefix.as_bytes()))
            {
                // The job's own events decode: it wrote them.
                let Ok(event) = sources.codec.decode(&rec.value) else {
                    continue;
                };
                if event.request_id.as_deref() == Some(job_id) && event.bucket == bucket {
                    out.entry(event.key).or_insert(event.previous);
                }
            }
            next = last + 1;
        }
    }
    Ok(out)
}
