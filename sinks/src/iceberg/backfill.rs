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
use tidemark_core::codec::view::EventView;

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
    // The state must include every event before where the feed reads from.
    let Some(mut scan) = feed.live_objects(feed.from()) else {
        return Ok(0);
    };
    let mut parts: BTreeMap<(String, i32), BTreeMap<String, InvRow>> = BTreeMap::new();
    let (mut buffered, mut objects) = (0usize, 0u64);
    let mut files: Vec<DataFile> = Vec::new();
    while let Some(chunk) = scan.objects.recv().await {
        for (event, at) in chunk {
            let Some(row) = InvRow::after(&EventView::of(&event), at.partition, at.offset) else {
                continue;
            };
            let part = parts
                .entry((event.bucket.clone(), key_bucket(&event.key)))
                .or_default();
            part.insert(event.key.clone(), row);
            buffered += 1;
            objects += 1;
        }
        if buffered >= BUFFERED_ROWS {
            write(sink, info, &mut parts, 0, &mut files).await?;
            buffered = 0;
        } else if parts.values().any(|p| p.len() >= FILE_ROWS) {
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
         ({count} files)"
    );
    Ok(applied)
}

/// Write the partitions holding at least `min_rows` rows as one file each; returns how many
/// rows were written.
async fn write(
    sink: &Arc<Iceberg>,
    info: &TableInfo,
    parts: &mut BTreeMap<(String, i32), BTreeMap<String, InvRow>>,
    min_rows: usize,
    files: &mut Vec<DataFile>,
) -> Result<usize> {
    let full: Vec<(String, i32)> = parts
        .iter()
        .filter(|(_, rows)| !rows.is_empty() && rows.len() >= min_rows)
        .map(|(p, _)| p.clone())
        .collect();
    let mut written = 0;
    for (bucket, hash) in full {
        let rows = parts.remove(&(bucket.clone(), hash)).unwrap_or_default();
        written += rows.len();
        let path = format!(
            "{}/data/bucket={bucket}/key_bucket={hash}/{}.parquet",
            info.location,
            uuid::Uuid::now_v7()
        );
        let encoded = {
            let (info, path) = (info.clone(), path.clone());
            tokio::task::spawn_blocking(move || {
                overwrite::encode_partition(&info, &bucket, hash, rows, &path)
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
