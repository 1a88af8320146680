//! One segment: an append-only file of framed records (`<base offset>.log`) and its sparse
//! index (`<base offset>.index`), which maps offsets and append times to file positions.
//! A segment's index lives in memory; it is written to disk when the segment is sealed and
//! rebuilt by scanning when the file is missing or does not match the segment.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use bytes::{Buf, Bytes};

use super::frame::{self, FRAME_HEADER, Parsed};
use crate::error::IoContext;
use crate::log::Record;
use crate::{Error, Result};

/// Bytes read from a segment file at a time.
const CHUNK: usize = 1 << 20;
const INDEX_MAGIC: &[u8; 4] = b"TMIX";
const INDEX_ENTRY: usize = 16;
const INDEX_FOOTER: usize = 8 + 8 + 8 + 4 + 4 + 4;

/// A sparse index entry: the first record at or after a byte boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub offset: u64,
    pub position: u64,
    pub timestamp: i64,
}

pub struct Segment {
    /// Offset of the first record (also the file name).
    pub base: u64,
    pub path: PathBuf,
    /// Read handle; `read_at` needs no seek, so readers share it.
    file: File,
    index: RwLock<Vec<IndexEntry>>,
    /// Bytes of whole records in the file.
    size: AtomicU64,
    /// One past the last record's offset (`base` when empty).
    next_offset: AtomicU64,
    /// Append time of the newest record (`i64::MIN` when empty).
    max_timestamp: AtomicI64,
}

pub fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

pub fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}

/// Base offset from a `<base>.log` file name.
pub fn parse_log_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

/// Where a scan stopped.
#[derive(Debug)]
pub struct ScanEnd {
    /// File position after the last whole, valid record.
    pub valid_len: u64,
    /// Why the bytes after `valid_len` (if any) are not records.
    pub torn: Option<String>,
}

impl Segment {
    /// Open an existing segment file for reading, with empty stats (see `scan_and_index`).
    pub fn open(dir: &Path, base: u64) -> Result<Segment> {
        let path = log_path(dir, base);
        let file = File::open(&path).ctx("open segment", &path)?;
        Ok(Segment {
            base,
            path,
            file,
            index: RwLock::new(Vec::new()),
            size: AtomicU64::new(0),
            next_offset: AtomicU64::new(base),
            max_timestamp: AtomicI64::new(i64::MIN),
        })
    }

    /// Create a new, empty segment file; returns it and the append handle.
    pub fn create(dir: &Path, base: u64) -> Result<(Segment, File)> {
        let path = log_path(dir, base);
        let append = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .ctx("create segment", &path)?;
        Ok((Segment::open(dir, base)?, append))
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.next_offset() == self.base
    }

    /// Record that whole records up to `size` bytes / `next_offset` are in the file.
    pub fn advance(&self, size: u64, next_offset: u64, max_timestamp: i64) {
        self.size.store(size, Ordering::Release);
        self.max_timestamp
            .fetch_max(max_timestamp, Ordering::AcqRel);
        self.next_offset.store(next_offset, Ordering::Release);
    }

    /// Append time of the first record, if any.
    pub fn first_timestamp(&self) -> Option<i64> {
        self.index.read().unwrap().first().map(|e| e.timestamp)
    }

    pub fn last_index_position(&self) -> Option<u64> {
        self.index.read().unwrap().last().map(|e| e.position)
    }

    /// Forget index entries at or past byte `from` (they pointed at records a failed write
    /// staged, which are rescanned from the file).
    pub fn forget_index_from(&self, from: u64) {
        self.index.write().unwrap().retain(|e| e.position < from);
    }

    pub fn push_index(&self, entry: IndexEntry) {
        self.index.write().unwrap().push(entry);
    }

