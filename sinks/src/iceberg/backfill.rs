//! A new inventory starts from the index: when no commit has covered a log partition yet, its
//! live objects (past the subscription's rules and filter) are read from one consistent view
//! of this node's index, written as data files, and committed in one snapshot that records
//! the offset that view reflects. So the inventory holds every live object from its first
//! snapshot, even when the subscription starts at `latest` or retention trimmed the log; the
//! live events before that offset are skipped by the inventory (the journal still gets them).
//!
//! Exactly once: until that commit lands, no snapshot covers the partition and the table holds
//! no row of its keys (each key belongs to one log partition), so a crash in between starts
//! the backfill over with nothing to undo (files written before it are orphans, removed later).

use std::collections::BTreeMap;
use std::sync::Arc;

use iceberg::spec::DataFile;

use super::inventory::InvRow;
use super::overwrite::{self, Changes, Overwriter};
use super::schema::key_bucket;
use super::{Iceberg, TableInfo};
use crate::sink::Feed;
use crate::{Error, Result};

/// Rows of one table partition written as one file once this many are buffered.
const FILE_ROWS: usize = 100_000;
/// Rows buffered across partitions at most: past it, every partition's buffer is written.
const BUFFERED_ROWS: usize = 400_000;

/// Backfill `feed`'s partition into the inventory; returns the offset it covers now. Without
/// an index on this node, the inventory starts from the feed's position (offset 0 covered:
/// the log replays everything from there).
pub(super) async fn inventory(sink: &Arc<Iceberg>, info: &TableInfo, feed: &Feed) -> Result<u64> {
    let partition = feed.partition();
    let started = std::time::Instant::now();
    // The state must include every event before where the feed reads from.
    let Some(mut scan) = feed.live_objects(feed.from()) else {
        return Ok(0);
    };
    let mut parts = Parts::new();
    let (mut buffered, mut objects) = (0usize, 0u64);
    let mut files: Vec<DataFile> = Vec::new();
    while let Some(chunk) = scan.objects.recv().await {
        let mut full = false;
        for (event, at) in chunk {
            // The scan made this event for us alone: its strings move into the row.
            let event = Arc::try_unwrap(event).unwrap_or_else(|shared| (*shared).clone());
            let Some((bucket, row)) = InvRow::from_event(event, at.partition, at.offset) else {
                continue;
            };
            let hash = key_bucket(&row.key);
            let rows = match parts.get_mut(bucket.as_str()) {
                Some(hashes) => hashes.entry(hash).or_default(),
                None => parts.entry(bucket).or_default().entry(hash).or_default(),
            };
            rows.push(row);
            full |= rows.len() >= FILE_ROWS;
            buffered += 1;
            objects += 1;
        }
        if buffered >= BUFFERED_ROWS {
            write(sink, info, &mut parts, 0, &mut files).await?;
            buffered = 0;
        } else if full {
            buffered -= write(sink, info, &mut parts, FILE_ROWS, &mut files).await?;
        }
    }
    let applied = scan
        .applied
        .await
        .map_err(|e| Error::Transient(format!("the index scan failed: {e}")))??;
    write(sink, info, &mut parts, 0, &mut files).await?;
    let overwriter = Overwriter {
        catalog: sink.catalog.clone(),
        ident: sink.inventory.ident.clone(),
        info: info.clone(),
    };
    let count = files.len();
    let payload = Changes {
        changes: Vec::new(),
        files,
    };
    sink.inventory_commits
        .commit(&overwriter, partition, applied, payload)
        .await?;
    tracing::info!(
        subscription = feed.subscription(),
        partition,
        "the inventory starts with {objects} live objects from the index, as of offset {applied} \
         ({count} files, {} ms)",
        started.elapsed().as_millis()
    );
    Ok(applied)
}

/// Rows buffered by table partition: bucket, then key hash. The scan gives keys in order, so
/// each partition's rows arrive sorted.
type Parts = BTreeMap<String, BTreeMap<i32, Vec<InvRow>>>;

/// Write the partitions holding at least `min_rows` rows as one file each; returns how many
/// rows were written.
async fn write(
    sink: &Arc<Iceberg>,
    info: &TableInfo,
    parts: &mut Parts,
    min_rows: usize,
    files: &mut Vec<DataFile>,
) -> Result<usize> {
    let full: Vec<(String, i32)> = parts
        .iter()
        .flat_map(|(bucket, hashes)| {
            hashes
                .iter()
                .filter(|(_, rows)| !rows.is_empty() && rows.len() >= min_rows)
                .map(|(hash, _)| (bucket.clone(), *hash))
        })
        .collect();
    let mut written = 0;
    for (bucket, hash) in full {
        let hashes = parts.get_mut(&bucket).expect("listed above");
        let mut rows = hashes.remove(&hash).unwrap_or_default();
        if hashes.is_empty() {
            parts.remove(&bucket);
        }
        // One scan gives each key once, in order: the sort only checks that (a sorted run
        // is found in one pass and left as it is).
        rows.sort_by(|a, b| a.key.cmp(&b.key));
        written += rows.len();
        let path = format!(
            "{}/data/bucket={bucket}/key_bucket={hash}/{}.parquet",
            info.location,
            uuid::Uuid::now_v7()
        );
        let encoded = {
            let (info, path) = (info.clone(), path.clone());
            tokio::task::spawn_blocking(move || {
                let rows: Vec<&InvRow> = rows.iter().collect();
                overwrite::encode_partition(&info, &bucket, hash, &rows, &path)
            })
            .await
            .map_err(|e| Error::Transient(format!("the encoder thread failed: {e}")))??
        };
        sink.catalog
            .file_io()
            .new_output(&path)
            .map_err(|e| Error::Transient(format!("writing {path}: {e}")))?
            .write(encoded.0)
            .await
            .map_err(|e| Error::Transient(format!("writing {path}: {e}")))?;
        files.push(encoded.1);
    }
    Ok(written)
}
