//! One reconciliation: list the store, wait for the index to hold every acknowledged write,
//! list the index, diff, and (unless a dry run) append the changes in batches.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Change, Entry, Skipped, diff, list_dir};
use super::{S3Source, list_s3};
use crate::blocking::blocking;
use crate::event::ObjectState;
use crate::index::{Materializer, ObjectIndex};
use crate::ingest::{RequestContext, Writer, validate_bucket};
use crate::{Error, Result};

/// Mutations per append.
const BATCH: usize = 500;
/// Sample keys reported per action.
const SAMPLES: usize = 10;
/// How long the index may take to catch up with the log before the sync gives up.
const CATCH_UP: Duration = Duration::from_secs(30);
const ACTIONS: [&str; 4] = ["created", "updated", "metadata", "removed"];

/// Where the objects are.
#[derive(Debug, Clone)]
pub enum Source {
    /// A local directory on the server's machine.
    Dir(PathBuf),
    /// An S3 bucket, on AWS or an S3-compatible service.
    S3(S3Source),
}

impl Source {
    /// `DIR` (absolute) or `s3://BUCKET[/PREFIX]`; the error names the `source` field. An S3
    /// source is reached with the default connection until the caller sets one.
    pub fn parse(text: &str) -> Result<Source> {
        if text.starts_with("s3://") {
            return S3Source::parse(text).map(Source::S3);
        }
        if text.contains("://") {
            return Err(Error::invalid(
                "source",
                format!("'{text}' is neither a directory nor s3://BUCKET[/PREFIX]"),
            ));
        }
        let path = PathBuf::from(text);
        if !path.is_absolute() {
            return Err(Error::invalid(
                "source",
                format!("'{text}' must be an absolute path (it is read by the server)"),
            ));
        }
        Ok(Source::Dir(path))
    }

    /// The directory or the `s3://` URL, as given (never credentials).
    pub fn describe(&self) -> String {
        match self {
            Source::Dir(dir) => dir.display().to_string(),
            Source::S3(s3) => s3.url(),
        }
    }
}

/// A validated sync request.
#[derive(Debug, Clone)]
pub struct SyncSpec {
    pub bucket: String,
    /// Only keys starting with this, on both sides; for S3 it starts with the URL's prefix.
    pub prefix: String,
    pub source: Source,
    /// Report what would change; append nothing.
    pub dry_run: bool,
}

impl SyncSpec {
    /// Check the request. The bucket may be left out for an S3 source (its bucket's name is
    /// taken); an S3 URL's prefix and `prefix` narrow together, so the one must extend the
    /// other. No I/O: whether the store is there is the run's business.
    pub fn new(
        bucket: Option<String>,
        source: Source,
        prefix: String,
        dry_run: bool,
    ) -> Result<SyncSpec> {
        let bucket = match (bucket, &source) {
            (Some(b), _) => b,
            (None, Source::S3(s3)) => s3.bucket.clone(),
            (None, Source::Dir(_)) => {
                return Err(Error::invalid(
                    "bucket",
                    "is required for a directory source: the bucket the files belong to",
                ));
            }
        };
        validate_bucket(&bucket).map_err(|m| Error::invalid("bucket", m))?;
        let prefix = match &source {
            Source::S3(s3) if prefix.starts_with(&s3.prefix) => prefix,
            Source::S3(s3) if s3.prefix.starts_with(&prefix) => s3.prefix.clone(),
            Source::S3(s3) => {
                return Err(Error::invalid(
                    "prefix",
                    format!(
                        "'{prefix}' is outside the source's prefix '{}': nothing would be \
                         compared; drop one of them",
                        s3.prefix
                    ),
                ));
            }
            Source::Dir(_) => prefix,
        };
        Ok(SyncSpec {
            bucket,
            prefix,
            source,
            dry_run,
        })
    }
}

/// Where the caller shows progress (entries compared) and asks to stop.
pub trait Progress: Send + Sync {
    fn set_total(&self, total: u64);
    fn add_done(&self, n: u64);
    fn is_cancelled(&self) -> bool;
}

/// What a sync found and did.
#[derive(Debug, Default)]
pub struct SyncOutcome {
    pub compared: u64,
    pub planned: BTreeMap<&'static str, u64>,
    pub applied: BTreeMap<&'static str, u64>,
    pub samples: BTreeMap<&'static str, Vec<String>>,
    /// Files the store has that cannot be objects, with why.
    pub skipped: Skipped,
    /// Keys whose mutation was refused, with why.
    pub failed: Vec<(String, String)>,
    pub cancelled: bool,
    pub dry_run: bool,
}

