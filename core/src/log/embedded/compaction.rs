//! Compaction of topics created with `compacted: true` (`_config`, dead letters), with Kafka's
//! semantics so both backends keep the same records: in sealed segments, a record is kept only
//! while it is the newest for its key; an empty value is a tombstone, which removes its key
//! once it is older than the tombstone retention (followers that were behind have had that
//! long to see it). Offsets never change: a compacted segment has gaps, and readers asking
//! for an offset in a gap get the next record.
//!
//! Each segment also keeps a record at its last offset, so a segment is never empty and still
//! ends where the next one starts (what `Partition::open` checks). When that record is not
//! the newest of its key, it is kept as a tombstone of its key: a reader applying records in
//! order meets the key's newest record after it, so the end state is the same, while the old
//! value cannot come back (a stale update must not resurrect an entity deleted since).
//!
//! A segment is rewritten to `<base>.compacting`, fsynced, and renamed over `<base>.log`
//! after its index file is removed; a crash at any point leaves either the old or the new
//! file, both valid. Readers holding the old file keep reading it until they let go.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::Topic;
use super::config::LogConfig;
use super::frame;
use super::partition::{Partition, sync_dir};
use super::segment::{self, Segment};
use crate::Result;
use crate::error::IoContext;
use crate::log::{NewRecord, Record};
use crate::time::now_us;

/// Records read per pass over a segment.
const BATCH: usize = 10_000;

/// What compaction does with a record of a sealed segment.
#[derive(Clone, Copy)]
enum Fate {
    Keep,
    Drop,
    /// Kept at its offset with its value removed (a segment's last record, replaced).
    Tombstone,
}

/// What a compaction did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    pub segments_rewritten: usize,
    pub records_removed: u64,
    pub bytes_freed: u64,
}

/// Compact every topic created compacted; failures are logged and retried next time.
pub fn compact_topics(topics: &[Arc<Topic>], config: &LogConfig) -> Compacted {
    let now = now_us();
    let retention = config.tombstone_retention.as_micros() as i64;
    let mut total = Compacted::default();
    for topic in topics.iter().filter(|t| t.spec.compacted) {
        for part in &topic.partitions {
            match part.compact(now, retention, config.index_interval_bytes) {
                Ok(c) => {
                    if c.records_removed > 0 {
                        tracing::info!(
                            topic = %topic.name,
                            partition = part.id,
                            records = c.records_removed,
                            bytes = c.bytes_freed,
                            "compacted"
                        );
                    }
                    total.segments_rewritten += c.segments_rewritten;
                    total.records_removed += c.records_removed;
                    total.bytes_freed += c.bytes_freed;
                }
                Err(e) => tracing::warn!(
                    topic = %topic.name,
                    partition = part.id,
                    "compaction failed: {e}; retrying next period"
                ),
            }
        }
    }
    total
}

/// Leftovers of a compaction a crash interrupted.
pub(super) fn is_leftover(name: &str) -> bool {
    name.ends_with(".compacting")
}

fn compacting_path(seg: &Segment) -> PathBuf {
    seg.path.with_extension("compacting")
}

impl Partition {
    /// Compact the sealed segments (all but the active one). `now` and the retention in µs.
    pub(super) fn compact(
        &self,
        now: i64,
        tombstone_retention_us: i64,
        index_interval: u64,
    ) -> Result<Compacted> {
        let _one_at_a_time = self.compaction.lock().unwrap();
        let segments: Vec<Arc<Segment>> = self.segments.read().unwrap().clone();
        let mut done = Compacted::default();
        if segments.len() < 2 {
            return Ok(done);
        }
        // The newest offset of every key, across the whole partition.
        let until = self.high_watermark();
        let mut newest: HashMap<Bytes, u64> = HashMap::new();
        for seg in &segments {
            for_each_record(seg, until, self.id, |rec| {
                newest.insert(rec.key.clone(), rec.offset);
                Ok(())
            })?;
        }
        // What becomes of each record of a sealed segment whose last offset is `last`.
        let fate = |rec: &Record, last: u64| {
            let is_newest = newest.get(&rec.key) == Some(&rec.offset);
            let expired_tombstone =
                rec.value.is_empty() && rec.timestamp < now - tombstone_retention_us;
            if is_newest && !expired_tombstone {
                Fate::Keep
            } else if rec.offset == last {
                if rec.value.is_empty() {
                    Fate::Keep
                } else {
                    Fate::Tombstone
                }
            } else {
                Fate::Drop
            }
        };
        for seg in &segments[..segments.len() - 1] {
            let last = seg.next_offset() - 1;
            let (mut dropped, mut changed) = (0u64, 0u64);
            for_each_record(seg, until, self.id, |rec| {
                match fate(rec, last) {
                    Fate::Keep => {}
                    Fate::Tombstone => changed += 1,
                    Fate::Drop => dropped += 1,
                }
                Ok(())
            })?;
            if dropped + changed == 0 {
                continue;
            }
            let removable = dropped;
            let before = seg.size();
            let rewritten = self.rewrite(seg, until, index_interval, |rec| fate(rec, last))?;
            done.segments_rewritten += 1;
            done.records_removed += removable;
            done.bytes_freed += before.saturating_sub(rewritten.size());
        }
        Ok(done)
    }

    /// Write the records of `seg` that `keep` selects to a new file, put it in place of the
    /// segment, and return the new segment.
    fn rewrite(
        &self,
        seg: &Arc<Segment>,
        until: u64,
        index_interval: u64,
        fate: impl Fn(&Record) -> Fate,
    ) -> Result<Arc<Segment>> {
        let tmp = compacting_path(seg);
        let mut buf = Vec::new();
        for_each_record(seg, until, self.id, |rec| {
            let new = match fate(rec) {
                Fate::Drop => return Ok(()),
                Fate::Keep => NewRecord {
                    key: rec.key.clone(),
                    value: rec.value.clone(),
                    headers: rec.headers.clone(),
                    partition: None,
                },
                Fate::Tombstone => NewRecord::new(rec.key.clone(), Bytes::new()),
            };
            frame::encode(&mut buf, rec.offset, rec.timestamp, &new);
            Ok(())
        })?;
        std::fs::write(&tmp, &buf).ctx("write compacted segment", &tmp)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .ctx("sync compacted segment", &tmp)?;
        // The old index describes the old file; without it a restart rebuilds by scanning.
        let index = segment::index_path(&self.dir, seg.base);
        match std::fs::remove_file(&index) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(crate::Error::io("remove index", &index, e));
            }
            _ => {}
        }
        std::fs::rename(&tmp, &seg.path).ctx("replace segment", &seg.path)?;
        sync_dir(&self.dir)?;
        let new = Segment::open(&self.dir, seg.base)?;
        new.scan_and_index(0, index_interval, self.id)?;
        new.write_index_file(&self.dir)?;
        let new = Arc::new(new);
        let mut segments = self.segments.write().unwrap();
        if let Some(slot) = segments.iter_mut().find(|s| s.base == seg.base) {
            *slot = new.clone();
        }
        Ok(new)
    }
}

/// Call `f` on every record of `seg` below `until`, a batch at a time.
fn for_each_record(
    seg: &Segment,
    until: u64,
    partition: u32,
    mut f: impl FnMut(&Record) -> Result<()>,
) -> Result<()> {
    let mut from = seg.base;
    loop {
        let batch = seg.read(from, until, BATCH, partition)?;
        let Some(last) = batch.last().map(|r| r.offset) else {
            return Ok(());
        };
        for rec in &batch {
            f(rec)?;
        }
        from = last + 1;
    }
}
