//! Carrying out a plan: compensating mutations written through the node's writer in batches
//! (each on the node that writes its key's partition), each event naming the restore job as
//! its request id. Between batches the job may be cancelled; what
//! was appended stays appended, and the result says how far it got.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tidemark_core::Error as CoreError;
use tidemark_core::ingest::{Ingestor, RequestContext, Writer};

use super::plan::{Action, LISTED, Plan, Step, counts_json, looks_the_same};
use crate::Result;
use crate::jobs::Job;

/// Objects per append.
const BATCH: usize = 500;
/// Recorded as the requester of every compensating event.
pub const REQUESTER: &str = "tidemark-restore";

/// What applying has done so far.
#[derive(Default)]
struct Tally {
    done: BTreeMap<Action, u64>,
    objects: u64,
    skipped: Vec<(String, String)>,
    failed: Vec<(String, String)>,
}

impl Tally {
    /// `planned` is the plan's JSON, made once.
    fn to_json(&self, planned: &Value) -> Value {
        let listed = |v: &[(String, String)]| -> Vec<Value> {
            v.iter()
                .take(LISTED)
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
            "skipped": self.skipped.len(),
            "failed": self.failed.len(),
            "unavailable": planned["counts"]["unavailable"],
            "skipped_keys": listed(&self.skipped),
            "failed_keys": listed(&self.failed),
            "unavailable_keys": planned["unavailable"],
        })
    }
}

/// Apply `plan` for `job`: progress counts objects; the result counts what was done, skipped
/// (changed since the plan) and unavailable (content gone), and lists those keys.
/// `ingestor` tells what each key looks like now; `writer` writes the mutations.
pub async fn apply(
    plan: &Plan,
    ingestor: &Ingestor,
    writer: &dyn Writer,
    job: &Job,
) -> Result<Value> {
    let ctx = RequestContext {
        requester: Some(REQUESTER.into()),
        source_ip: None,
        request_id: Some(job.id.clone()),
        interface: tidemark_core::ingest::Interface::Restore,
    };
    job.set_total(plan.steps.len() as u64);
    let planned = plan.to_json();
    let mut tally = Tally::default();
    for batch in plan.steps.chunks(BATCH) {
        if job.is_cancelled() {
            break;
        }
        apply_batch(plan, batch, (ingestor, writer), &ctx, &mut tally)
            .await
            .map_err(|e| {
                crate::Error::Core(CoreError::Unavailable(format!(
                    "{e}; {} of {} objects were restored before it (their events are in the \
                     log); run the restore again to finish",
                    tally.objects,
                    plan.steps.len()
                )))
            })?;
        job.add_done(batch.len() as u64);
        job.set_detail(tally.to_json(&planned));
    }
    let mut result = tally.to_json(&planned);
    result["cancelled"] = job.is_cancelled().into();
    Ok(result)
}

async fn apply_batch(
    plan: &Plan,
    batch: &[Step],
    (ingestor, writer): (&Ingestor, &dyn Writer),
    ctx: &RequestContext,
    tally: &mut Tally,
) -> std::result::Result<(), CoreError> {
    let mut mutations = Vec::new();
    // Per step applied: its index in `batch` and how many mutations it has.
    let mut sent: Vec<(usize, usize)> = Vec::new();
    for (i, step) in batch.iter().enumerate() {
        // Puts take no version precondition: this check is theirs (and spares the others a
        // refused mutation). For a key another node writes, the index's view.
        let current = ingestor.known_state(&plan.bucket, &step.key)?;
        if !looks_the_same(current.as_ref(), step.now.as_ref()) {
            tally.skipped.push((
                step.key.clone(),
                "changed since the restore was planned; left as it is".into(),
            ));
            continue;
        }
        let muts = step.mutations(&plan.bucket);
        sent.push((i, muts.len()));
        mutations.extend(muts);
    }
    if mutations.is_empty() {
        return Ok(());
    }
    let mut outcomes = writer.write(mutations, ctx).await?.into_iter();
    for (i, n) in sent {
        let step = &batch[i];
        let refused: Vec<CoreError> = outcomes.by_ref().take(n).filter_map(|o| o.err()).collect();
        match refused.first() {
            None => {
                for a in &step.actions {
                    *tally.done.entry(*a).or_default() += 1;
                }
                tally.objects += 1;
            }
            Some(e @ (CoreError::Conflict(_) | CoreError::NotFound(_))) => tally.skipped.push((
                step.key.clone(),
                format!("changed since the restore was planned ({e}); left as it is"),
            )),
            Some(e) => tally.failed.push((step.key.clone(), e.to_string())),
        }
    }
    Ok(())
}