    /// Scan records from `from_pos` (which must be a frame boundary, with the stats describing
    /// everything before it), indexing every `interval` bytes. Stops at the end of the file or
    /// at the first torn or corrupt frame.
    pub fn scan_and_index(&self, from_pos: u64, interval: u64, partition: u32) -> Result<ScanEnd> {
        let file_len = self.file.metadata().ctx("stat segment", &self.path)?.len();
        let mut cursor = FrameCursor::new(&self.file, &self.path, partition, from_pos, file_len);
        let mut last_indexed = self.index.read().unwrap().last().map(|e| e.position);
        let mut expected = self.next_offset();
        loop {
            match cursor.next()? {
                Step::Record(rec, pos, len) => {
                    // Offsets increase; compaction leaves gaps between them.
                    if rec.offset < expected {
                        return Ok(ScanEnd {
                            valid_len: pos,
                            torn: Some(format!(
                                "record at byte {pos} has offset {}, expected {expected} or more",
                                rec.offset
                            )),
                        });
                    }
                    if last_indexed.is_none_or(|p| pos >= p + interval) {
                        self.push_index(IndexEntry {
                            offset: rec.offset,
                            position: pos,
                            timestamp: rec.timestamp,
                        });
                        last_indexed = Some(pos);
                    }
                    expected = rec.offset + 1;
                    self.advance(pos + len as u64, expected, rec.timestamp);
                }
                Step::End => {
                    return Ok(ScanEnd {
                        valid_len: cursor.pos(),
                        torn: None,
                    });
                }
                Step::Torn { pos, reason } => {
                    return Ok(ScanEnd {
                        valid_len: pos,
                        torn: Some(reason),
                    });
                }
            }
        }
    }

    /// File position to start reading at to find `offset`.
    fn position_for_offset(&self, offset: u64) -> u64 {
        let index = self.index.read().unwrap();
        let i = index.partition_point(|e| e.offset <= offset);
        if i == 0 { 0 } else { index[i - 1].position }
    }

    /// A file position at or past the start of the record at `offset`, so every record before
    /// it lies before the position (`u64::MAX` when the index has no such record).
    fn position_past(&self, offset: u64) -> u64 {
        let index = self.index.read().unwrap();
        let i = index.partition_point(|e| e.offset < offset);
        index.get(i).map_or(u64::MAX, |e| e.position)
    }

    /// File position to start reading at to find the first record with time >= `ts`.
    fn position_for_time(&self, ts: i64) -> u64 {
        let index = self.index.read().unwrap();
        let i = index.partition_point(|e| e.timestamp < ts);
        if i == 0 { 0 } else { index[i - 1].position }
    }

