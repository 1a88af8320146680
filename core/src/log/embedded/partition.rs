//! One partition: its segments, the offsets readers may see, and the writer-side state of the
//! active segment. Recovery happens here: on open, the newest segment is scanned and anything
//! after its last whole, valid record (a torn or corrupt tail) is cut off.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::Notify;

use super::config::LogConfig;
use super::frame;
use super::segment::{self, IndexEntry, Segment};
use crate::error::IoContext;
use crate::log::{NewRecord, OffsetRange, Record, TopicSpec};
use crate::{Error, Result};

pub struct Partition {
    pub id: u32,
    pub(super) dir: PathBuf,
    /// Oldest first; the last one is the active segment.
    pub(super) segments: RwLock<Vec<Arc<Segment>>>,
    /// Next offset readers may see: everything below it is durable (or written, under the
    /// `interval` fsync policy).
    high_watermark: AtomicU64,
    /// Wakes readers waiting at the end of the partition.
    appended: Notify,
    /// Held while the partition is compacted (the periodic pass and `compact_now` may meet).
    pub(super) compaction: Mutex<()>,
    /// Append-side state; only the writer thread (or recovery) locks it.
    pub(super) writer: Mutex<Option<ActiveWriter>>,
}

/// The writer's handle on the active segment.
pub(super) struct ActiveWriter {
    segment: Arc<Segment>,
    file: File,
    /// Bytes in the file, including `pending` once flushed.
    written: u64,
    next_offset: u64,
    last_timestamp: i64,
    last_indexed: Option<u64>,
    /// Framed records not yet written to the file.
    pending: Vec<u8>,
    pending_max_ts: i64,
}

impl Partition {
    /// Open (creating if needed) a partition directory. With `repair`, a torn tail is truncated
    /// and the partition is ready to append; without, the files are only read.
    pub fn open(dir: PathBuf, id: u32, config: &LogConfig, repair: bool) -> Result<Partition> {
        std::fs::create_dir_all(&dir).ctx("create partition directory", &dir)?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(&dir).ctx("list partition directory", &dir)? {
            let entry = entry.ctx("list partition directory", &dir)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(base) = segment::parse_log_name(name) {
                bases.push(base);
            } else if repair && super::compaction::is_leftover(name) {
                let path = entry.path();
                std::fs::remove_file(&path).ctx("remove unfinished compaction", &path)?;
            }
        }
        bases.sort_unstable();
        let mut segments = Vec::with_capacity(bases.len());
        for (i, &base) in bases.iter().enumerate() {
            let seg = Segment::open(&dir, base)?;
            let last = i + 1 == bases.len();
            if last || !seg.load_index_file(&dir)? {
                let end = seg.scan_and_index(0, config.index_interval_bytes, id)?;
                if let Some(reason) = end.torn {
                    if !last {
                        return Err(Error::Corrupt(format!(
                            "{} is corrupt at byte {} ({reason}) and is not the newest segment; \
                             move it aside to start, losing its records after that point",
                            seg.path.display(),
                            end.valid_len
                        )));
                    }
                    if repair {
                        truncate_tail(&seg.path, end.valid_len, &reason)?;
                    }
                }
                if !last && repair {
                    seg.write_index_file(&dir)?;
                }
            }
            if let Some(prev) = segments.last().map(|s: &Arc<Segment>| s.next_offset())
                && prev != base
            {
                return Err(Error::Corrupt(format!(
                    "{}: segment starts at offset {base} but the previous one ends at {prev}",
                    dir.display()
                )));
            }
            segments.push(Arc::new(seg));
        }
        let partition = Partition {
            id,
            high_watermark: AtomicU64::new(segments.last().map_or(0, |s| s.next_offset())),
            dir,
            segments: RwLock::new(segments),
            appended: Notify::new(),
            compaction: Mutex::new(()),
            writer: Mutex::new(None),
        };
        if repair {
            partition.start_writer()?;
        }
        Ok(partition)
    }

    /// Prepare the active segment for appends (creating the first segment if there is none).
    fn start_writer(&self) -> Result<()> {
        let mut segments = self.segments.write().unwrap();
        if segments.is_empty() {
            let (seg, _) = Segment::create(&self.dir, 0)?;
            sync_dir(&self.dir)?;
            segments.push(Arc::new(seg));
        }
        let active = segments.last().unwrap().clone();
        let file = OpenOptions::new()
            .append(true)
            .open(&active.path)
            .ctx("open segment for append", &active.path)?;
        let last_ts = active.max_timestamp().max(0);
        *self.writer.lock().unwrap() = Some(ActiveWriter {
            written: active.size(),
            next_offset: active.next_offset(),
            last_timestamp: last_ts,
            last_indexed: active.last_index_position(),
            pending: Vec::new(),
            pending_max_ts: i64::MIN,
            file,
            segment: active,
        });
        Ok(())
    }

