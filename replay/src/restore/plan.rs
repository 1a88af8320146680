//! What a restore must change: the difference between the objects now and the objects at the
//! instant, as a user sees them. Only what a user sees is compared (content identity, content
//! type, metadata, tags, storage class), never version ids, sequences or times, which every
//! change moves on: so once restored, a second restore to the same instant finds nothing to do.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tidemark_core::blobs::{BlobStore, new_version_id};
use tidemark_core::event::ObjectState;
use tidemark_core::ingest::{Mutation, Op};

use tidemark_core::Result;

/// Sample keys shown per action.
pub const SAMPLES: usize = 10;
/// Keys listed (with their reason) as unavailable, skipped or failed; the counts are complete.
pub const LISTED: usize = 1000;

/// One kind of compensating change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Deleted since the instant: put back with its content and attributes then.
    Recreate,
    /// Overwritten since (other content, or a change only a put can undo): put the old back.
    Revert,
    /// Created since: delete it.
    Delete,
    /// Only user metadata (or content type) differs.
    Metadata,
    /// Only tags differ.
    Tags,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::Recreate,
        Action::Revert,
        Action::Delete,
        Action::Metadata,
        Action::Tags,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Recreate => "recreate",
            Action::Revert => "revert",
            Action::Delete => "delete",
            Action::Metadata => "metadata",
            Action::Tags => "tags",
        }
    }
}

/// The changes to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub key: String,
    /// One action, or metadata and tags together.
    pub actions: Vec<Action>,
    /// The object when planned (`None`: it does not exist); applying skips the key if it
    /// differs by then.
    pub now: Option<ObjectState>,
    /// The object at the instant.
    pub then: Option<ObjectState>,
    /// Actions this restore job carried out already, before a restart or another node took
    /// it over: counted as done with `actions`, which holds what is left (possibly nothing).
    pub done_before: Vec<Action>,
}

/// A key whose content at the instant is no longer held, so it is left as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub key: String,
    pub sha256: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub bucket: String,
    pub steps: Vec<Step>,
    pub unavailable: Vec<Unavailable>,
}

/// Plan the restore of `bucket` from `now` to `then` (existing objects by key, each limited to
/// the same prefix). Blocking: checks the blob store for the content of keys to put back.
pub fn plan(
    bucket: &str,
    now: &BTreeMap<String, ObjectState>,
    then: &BTreeMap<String, ObjectState>,
    blobs: &dyn BlobStore,
) -> Result<Plan> {
    let mut plan = Plan {
        bucket: bucket.to_string(),
        steps: Vec::new(),
        unavailable: Vec::new(),
    };
    let mut keys: Vec<&String> = now.keys().chain(then.keys()).collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        let (cur, old) = (now.get(key), then.get(key));
        let actions = actions_for(cur, old);
        if actions.is_empty() {
            continue;
        }
        let puts = matches!(actions[0], Action::Recreate | Action::Revert);
        if let Some(sha256) = old.and_then(|o| o.sha256.as_ref())
            && puts
            && !blobs.exists(sha256)?
        {
            plan.unavailable.push(Unavailable {
                key: key.clone(),
                sha256: sha256.clone(),
                reason: format!(
                    "content sha256 {sha256} is no longer held by this node's content store \
                     (garbage-collected, removed, or never uploaded here); left as it is"
                ),
            });
            continue;
        }
        plan.steps.push(Step {
            key: key.clone(),
            actions,
            now: cur.cloned(),
            then: old.cloned(),
            done_before: Vec::new(),
        });
    }
    Ok(plan)
}

/// What turns `now` back into `then` (nothing when a user would see the same object).
pub fn actions_for(now: Option<&ObjectState>, then: Option<&ObjectState>) -> Vec<Action> {
    match (now, then) {
        (None, None) => Vec::new(),
        (Some(_), None) => vec![Action::Delete],
        (None, Some(_)) => vec![Action::Recreate],
        (Some(c), Some(o)) => attribute_actions(c, o),
    }
}

/// Whether the content is the same bytes: by SHA-256, ETag and size.
fn same_content(a: &ObjectState, b: &ObjectState) -> bool {
    a.sha256 == b.sha256 && a.etag == b.etag && a.size == b.size
}

/// Whether a user would see the same object.
pub fn looks_the_same(a: Option<&ObjectState>, b: Option<&ObjectState>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            same_content(a, b)
                && a.content_type == b.content_type
                && a.metadata == b.metadata
                && a.tags == b.tags
                && a.storage_class == b.storage_class
        }
        _ => false,
    }
}

