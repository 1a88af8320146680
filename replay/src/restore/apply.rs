//! Carrying out a plan: compensating mutations written through the node's writer in batches
//! (each on the node that writes its key's partition), each event naming the restore job as
//! its request id. After each batch the job reports a checkpoint (the last key done, the
//! counts so far, where the log ended); between batches it may be cancelled (or lost to
//! another node); what was appended stays appended, and the result says how far it got.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tidemark_core::Error as CoreError;
use tidemark_core::index::Materializer;
use tidemark_core::ingest::{Ingestor, RequestContext, Writer};
use tokio::time::Instant;

use super::plan::{Action, LISTED, Plan, Step, counts_json, looks_the_same};
use super::resume::Checkpoint;
use crate::Result;
use crate::jobs::Job;

/// Objects per append.
const BATCH: usize = 500;
/// Recorded as the requester of every compensating event.
pub const REQUESTER: &str = "tidemark-restore";

/// What applying has done so far (carried across a takeover in the checkpoint).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Tally {
    done: BTreeMap<Action, u64>,
    objects: u64,
    skipped: u64,
    failed: u64,
    /// The first [`LISTED`] skipped and failed keys, with their reason.
    skipped_keys: Vec<(String, String)>,
    failed_keys: Vec<(String, String)>,
}

impl Tally {
    fn skip(&mut self, key: &str, reason: String) {
        self.skipped += 1;
        if self.skipped_keys.len() < LISTED {
            self.skipped_keys.push((key.to_string(), reason));
        }
    }

    fn fail(&mut self, key: &str, reason: String) {
        self.failed += 1;
        if self.failed_keys.len() < LISTED {
            self.failed_keys.push((key.to_string(), reason));
        }
    }

    fn restored(&mut self, step: &Step) {
        for a in step.done_before.iter().chain(&step.actions) {
            *self.done.entry(*a).or_default() += 1;
        }
        self.objects += 1;
    }

    /// `planned` is the plan's JSON, made once.
    pub fn to_json(&self, planned: &Value) -> Value {
        let listed = |v: &[(String, String)]| -> Vec<Value> {
            v.iter()
                .map(|(key, reason)| json!({"key": key, "reason": reason}))
                .collect()
        };
        let mut done = counts_json(&Action::ALL.iter().map(|a| (*a, 0)).collect());
        for (a, n) in &self.done {
            done[a.as_str()] = json!(n);
        }
        json!({
            "planned": planned["counts"],
            "done": done,
            "restored_objects": self.objects,
            "skipped": self.skipped,
            "failed": self.failed,
            "unavailable": planned["counts"]["unavailable"],
            "skipped_keys": listed(&self.skipped_keys),
            "failed_keys": listed(&self.failed_keys),
            "unavailable_keys": planned["unavailable"],
        })
    }
}

/// Where compensating mutations go, and how to tell what is there now.
pub struct Target<'a> {
    /// Tells what each key looks like now.
    pub ingestor: &'a Ingestor,
    /// Writes the mutations, each on the node that writes its key.
    pub writer: &'a dyn Writer,
    /// Tells where the log ends after each batch (the checkpoint's scan start).
    pub materializer: &'a Materializer,
}

/// Apply `plan` for `job` from checkpoint `at` (a fresh one, or the one a takeover resumed
/// from), at most `rate` objects per second: progress counts objects; the result counts what
/// was done, skipped (changed since the plan) and unavailable (content gone), and lists those
/// keys.
pub async fn apply(
    plan: &Plan,
    at: &mut Checkpoint,
    to: Target<'_>,
    job: &Job,
    rate: Option<f64>,
) -> Result<Value> {
    let ctx = RequestContext {
        requester: Some(REQUESTER.into()),
        source_ip: None,
        request_id: Some(job.id.clone()),
        user_agent: None,
        interface: tidemark_core::ingest::Interface::Restore,
    };
    job.set_total(at.total);
    job.done
        .store(at.processed, std::sync::atomic::Ordering::Relaxed);
    job.set_detail(at.tally.to_json(&at.planned));
    let size = rate.map_or(BATCH, |r| BATCH.min(r.ceil() as usize).max(1));
    let mut due = Instant::now();
    for batch in plan.steps.chunks(size) {
        if let Some(rate) = rate {
            pace(job, due).await;
            due = due.max(Instant::now()) + Duration::from_secs_f64(batch.len() as f64 / rate);
        }
        if job.is_cancelled() {
            break;
        }
        apply_batch(plan, batch, &to, &ctx, &mut at.tally)
            .await
            .map_err(|e| {
                crate::Error::Core(CoreError::Unavailable(format!(
                    "{e}; {} of {} objects were restored before it (their events are in the \
                     log); run the restore again to finish",
                    at.tally.objects, at.total
                )))
            })?;
        job.add_done(batch.len() as u64);
        job.set_detail(at.tally.to_json(&at.planned));
        at.processed += batch.len() as u64;
        at.after = batch.last().map(|s| s.key.clone());
        match to.materializer.log_ends().await {
            Ok(ends) => {
                at.scan_from = ends;
                job.set_checkpoint(at.to_json());
            }
            // The checkpoint stays where it was: a resume looks at more of the log.
            Err(e) => tracing::warn!(job = job.id, "reading where the log ends: {e}"),
        }
    }
    let mut result = at.tally.to_json(&at.planned);
    result["cancelled"] = job.is_cancelled().into();
    Ok(result)
}

/// Wait until `due`, or until the job is cancelled.
async fn pace(job: &Job, due: Instant) {
    let mut cancelled = job.cancelled();
    tokio::select! {
        _ = tokio::time::sleep_until(due) => {}
        _ = cancelled.wait_for(|c| *c) => {}
    }
}

async fn apply_batch(
    plan: &Plan,
    batch: &[Step],
    to: &Target<'_>,
    ctx: &RequestContext,
    tally: &mut Tally,
) -> std::result::Result<(), CoreError> {
    let mut mutations = Vec::new();
    // Per step applied: its index in `batch` and how many mutations it has.
    let mut sent: Vec<(usize, usize)> = Vec::new();
    for (i, step) in batch.iter().enumerate() {
        // Done already by this job before a takeover: nothing is written again.
        if step.actions.is_empty() {
            tally.restored(step);
            continue;
        }
        // Puts take no version precondition: this check is theirs (and spares the others a
        // refused mutation). For a key another node writes, the index's view.
        let current = to.ingestor.known_state(&plan.bucket, &step.key)?;
        if !looks_the_same(current.as_ref(), step.now.as_ref()) {
            tally.skip(
                &step.key,
                "changed since the restore was planned; left as it is".into(),
            );
            continue;
        }
        let muts = step.mutations(&plan.bucket);
        sent.push((i, muts.len()));
        mutations.extend(muts);
    }
    if mutations.is_empty() {
        return Ok(());
    }
    let mut outcomes = to.writer.write(mutations, ctx).await?.into_iter();
    for (i, n) in sent {
        let step = &batch[i];
        let refused: Vec<CoreError> = outcomes.by_ref().take(n).filter_map(|o| o.err()).collect();
        match refused.first() {
            None => tally.restored(step),
            Some(e @ (CoreError::Conflict(_) | CoreError::NotFound(_))) => tally.skip(
                &step.key,
                format!("changed since the restore was planned ({e}); left as it is"),
            ),
            Some(e) => tally.fail(&step.key, e.to_string()),
        }
    }
    Ok(())
}