    /// After a failed write (a full disk, an I/O error): forget what was staged, take in the
    /// whole records the write did put in the active segment (a torn last one is cut), make
    /// them durable and visible, and get ready to append again. A read-only partition has
    /// nothing to recover.
    pub(super) fn recover_writer(&self, config: &LogConfig) -> Result<()> {
        {
            let mut guard = self.writer.lock().unwrap();
            if guard.is_none() {
                return Ok(());
            }
            *guard = None;
        }
        let active = self
            .segments
            .read()
            .unwrap()
            .last()
            .cloned()
            .expect("a writable partition has a segment");
        let known = active.size();
        active.forget_index_from(known);
        let end = active.scan_and_index(known, config.index_interval_bytes, self.id)?;
        if let Some(reason) = end.torn {
            truncate_tail(&active.path, end.valid_len, &reason)?;
        }
        File::open(&active.path)
            .and_then(|f| f.sync_all())
            .ctx("fsync segment", &active.path)?;
        self.start_writer()?;
        self.high_watermark
            .store(active.next_offset(), Ordering::Release);
        self.appended.notify_waiters();
        Ok(())
    }

    pub fn range(&self) -> OffsetRange {
        let segments = self.segments.read().unwrap();
        OffsetRange {
            start: segments.first().map_or(0, |s| s.base),
            end: self.high_watermark.load(Ordering::Acquire),
        }
    }