    /// Records with `from <= offset < until`, at most `max` of them.
    pub fn read(&self, from: u64, until: u64, max: usize, partition: u32) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        let start = self.position_for_offset(from);
        // Read about what the records asked for take, not a whole chunk: each record keeps
        // the buffer it was read into alive, so reading more than that held (and re-read)
        // the rest, twice the memory of the records when a reader asks for a few hundred.
        let past = self.position_past(from.saturating_add(max as u64).min(until));
        let mut cursor = FrameCursor::new(&self.file, &self.path, partition, start, self.size())
            .chunk(past.saturating_sub(start));
        while out.len() < max {
            match cursor.next()? {
                Step::Record(rec, _, _) => {
                    if rec.offset >= until {
                        break;
                    }
                    if rec.offset >= from {
                        out.push(rec);
                    }
                }
                Step::End => break,
                Step::Torn { pos, reason } => {
                    return Err(Error::Corrupt(format!(
                        "{} is corrupt at byte {pos}: {reason}",
                        self.path.display()
                    )));
                }
            }
        }
        Ok(out)
    }

    /// Offset of the first record with append time >= `ts` and offset < `until`.
    pub fn offset_for_time(&self, ts: i64, until: u64, partition: u32) -> Result<Option<u64>> {
        let start = self.position_for_time(ts);
        let mut cursor = FrameCursor::new(&self.file, &self.path, partition, start, self.size());
        loop {
            match cursor.next()? {
                Step::Record(rec, _, _) if rec.offset >= until => return Ok(None),
                Step::Record(rec, _, _) if rec.timestamp >= ts => return Ok(Some(rec.offset)),
                Step::Record(..) => {}
                Step::End | Step::Torn { .. } => return Ok(None),
            }
        }
    }

    /// Write the sparse index and the segment's stats next to the log file.
    pub fn write_index_file(&self, dir: &Path) -> Result<()> {
        let index = self.index.read().unwrap();
        let mut buf = Vec::with_capacity(index.len() * INDEX_ENTRY + INDEX_FOOTER);
        for e in index.iter() {
            buf.extend_from_slice(&((e.offset - self.base) as u32).to_le_bytes());
            buf.extend_from_slice(&(e.position as u32).to_le_bytes());
            buf.extend_from_slice(&e.timestamp.to_le_bytes());
        }
        buf.extend_from_slice(&self.next_offset().to_le_bytes());
        buf.extend_from_slice(&self.max_timestamp().to_le_bytes());
        buf.extend_from_slice(&self.size().to_le_bytes());
        buf.extend_from_slice(&(index.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        buf.extend_from_slice(INDEX_MAGIC);
        let path = index_path(dir, self.base);
        let tmp = path.with_extension("index.tmp");
        std::fs::write(&tmp, &buf).ctx("write index", &tmp)?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .ctx("sync index", &tmp)?;
        std::fs::rename(&tmp, &path).ctx("rename index", &path)?;
        Ok(())
    }

    /// Load the index file if it is whole and describes this log file; false if it must be
    /// rebuilt by scanning.
    pub fn load_index_file(&self, dir: &Path) -> Result<bool> {
        let path = index_path(dir, self.base);
        let Ok(buf) = std::fs::read(&path) else {
            return Ok(false);
        };
        let file_len = self.file.metadata().ctx("stat segment", &self.path)?.len();
        let Some(parsed) = parse_index_file(&buf, self.base) else {
            return Ok(false);
        };
        if parsed.size != file_len {
            return Ok(false);
        }
        *self.index.write().unwrap() = parsed.entries;
        self.advance(parsed.size, parsed.next_offset, parsed.max_timestamp);
        Ok(true)
    }
}

struct IndexFile {
    entries: Vec<IndexEntry>,
    next_offset: u64,
    max_timestamp: i64,
    size: u64,
}

fn parse_index_file(buf: &[u8], base: u64) -> Option<IndexFile> {
    if buf.len() < INDEX_FOOTER || &buf[buf.len() - 4..] != INDEX_MAGIC {
        return None;
    }
    let body_end = buf.len() - 8;
    let crc = u32::from_le_bytes(buf[body_end..body_end + 4].try_into().ok()?);
    if crc32c::crc32c(&buf[..body_end]) != crc {
        return None;
    }
    let f = &buf[buf.len() - INDEX_FOOTER..];
    let next_offset = u64::from_le_bytes(f[0..8].try_into().ok()?);
    let max_timestamp = i64::from_le_bytes(f[8..16].try_into().ok()?);
    let size = u64::from_le_bytes(f[16..24].try_into().ok()?);
    let count = u32::from_le_bytes(f[24..28].try_into().ok()?) as usize;
    if count * INDEX_ENTRY + INDEX_FOOTER != buf.len() {
        return None;
    }
    let entries = buf[..count * INDEX_ENTRY]
        .chunks_exact(INDEX_ENTRY)
        .map(|c| IndexEntry {
            offset: base + u64::from(u32::from_le_bytes(c[0..4].try_into().unwrap())),
            position: u64::from(u32::from_le_bytes(c[4..8].try_into().unwrap())),
            timestamp: i64::from_le_bytes(c[8..16].try_into().unwrap()),
        })
        .collect();
    Some(IndexFile {
        entries,
        next_offset,
        max_timestamp,
        size,
    })
}

/// One step of a [`FrameCursor`].
pub enum Step {
    /// A record, the file position of its frame, and the frame length.
    Record(Record, u64, usize),
    /// Clean end: no bytes left before the limit.
    End,
    /// Bytes remain but are not a valid frame.
    Torn { pos: u64, reason: String },
}

/// Reads frames from a file sequentially in large chunks; records share the chunk's memory.
pub struct FrameCursor<'f> {
    file: &'f File,
    path: &'f Path,
    partition: u32,
    /// File position of `buf[0]`.
    pos: u64,
    /// Do not read at or past this position.
    end: u64,
    buf: Bytes,
    /// Bytes read at a time (more when a frame is larger).
    chunk: usize,
}

