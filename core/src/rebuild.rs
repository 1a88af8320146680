//! Rebuilding the object index from the log: the log is the source of truth, so a fresh index
//! built from it must equal the live one. Reading and decoding the next chunk overlaps with
//! committing the previous one.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::EventCodec;
use crate::index::{Batch, ObjectIndex};
use crate::log::Log;
use crate::{Error, OBJECTS_TOPIC, Result};

/// Records per index commit.
const CHUNK: usize = 100_000;

#[derive(Debug, Clone, Copy)]
pub struct RebuildStats {
    /// Records read from the log.
    pub records: u64,
    /// Records that could not be decoded (skipped, and reported).
    pub undecodable: u64,
    pub elapsed: Duration,
}

/// Build a new index at `into` (which must not exist) from everything in the `objects` topic.
/// `progress(done, total)` is called after each chunk.
pub async fn rebuild_index(
    log: &dyn Log,
    codec: &EventCodec,
    into: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<RebuildStats> {
    if into.exists() {
        return Err(Error::BadInput(format!(
            "{} already exists; rebuild writes a new index",
            into.display()
        )));
    }
    let started = Instant::now();
    let index = Arc::new(ObjectIndex::open(into)?);
    let partitions = log.partitions(OBJECTS_TOPIC)?;
    let mut ranges = Vec::new();
    for p in 0..partitions {
        ranges.push((p, log.offsets(OBJECTS_TOPIC, p).await?));
    }
    let total: u64 = ranges.iter().map(|(_, r)| r.end - r.start).sum();
    let (mut done, mut undecodable) = (0u64, 0u64);
    let mut pending: Option<tokio::task::JoinHandle<Result<()>>> = None;
    for (p, range) in ranges {
        let mut next = range.start;
        while next < range.end {
            let max = CHUNK.min((range.end - next) as usize);
            let records = log.read(OBJECTS_TOPIC, p, next, max, Duration::ZERO).await?;
            let Some(last) = records.last() else { break };
            next = last.offset + 1;
            let mut batch = Batch::default();
            for rec in &records {
                match codec.decode(&rec.value) {
                    Ok(event) => batch.add(p, rec.offset, &event),
                    Err(e) => {
                        undecodable += 1;
                        tracing::error!(partition = p, offset = rec.offset, "skipping undecodable record: {e}");
                        batch.skip(p, rec.offset);
                    }
                }
            }
            if let Some(prev) = pending.take() {
                prev.await.expect("index commit task panicked")?;
                progress(done, total);
            }
            done += records.len() as u64;
            let index = index.clone();
            pending = Some(tokio::task::spawn_blocking(move || index.commit(batch)));
        }
    }
    if let Some(prev) = pending.take() {
        prev.await.expect("index commit task panicked")?;
    }
    progress(done, total);
    Ok(RebuildStats {
        records: done,
        undecodable,
        elapsed: started.elapsed(),
    })
}
