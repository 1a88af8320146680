//! Garbage collection of blobs: the content that events still in the `objects` topic refer to
//! is kept (it is what a restore to any instant within retention needs); the rest goes once it
//! is older than the grace period. Content referenced from outside the log (filter modules,
//! named by the catalog) is pinned by the caller.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::{BlobStore, GcStats};
use crate::codec::EventCodec;
use crate::log::Log;
use crate::{Error, OBJECTS_TOPIC, Result};

/// Records per read while scanning the log.
const CHUNK: usize = 10_000;

/// The SHA-256 of every content an event in `objects` refers to, after the change or before
/// it. Fails rather than answer from part of the log: a missed reference would lose content.
pub async fn referenced(log: &dyn Log, codec: &EventCodec) -> Result<HashSet<String>> {
    let mut shas = HashSet::new();
    for p in 0..log.partitions(OBJECTS_TOPIC)? {
        let range = log.offsets(OBJECTS_TOPIC, p).await?;
        let mut next = range.start;
        while next < range.end {
            let mut records = log
                .read(OBJECTS_TOPIC, p, next, CHUNK, Duration::ZERO)
                .await?;
            if records.is_empty() {
                // A remote log may answer empty before its end; give it a moment.
                records = log
                    .read(OBJECTS_TOPIC, p, next, CHUNK, Duration::from_secs(2))
                    .await?;
            }
            let Some(last) = records.last() else {
                return Err(Error::Unavailable(format!(
                    "partition {p} of {OBJECTS_TOPIC} could not be read from offset {next} to \
                     its end {}; blob garbage collection needs every reference",
                    range.end
                )));
            };
            next = last.offset + 1;
            for rec in &records {
                let event = codec.decode(&rec.value).map_err(|e| {
                    Error::Corrupt(format!(
                        "partition {p} offset {}: {e}; blob garbage collection stopped, as it \
                         cannot tell what this event refers to",
                        rec.offset
                    ))
                })?;
                shas.extend(event.sha256);
                shas.extend(event.previous.and_then(|s| s.sha256));
            }
        }
    }
    Ok(shas)
}

/// The blobs referenced from outside the log, read at each collection (the modules of live
/// filter versions).
pub type Pinned = Arc<dyn Fn() -> HashSet<String> + Send + Sync>;

/// Scan the log for references, add `pinned`, then remove the blobs nothing refers to that are
/// older than `grace`.
pub async fn collect_garbage(
    log: &dyn Log,
    codec: &EventCodec,
    store: Arc<dyn BlobStore>,
    pinned: HashSet<String>,
    grace: Duration,
) -> Result<GcStats> {
    let mut referenced = referenced(log, codec).await?;
    referenced.extend(pinned);
    crate::blocking::blocking(move || store.gc(&referenced, grace)).await
}

/// Collect garbage every `every`, for as long as the returned future runs.
pub async fn collect_periodically(
    log: Arc<dyn Log>,
    codec: Arc<EventCodec>,
    store: Arc<dyn BlobStore>,
    pinned: Pinned,
    every: Duration,
    grace: Duration,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate; the first collection waits a period
    loop {
        ticks.tick().await;
        match collect_garbage(log.as_ref(), &codec, store.clone(), pinned(), grace).await {
            Ok(s) => tracing::info!(
                kept = s.kept,
                removed = s.removed,
                bytes_freed = s.bytes_freed,
                packs_compacted = s.packs_compacted,
                pack_bytes_reclaimed = s.pack_bytes_reclaimed,
                "blob garbage collection"
            ),
            Err(Error::Shutdown) => return,
            Err(e) => tracing::warn!("blob garbage collection failed: {e}; retrying next period"),
        }
    }
}