impl<'f> FrameCursor<'f> {
    pub fn new(file: &'f File, path: &'f Path, partition: u32, pos: u64, end: u64) -> Self {
        FrameCursor {
            file,
            path,
            partition,
            pos,
            end,
            buf: Bytes::new(),
            chunk: CHUNK,
        }
    }

    /// Read about `bytes` at a time (at most [`CHUNK`], more when a frame is larger).
    pub fn chunk(mut self, bytes: u64) -> Self {
        self.chunk = bytes.clamp(FRAME_HEADER as u64, CHUNK as u64) as usize;
        self
    }

    pub fn pos(&self) -> u64 {
        self.pos
    }

    pub fn next(&mut self) -> Result<Step> {
        loop {
            match frame::parse(&self.buf, self.partition) {
                Parsed::Record(rec, len) => {
                    let at = self.pos;
                    self.buf.advance(len);
                    self.pos += len as u64;
                    return Ok(Step::Record(rec, at, len));
                }
                Parsed::Corrupt(reason) => {
                    return Ok(Step::Torn {
                        pos: self.pos,
                        reason,
                    });
                }
                Parsed::Incomplete { need } => {
                    let available = self.end.saturating_sub(self.pos);
                    if (self.buf.len() as u64) >= available {
                        // Nothing more to read: a clean end, or a frame cut short.
                        return Ok(if self.buf.is_empty() {
                            Step::End
                        } else {
                            Step::Torn {
                                pos: self.pos,
                                reason: format!(
                                    "frame needs {need} bytes but only {} remain",
                                    self.buf.len()
                                ),
                            }
                        });
                    }
                    let want = need.max(self.chunk).max(FRAME_HEADER) as u64;
                    self.buf = self.read_chunk(want.min(available))?;
                    if self.buf.is_empty() {
                        return Ok(Step::End);
                    }
                }
            }
        }
    }

    /// Read up to `len` bytes at `pos`; shorter if the file is shorter.
    fn read_chunk(&mut self, len: u64) -> Result<Bytes> {
        let len = len as usize;
        let mut out = match len > CHUNK / 2 && len <= CHUNK {
            true => Chunk::take(),
            false => Chunk(vec![0u8; len]),
        };
        let mut got = 0usize;
        while got < len {
            let n = self
                .file
                .read_at(&mut out.0[got..len], self.pos + got as u64)
                .ctx("read segment", self.path)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        if got < len {
            self.end = self.pos + got as u64;
        }
        Ok(Bytes::from_owner(out).slice(..got))
    }
}

/// A buffer chunks of segments are read into. Records are slices of it, so it lives until
/// the last record read from it is dropped, which is usually on another thread (a sink's
/// encoder, a delivery): freed there and allocated again here, every chunk came from fresh
/// pages, and a backfill spent a third of its CPU in page faults. Dropped, a full-sized one
/// goes back to [`POOL`] for the next read.
struct Chunk(Vec<u8>);

/// Full-sized chunks no record uses any more, at most [`POOL_CHUNKS`] of them.
static POOL: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
/// At most this many idle chunks are kept (32 MiB).
const POOL_CHUNKS: usize = 32;

impl Chunk {
    /// A full-sized chunk, from the pool when it has one (its bytes are overwritten by the
    /// read, and only what was read is ever seen).
    fn take() -> Chunk {
        let pooled = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
        Chunk(pooled.unwrap_or_else(|| vec![0u8; CHUNK]))
    }
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if self.0.len() == CHUNK {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < POOL_CHUNKS {
                pool.push(std::mem::take(&mut self.0));
            }
        }
    }
}