impl SyncOutcome {
    pub fn to_json(&self) -> Value {
        let counts = |m: &BTreeMap<&str, u64>| -> Value {
            ACTIONS
                .iter()
                .map(|a| (a.to_string(), json!(m.get(a).copied().unwrap_or(0))))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let pairs = |v: &[(String, String)]| -> Vec<Value> {
            v.iter()
                .map(|(k, why)| json!({"key": k, "reason": why}))
                .collect()
        };
        json!({
            "dry_run": self.dry_run,
            "compared": self.compared,
            "planned": counts(&self.planned),
            "applied": counts(&self.applied),
            "samples": self.samples,
            "skipped": pairs(&self.skipped),
            "failed": pairs(&self.failed),
            "cancelled": self.cancelled,
        })
    }
}

/// Reconcile `spec.source` into `spec.bucket`. Events name `ctx` (requester `tidemark-sync`,
/// the job id as request id).
/// Mutations go through `writer`, each to the node that writes its key's partition.
pub async fn run(
    spec: &SyncSpec,
    writer: &dyn Writer,
    index: &Arc<ObjectIndex>,
    materializer: &Materializer,
    ctx: &RequestContext,
    progress: Arc<dyn Progress>,
) -> Result<SyncOutcome> {
    let mut outcome = SyncOutcome {
        dry_run: spec.dry_run,
        ..Default::default()
    };
    let (store, skipped) = list_store(spec, progress.clone()).await?;
    outcome.skipped = skipped;
    outcome.compared = store.len() as u64;
    if progress.is_cancelled() {
        outcome.cancelled = true;
        return Ok(outcome);
    }
    // Keys written a moment ago must be in the listing, or they would be put again.
    if !materializer
        .wait_for(&materializer.log_ends().await?, CATCH_UP)
        .await
    {
        return Err(Error::Unavailable(format!(
            "the index is {} records behind the log; retry once it has caught up",
            materializer.lag().await?
        )));
    }
    let indexed = list_index(index.clone(), spec.bucket.clone(), spec.prefix.clone()).await?;
    let changes = diff(&store, &indexed);
    for c in &changes {
        *outcome.planned.entry(c.action()).or_default() += 1;
        let samples = outcome.samples.entry(c.action()).or_default();
        if samples.len() < SAMPLES {
            samples.push(c.key().to_string());
        }
    }
    if !spec.dry_run {
        apply(spec, &changes, writer, ctx, &progress, &mut outcome).await?;
    }
    outcome.cancelled = progress.is_cancelled();
    Ok(outcome)
}

async fn list_store(spec: &SyncSpec, progress: Arc<dyn Progress>) -> Result<(Vec<Entry>, Skipped)> {
    match &spec.source {
        Source::Dir(root) => {
            let (root, prefix) = (root.clone(), spec.prefix.clone());
            blocking(move || {
                list_dir(
                    &root,
                    &prefix,
                    &|n| progress.set_total(n),
                    &|| progress.add_done(1),
                    &|| progress.is_cancelled(),
                )
            })
            .await
        }
        Source::S3(s3) => {
            list_s3(
                s3,
                &spec.prefix,
                &|n| progress.set_total(n),
                &|| progress.add_done(1),
                &|| progress.is_cancelled(),
            )
            .await
        }
    }
}

/// Every object of `bucket` under `prefix`, in key order.
async fn list_index(
    index: Arc<ObjectIndex>,
    bucket: String,
    prefix: String,
) -> Result<Vec<(String, ObjectState)>> {
    blocking(move || {
        let mut out: Vec<(String, ObjectState)> = Vec::new();
        loop {
            let after = out.last().map(|(k, _)| k.as_str());
            let page = index.list(Some(&bucket), &prefix, after, 10_000)?;
            let full = page.len() == 10_000;
            out.extend(page.into_iter().map(|o| (o.key, o.state)));
            if !full {
                return Ok(out);
            }
        }
    })
    .await
}

async fn apply(
    spec: &SyncSpec,
    changes: &[Change],
    writer: &dyn Writer,
    ctx: &RequestContext,
    progress: &Arc<dyn Progress>,
    outcome: &mut SyncOutcome,
) -> Result<()> {
    for batch in changes.chunks(BATCH) {
        if progress.is_cancelled() {
            break;
        }
        let mutations = batch.iter().map(|c| c.mutation(&spec.bucket)).collect();
        let results = writer.write(mutations, ctx).await.map_err(|e| {
            let done: u64 = outcome.applied.values().sum();
            Error::Unavailable(format!(
                "{e}; {done} of {} changes were appended before it; run the sync again to \
                 finish",
                changes.len()
            ))
        })?;
        for (change, result) in batch.iter().zip(results) {
            match result {
                Ok(_) => *outcome.applied.entry(change.action()).or_default() += 1,
                Err(e) => outcome
                    .failed
                    .push((change.key().to_string(), e.to_string())),
            }
        }
    }
    Ok(())
}