/// What turns `now` back into `then`, both existing.
fn attribute_actions(now: &ObjectState, then: &ObjectState) -> Vec<Action> {
    // A metadata change can set a content type but not clear one, and nothing but a put
    // changes a storage class.
    let needs_put = !same_content(now, then)
        || now.storage_class != then.storage_class
        || (now.content_type != then.content_type && then.content_type.is_none());
    if needs_put {
        return vec![Action::Revert];
    }
    let mut actions = Vec::new();
    if now.metadata != then.metadata || now.content_type != then.content_type {
        actions.push(Action::Metadata);
    }
    if now.tags != then.tags {
        actions.push(Action::Tags);
    }
    actions
}

impl Step {
    /// The mutations that carry out this step. Changes to an existing object carry its current
    /// version id as a precondition, so one changed meanwhile is refused rather than clobbered.
    pub fn mutations(&self, bucket: &str) -> Vec<Mutation> {
        let base = |op: Op| Mutation {
            op,
            bucket: bucket.to_string(),
            key: self.key.clone(),
            size: None,
            etag: None,
            content_type: None,
            sha256: None,
            storage_class: None,
            metadata: None,
            tags: None,
            version_id: self.now.as_ref().and_then(|n| n.version_id.clone()),
            event_time: None,
            event_type: None,
            condition: None,
            headers: None,
            checksum: None,
            part_sizes: None,
            removed_version_id: None,
            after: None,
        };
        let then = self.then.as_ref();
        self.actions
            .iter()
            .map(|action| match action {
                Action::Recreate | Action::Revert => {
                    let t = then.expect("a put restores an object that existed then");
                    Mutation {
                        size: Some(t.size),
                        etag: t.etag.clone(),
                        content_type: t.content_type.clone(),
                        sha256: t.sha256.clone(),
                        storage_class: t.storage_class.clone(),
                        metadata: Some(t.metadata.clone()),
                        tags: Some(t.tags.clone()),
                        headers: Some(t.headers.clone()).filter(|h| !h.is_empty()),
                        checksum: t.checksum.clone(),
                        part_sizes: t.part_sizes.clone(),
                        // Stored content comes back as a new version of the same bytes (as S3
                        // restores a version by copying it); a metadata-only object's version
                        // id names a version in the store it describes, so it is kept.
                        version_id: match &t.sha256 {
                            Some(_) => Some(new_version_id()),
                            None => t.version_id.clone(),
                        },
                        ..base(Op::Put)
                    }
                }
                Action::Delete => base(Op::Delete),
                Action::Metadata => {
                    let t = then.expect("an existing object");
                    Mutation {
                        metadata: Some(t.metadata.clone()),
                        content_type: t.content_type.clone(),
                        ..base(Op::Metadata)
                    }
                }
                Action::Tags => {
                    let t = then.expect("an existing object");
                    if t.tags.is_empty() {
                        base(Op::Untag)
                    } else {
                        Mutation {
                            tags: Some(t.tags.clone()),
                            ..base(Op::Tag)
                        }
                    }
                }
            })
            .collect()
    }
}

impl Plan {
    /// Objects the plan changes, per action (a key may need metadata and tags).
    pub fn counts(&self) -> BTreeMap<Action, u64> {
        let mut counts: BTreeMap<Action, u64> = Action::ALL.iter().map(|a| (*a, 0)).collect();
        for step in &self.steps {
            for a in &step.actions {
                *counts.entry(*a).or_default() += 1;
            }
        }
        counts
    }

    /// The dry run's answer: counts, sample keys per action, and every unavailable key.
    pub fn to_json(&self) -> Value {
        let mut samples = serde_json::Map::new();
        for action in Action::ALL {
            let keys: Vec<&str> = self
                .steps
                .iter()
                .filter(|s| s.actions.contains(&action))
                .take(SAMPLES)
                .map(|s| s.key.as_str())
                .collect();
            samples.insert(action.as_str().into(), json!(keys));
        }
        let mut counts = counts_json(&self.counts());
        counts["unavailable"] = self.unavailable.len().into();
        json!({
            "objects": self.steps.len(),
            "counts": counts,
            "samples": samples,
            "unavailable": self.unavailable.iter().take(LISTED).map(|u| json!({
                "key": u.key, "sha256": u.sha256, "reason": u.reason,
            })).collect::<Vec<_>>(),
        })
    }
}

/// `{"recreate": n, "revert": n, ...}`.
pub fn counts_json(counts: &BTreeMap<Action, u64>) -> Value {
    Value::Object(
        counts
            .iter()
            .map(|(a, n)| (a.as_str().to_string(), json!(n)))
            .collect(),
    )
}
