//! `tidemark restore` / `POST /v1/restores`: bring a bucket (or a prefix of it) back to what it
//! was at an instant by appending compensating mutations: objects deleted since are recreated
//! with their content then, overwritten ones reverted, new ones deleted, metadata and tags set
//! back. Nothing is rewritten: the log keeps the history, restore included, and every
//! compensating event names the restore job in its request id.
//!
//! Content comes from the blob store; an object whose content then is no longer held is
//! reported per key and left alone.
//!
//! A restore runs as a durable job (`resume.rs`): restarted or taken over by another node, it
//! finishes what is left and writes no compensating event twice.
//!
//! # Layout
//! - `plan.rs`: the difference between now and then, as actions per key.
//! - `apply.rs`: the compensating mutations, in batches, with progress, checkpoints and
//!   cancel.
//! - `resume.rs`: the job: plan, record the checkpoint, apply; on resume, re-plan what is left
//!   from the log's record of what the job wrote.

mod apply;
mod plan;
mod resume;
#[cfg(test)]
mod tests;

pub use apply::{REQUESTER, Tally};
pub use plan::{Action, Plan, Step, Unavailable, actions_for, looks_the_same, plan};
pub use resume::{Checkpoint, resume_plan, run};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tidemark_core::blobs::BlobStore;
use tidemark_core::blocking::blocking;
use tidemark_core::codec::EventCodec;
use tidemark_core::event::ObjectState;
use tidemark_core::index::{Materializer, ObjectIndex};
use tidemark_core::log::Log;
use tidemark_core::time::{format_us, parse_past_us, parse_rfc3339_us};
use tidemark_core::{Error as CoreError, OBJECTS_TOPIC};

use crate::{Error, Result};

/// How long planning waits for the index to apply everything already in the log.
const CATCH_UP: Duration = Duration::from_secs(30);
/// Objects per page read from an index.
const PAGE: usize = 10_000;

/// `POST /v1/restores`, as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    bucket: Option<String>,
    at: Option<String>,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    dry_run: bool,
    /// At most this many objects per second.
    #[serde(default)]
    rate: Option<f64>,
}

/// A restore request, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Restore {
    pub bucket: String,
    pub prefix: String,
    /// The instant, µs (log append time).
    pub at: i64,
    pub dry_run: bool,
    /// At most this many objects per second (`None`: as fast as the log takes them).
    pub rate: Option<f64>,
}

impl RestoreRequest {
    /// Check every field (no I/O); errors name the field.
    pub fn validate(self) -> Result<Restore> {
        let bucket = self
            .bucket
            .ok_or_else(|| Error::invalid("bucket", "is required: the bucket to restore"))?;
        tidemark_core::ingest::validate_bucket(&bucket).map_err(|m| Error::invalid("bucket", m))?;
        let at = self.at.ok_or_else(|| {
            Error::invalid(
                "at",
                "is required: the instant to restore to (RFC 3339, 14:00, or -2h)",
            )
        })?;
        let at = parse_past_us(&at).map_err(|m| Error::invalid("at", m))?;
        if !self.prefix.is_empty() {
            tidemark_core::ingest::validate_key(&self.prefix)
                .map_err(|m| Error::invalid("prefix", m))?;
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(Error::invalid(
                "rate",
                format!("{rate} is not a positive number of objects per second"),
            ));
        }
        Ok(Restore {
            bucket,
            prefix: self.prefix,
            at,
            dry_run: self.dry_run,
            rate: self.rate,
        })
    }
}

impl Restore {
    /// The job's spec: the request with its instant resolved (`-2h` means then, not later).
    pub fn to_json(&self) -> Value {
        json!({
            "bucket": self.bucket,
            "prefix": self.prefix,
            "at": format_us(self.at),
            "rate": self.rate,
        })
    }

    /// The restore a job's spec ([`Restore::to_json`]) describes.
    pub fn of_job(spec: &Value) -> Result<Restore> {
        let bad = || Error::Internal(format!("a restore job has a damaged spec: {spec}"));
        let at = spec["at"].as_str().ok_or_else(bad)?;
        Ok(Restore {
            bucket: spec["bucket"].as_str().ok_or_else(bad)?.to_string(),
            prefix: spec["prefix"].as_str().unwrap_or_default().to_string(),
            at: parse_rfc3339_us(at).map_err(|_| bad())?,
            dry_run: false,
            rate: spec["rate"].as_f64(),
        })
    }
}

