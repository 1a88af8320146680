//! The server's snapshot task: a snapshot every so many events the materializer applied, so the
//! state at any recent instant is one snapshot load plus a bounded replay.
//!
//! A snapshot writes every key, so the interval is at least the number of keys in the newest
//! one: taking snapshots costs at most about one row written per event applied, however many
//! objects there are, and the replay after a snapshot stays of the order of loading it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tidemark_core::OBJECTS_TOPIC;
use tidemark_core::blocking::blocking;
use tidemark_core::index::ObjectIndex;
use tidemark_core::log::{Log, OffsetRange};
use tokio::sync::watch;

use super::{list, prune, take};
use crate::Result;

/// When the server takes snapshots and how many it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// A snapshot each time the index applied this many more records (or as many as the newest
    /// snapshot has keys, if more); 0: never.
    pub every_events: u64,
    /// Snapshots kept (the newest); older ones are deleted.
    pub keep: usize,
}

impl Policy {
    pub fn never() -> Policy {
        Policy {
            every_events: 0,
            keep: 1,
        }
    }
}

/// Take a snapshot of `index` into `dir` whenever `applied` (the materializer's progress) has
/// moved `policy.every_events` past the newest snapshot. Runs until the materializer is gone;
/// a failed snapshot is logged and tried again after as many events.
pub async fn take_periodically(
    index: Arc<ObjectIndex>,
    mut applied: watch::Receiver<BTreeMap<u32, u64>>,
    log: Arc<dyn Log>,
    dir: PathBuf,
    policy: Policy,
) {
    if policy.every_events == 0 {
        return;
    }
    // Counting from the newest snapshot, so a restart does not take another one at once.
    let (mut last, mut keys) = {
        let listing = dir.clone();
        match blocking(move || Ok(list(&listing).map(|(found, _)| found))).await {
            Ok(Ok(found)) => found.first().map_or((0, 0), |s| (s.covered(), s.keys)),
            Ok(Err(e)) => {
                tracing::warn!("index snapshots: cannot list {}: {e}", dir.display());
                (0, 0)
            }
            Err(_) => return,
        }
    };
    if let Err(e) = prune_against_log(log.as_ref(), &dir, policy.keep).await {
        tracing::warn!("index snapshots: {e}");
    }
    loop {
        if applied.changed().await.is_err() {
            return;
        }
        let now: u64 = applied.borrow_and_update().values().sum();
        if now.saturating_sub(last) < policy.every_events.max(keys) {
            continue;
        }
        last = now;
        let (index, into) = (index.clone(), dir.clone());
        match blocking(move || Ok(take(&index, &into))).await {
            Ok(Ok(s)) => {
                last = s.covered();
                keys = s.keys;
                tracing::info!(
                    keys = s.keys,
                    offsets = ?s.applied,
                    "index snapshot {}",
                    s.path.display()
                );
            }
            Ok(Err(e)) => tracing::error!("index snapshot failed: {e}; trying again later"),
            Err(_) => return,
        }
        if let Err(e) = prune_against_log(log.as_ref(), &dir, policy.keep).await {
            tracing::warn!("index snapshots: {e}");
        }
    }
}

/// The offsets each partition of `objects` holds now.
pub async fn log_offsets(log: &dyn Log) -> Result<Vec<(u32, OffsetRange)>> {
    let mut out = Vec::new();
    for p in 0..log.partitions(OBJECTS_TOPIC)? {
        out.push((p, log.offsets(OBJECTS_TOPIC, p).await?));
    }
    Ok(out)
}

/// [`prune`] against the log as it is now, logging what was deleted.
pub async fn prune_against_log(log: &dyn Log, dir: &std::path::Path, keep: usize) -> Result<()> {
    let offsets = log_offsets(log).await?;
    let dir = dir.to_path_buf();
    let deleted = blocking(move || Ok(prune(&dir, keep, &offsets)))
        .await
        .map_err(crate::Error::from)??;
    for (path, why) in deleted {
        tracing::info!("deleted index snapshot {}: {why}", path.display());
    }
    Ok(())
}