    pub fn high_watermark(&self) -> u64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// Bytes on disk across segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.read().unwrap().iter().map(|s| s.size()).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.read().unwrap().len()
    }

    fn segment_for(&self, offset: u64) -> Option<Arc<Segment>> {
        let segments = self.segments.read().unwrap();
        let i = segments.partition_point(|s| s.base <= offset);
        (i > 0).then(|| segments[i - 1].clone())
    }

    /// Up to `max` visible records from `from`, waiting up to `wait` at the end.
    pub async fn read(
        &self,
        from: u64,
        max: usize,
        wait: std::time::Duration,
    ) -> Result<Vec<Record>> {
        let range = self.range();
        range.check(self.id, from)?;
        if from == range.end && !wait.is_zero() {
            let notified = self.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.high_watermark() == from {
                let _ = tokio::time::timeout(wait, notified).await;
            }
        }
        self.read_now(from, max)
    }

    fn read_now(&self, mut from: u64, max: usize) -> Result<Vec<Record>> {
        let until = self.high_watermark();
        let mut out = Vec::new();
        // Each pass reads within one segment; an exhausted segment leads to the next one,
        // whose base is exactly where the previous one ended.
        while out.len() < max && from < until {
            let Some(seg) = self.segment_for(from) else {
                break;
            };
            let batch = seg.read(from, until, max - out.len(), self.id)?;
            let Some(last) = batch.last() else { break };
            from = last.offset + 1;
            out.extend(batch);
        }
        Ok(out)
    }

    /// First offset with append time >= `ts`, or the end.
    pub fn offset_for_time(&self, ts: i64) -> Result<u64> {
        let until = self.high_watermark();
        let segments: Vec<_> = self.segments.read().unwrap().clone();
        for seg in segments {
            if seg.is_empty() || seg.max_timestamp() < ts {
                continue;
            }
            if let Some(offset) = seg.offset_for_time(ts, until, self.id)? {
                return Ok(offset);
            }
        }
        Ok(until)
    }

    /// Frame `rec` into the active segment's pending buffer (rolling first if it is full).
    /// Frame one record into the pending bytes, rolling first when the active segment would
    /// exceed `segment_bytes` or is older than the configured age.
    pub(super) fn stage(
        &self,
        w: &mut ActiveWriter,
        rec: &NewRecord,
        config: &LogConfig,
        segment_bytes: u64,
        now: i64,
    ) -> Result<u64> {
        let len = frame::encoded_len(rec) as u64;
        let seg_len = w.written + w.pending.len() as u64;
        let too_big = seg_len > 0 && seg_len + len > segment_bytes;
        let too_old = seg_len > 0
            && config.segment_ms.is_some_and(|ms| {
                w.segment
                    .first_timestamp()
                    .is_some_and(|first| now - first >= (ms as i64) * 1000)
            });
        if too_big || too_old {
            self.roll(w)?;
        }
        let offset = w.next_offset;
        let ts = now.max(w.last_timestamp);
        let pos = w.written + w.pending.len() as u64;
        if w.last_indexed
            .is_none_or(|p| pos >= p + config.index_interval_bytes)
        {
            w.segment.push_index(IndexEntry {
                offset,
                position: pos,
                timestamp: ts,
            });
            w.last_indexed = Some(pos);
        }
        frame::encode(&mut w.pending, offset, ts, rec);
        w.next_offset += 1;
        w.last_timestamp = ts;
        w.pending_max_ts = ts;
        Ok(offset)
    }

    /// Write pending frames to the file; with `sync`, also fsync.
    pub(super) fn flush(&self, w: &mut ActiveWriter, sync: bool) -> Result<()> {
        use std::io::Write;
        if !w.pending.is_empty() {
            w.file
                .write_all(&w.pending)
                .ctx("append to segment", &w.segment.path)?;
            w.written += w.pending.len() as u64;
            w.pending.clear();
            w.segment
                .advance(w.written, w.next_offset, w.pending_max_ts);
        }
        if sync {
            w.file.sync_data().ctx("fsync segment", &w.segment.path)?;
        }
        Ok(())
    }

    /// The frames staged for the active segment: its file and the position they go to.
    pub(super) fn staged(w: &ActiveWriter) -> (&Path, u64, &[u8]) {
        (&w.segment.path, w.written, &w.pending)
    }

    /// Make everything flushed visible to readers and wake them.
    pub(super) fn publish(&self, w: &ActiveWriter) {
        self.high_watermark.store(w.next_offset, Ordering::Release);
        self.appended.notify_waiters();
    }

    /// Seal the active segment (flushed, fsynced, indexed) and start a new one.
    fn roll(&self, w: &mut ActiveWriter) -> Result<()> {
        self.flush(w, true)?;
        w.segment.write_index_file(&self.dir)?;
        let (seg, file) = Segment::create(&self.dir, w.next_offset)?;
        sync_dir(&self.dir)?;
        let seg = Arc::new(seg);
        self.segments.write().unwrap().push(seg.clone());
        w.segment = seg;
        w.file = file;
        w.written = 0;
        w.last_indexed = None;
        w.pending_max_ts = i64::MIN;
        Ok(())
    }

    /// Delete sealed segments that retention no longer keeps. Returns how many were deleted.
    pub(super) fn apply_retention(&self, spec: &TopicSpec, now: i64) -> Result<usize> {
        if spec.retention_ms.is_none() && spec.retention_bytes.is_none() {
            return Ok(0);
        }
        let removed: Vec<Arc<Segment>> = {
            let mut segments = self.segments.write().unwrap();
            let mut total: u64 = segments.iter().map(|s| s.size()).sum();
            let mut n = 0;
            // Never the active (last) segment.
            while n + 1 < segments.len() {
                let seg = &segments[n];
                let expired = spec
                    .retention_ms
                    .is_some_and(|ms| seg.max_timestamp() < now - (ms as i64) * 1000);
                let oversize = spec.retention_bytes.is_some_and(|max| total > max);
                if !(expired || oversize) {
                    break;
                }
                total -= seg.size();
                n += 1;
            }
            segments.drain(..n).collect()
        };
        for seg in &removed {
            tracing::info!(segment = %seg.path.display(), "retention deleted segment");
            std::fs::remove_file(&seg.path).ctx("delete segment", &seg.path)?;
            let _ = std::fs::remove_file(segment::index_path(&self.dir, seg.base));
        }
        Ok(removed.len())
    }

    /// Read-only mode: pick up records and segments another process appended since the last
    /// look. Returns whether anything new arrived.
    pub fn refresh(&self, config: &LogConfig) -> Result<bool> {
        let before = self.high_watermark();
        let last = self.segments.read().unwrap().last().cloned();
        if let Some(seg) = &last {
            seg.scan_and_index(seg.size(), config.index_interval_bytes, self.id)?;
        }
        let known_end = last.as_ref().map_or(0, |s| s.next_offset());
        let mut newer = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                if let Some(base) = entry.file_name().to_str().and_then(segment::parse_log_name)
                    && base >= known_end
                    && last.as_ref().is_none_or(|s| s.base != base)
                {
                    newer.push(base);
                }
            }
        }
        newer.sort_unstable();
        for base in newer {
            let seg = Segment::open(&self.dir, base)?;
            seg.scan_and_index(0, config.index_interval_bytes, self.id)?;
            self.segments.write().unwrap().push(Arc::new(seg));
        }
        let end = self
            .segments
            .read()
            .unwrap()
            .last()
            .map_or(0, |s| s.next_offset());
        self.high_watermark.store(end, Ordering::Release);
        Ok(end != before)
    }
}

fn truncate_tail(path: &Path, valid_len: u64, reason: &str) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .ctx("open segment for repair", path)?;
    let len = file.metadata().ctx("stat segment", path)?.len();
    tracing::warn!(
        segment = %path.display(),
        valid_bytes = valid_len,
        dropped_bytes = len - valid_len,
        "torn or corrupt tail detected ({reason}); truncating to the last valid record"
    );
    file.set_len(valid_len).ctx("truncate segment", path)?;
    file.sync_all().ctx("fsync segment", path)?;
    Ok(())
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("fsync directory", dir)
}