/// What a restore reads: the log, the live index and the content store.
#[derive(Clone)]
pub struct Sources {
    pub log: Arc<dyn Log>,
    pub codec: Arc<EventCodec>,
    pub index: Arc<ObjectIndex>,
    pub materializer: Arc<Materializer>,
    pub blobs: Arc<dyn BlobStore>,
    /// Index snapshots: the state then is the newest one before it plus the events after.
    pub snapshots: Option<std::path::PathBuf>,
}

/// Refuse an instant the log cannot tell the state at: before its first event, or before
/// what retention removed from any partition.
pub async fn check_within_log(log: &dyn Log, at: i64) -> Result<()> {
    let mut first: Option<i64> = None;
    for p in 0..log.partitions(OBJECTS_TOPIC)? {
        let range = log.offsets(OBJECTS_TOPIC, p).await?;
        if range.start == range.end {
            continue;
        }
        let records = log
            .read(OBJECTS_TOPIC, p, range.start, 1, Duration::from_secs(2))
            .await?;
        let Some(oldest) = records.first().map(|r| r.timestamp) else {
            continue;
        };
        if range.start > 0 && at < oldest {
            return Err(Error::invalid(
                "at",
                format!(
                    "{} is before the oldest event partition {p} still holds ({}): older \
                     events were removed by retention, so the state then is unknown; choose a \
                     later instant",
                    format_us(at),
                    format_us(oldest)
                ),
            ));
        }
        first = Some(first.map_or(oldest, |f| f.min(oldest)));
    }
    match first {
        None => Err(Error::invalid(
            "at",
            "the log holds no object events yet: there is no earlier state to restore",
        )),
        Some(first) if at < first => Err(Error::invalid(
            "at",
            format!(
                "{} is before the log's first event ({}); choose an instant at or after it",
                format_us(at),
                format_us(first)
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// An index as of an instant, in a scratch directory removed with it.
pub struct IndexAt {
    pub index: ObjectIndex,
    _dir: tempfile::TempDir,
}

/// The index as of `at` (log append time): from the newest index snapshot before it, if any,
/// plus the events appended after the snapshot, up to `at`.
pub async fn index_at(
    log: Arc<dyn Log>,
    codec: Arc<EventCodec>,
    snapshots: Option<std::path::PathBuf>,
    at: i64,
) -> Result<IndexAt> {
    let dir = tempfile::tempdir()
        .map_err(|e| CoreError::io("create a scratch directory in", &std::env::temp_dir(), e))?;
    let path = dir.path().join("objects.redb");
    let want = crate::state::AsOf {
        at,
        clock: crate::state::Clock::Append,
        snapshots,
        history: false,
    };
    crate::state::index_at(log, codec, &path, &want, |_, _| {}).await?;
    Ok(IndexAt {
        index: ObjectIndex::open_read_only(&path)?,
        _dir: dir,
    })
}

/// The existing objects of `bucket` under `prefix` after key `after`, by key. Blocking.
pub fn objects_in(
    index: &ObjectIndex,
    bucket: &str,
    prefix: &str,
    after: Option<&str>,
) -> tidemark_core::Result<BTreeMap<String, ObjectState>> {
    let mut out = BTreeMap::new();
    let mut after: Option<String> = after.map(str::to_string);
    loop {
        let page = index.list(Some(bucket), prefix, after.as_deref(), PAGE)?;
        let full = page.len() == PAGE;
        after = page.last().map(|o| o.key.clone());
        out.extend(page.into_iter().map(|o| (o.key, o.state)));
        if !full {
            return Ok(out);
        }
    }
}

/// Wait until the index has applied everything in the log now.
async fn catch_up(sources: &Sources) -> Result<()> {
    let m = &sources.materializer;
    if !m.wait_for(&m.log_ends().await?, CATCH_UP).await {
        return Err(CoreError::Unavailable(format!(
            "the index is {} records behind the log; retry once it has caught up",
            m.lag().await?
        ))
        .into());
    }
    Ok(())
}

/// Plan `restore` against the index once it has applied everything in the log now.
pub async fn prepare(sources: &Sources, restore: &Restore) -> Result<Plan> {
    catch_up(sources).await?;
    let then = index_at(
        sources.log.clone(),
        sources.codec.clone(),
        sources.snapshots.clone(),
        restore.at,
    )
    .await?;
    let (index, blobs, r) = (
        sources.index.clone(),
        sources.blobs.clone(),
        restore.clone(),
    );
    blocking(move || {
        let now = objects_in(&index, &r.bucket, &r.prefix, None)?;
        let old = objects_in(&then.index, &r.bucket, &r.prefix, None)?;
        plan(&r.bucket, &now, &old, blobs.as_ref())
    })
    .await
    .map_err(Error::from)
}
