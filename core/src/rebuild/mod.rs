//! Rebuilding the object index from the log: the log is the source of truth, so a fresh index
//! built from it must equal the live one.
//!
//! A rebuild starts from nothing, so it links history entries as it reads (it knows every
//! key's newest event) and the index only receives appends: history blocks in log order, and
//! at the end one sorted write of every key's head. Most events are only scanned up to their
//! `etag`; just the newest event of each key is fully decoded, once, at the end.
//!
//! Keys never cross partitions, so partitions are split between workers that scan in parallel,
//! and a partition's heads are final as soon as it is scanned; a separate task writes history
//! blocks and finished partitions' heads as they come, while the workers go on scanning.
//!
//! [`replay_heads`] is the same scan over the events after an index snapshot, keeping only the
//! newest head of each key it sees: merged over the snapshot's heads (a key it did not see keeps
//! the snapshot's), they equal the heads of a replay from the start. Its memory is bounded: a
//! worker hands its newest events over whenever they fill [`HEADS_BUDGET`], and they are kept
//! as sorted runs (`runs.rs`) that spill to files past their own budget. The runs hold the
//! events as framed in the log; only the one that wins the merge for a key is decoded, so a
//! key is decoded once however many runs it is in.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::codec::{EventCodec, object_event, wire};
use crate::event::{EventSummary, Head, HeadMap, ObjectEvent, log_key};
use crate::index::{HistoryBlocks, ObjectIndex};
use crate::log::{Log, OffsetRange, Position};
use crate::{Error, OBJECTS_TOPIC, Result};

mod runs;

pub use runs::{Merged, Row, Runs};

/// Records per read, and per batch of history blocks handed to the writer.
const CHUNK: usize = 100_000;
/// Bytes of newest events a worker of [`replay_heads`] holds before it hands them over.
const HEADS_BUDGET: usize = 16 << 20;

#[derive(Debug, Clone, Copy)]
pub struct RebuildStats {
    /// Records read from the log.
    pub records: u64,
    /// Records that could not be decoded (skipped, and reported).
    pub undecodable: u64,
    pub elapsed: Duration,
}

/// What workers hand to the index writer.
enum Write {
    /// History blocks of this many records.
    History(u64, Vec<(Position, Vec<u8>)>),
    /// The final heads of every key of a scanned partition.
    Heads(Vec<(String, (Head, Position))>),
    /// Heads only: the newest events of keys, as framed in the log (a newer one of the same
    /// key may come later).
    Newest(Vec<(String, (Bytes, Position))>),
}

/// What one worker found in its partitions.
struct Scanned {
    applied: BTreeMap<u32, u64>,
    records: u64,
    undecodable: u64,
}

/// Build a new index at `into` (which must not exist) from everything in the `objects` topic.
/// `progress(done, total)` is called as chunks are written.
pub async fn rebuild_index(
    log: Arc<dyn Log>,
    codec: Arc<EventCodec>,
    into: &Path,
    progress: impl FnMut(u64, u64),
) -> Result<RebuildStats> {
    rebuild_index_until(log, codec, into, None, progress).await
}

/// [`rebuild_index`] from the events appended at or before `until` (µs since the epoch, log
/// append time) only: the index as it was at that instant. The time index finds where each
/// partition's history stops, so nothing after it is read.
pub async fn rebuild_index_until(
    log: Arc<dyn Log>,
    codec: Arc<EventCodec>,
    into: &Path,
    until: Option<i64>,
    progress: impl FnMut(u64, u64),
) -> Result<RebuildStats> {
    let index = Arc::new(create_scratch(into)?);
    let ranges = log_ranges(log.as_ref(), until).await?;
    let replay = Replay {
        ranges,
        event_time_until: None,
    };
    replay_into(log, codec, index, replay, progress).await
}

/// A new scratch index at `into`, which must not exist.
pub fn create_scratch(into: &Path) -> Result<ObjectIndex> {
    if into.exists() {
        return Err(Error::BadInput(format!(
            "{} already exists; rebuild writes a new index",
            into.display()
        )));
    }
    ObjectIndex::create_scratch(into)
}

/// What a replay reads, and what it keeps of it.
#[derive(Debug, Clone)]
pub struct Replay {
    /// Per partition of `objects`: the offsets to read.
    pub ranges: Vec<(u32, OffsetRange)>,
    /// Keep only the events whose event time is at or before this (µs); the others are read
    /// and passed over.
    pub event_time_until: Option<i64>,
}

/// Per partition of `objects`, the offsets of the events appended at or before `until` (µs,
/// log append time; every event for `None`). An instant whose events were removed by
/// retention is refused: the state then is unknown.
pub async fn log_ranges(log: &dyn Log, until: Option<i64>) -> Result<Vec<(u32, OffsetRange)>> {
    let mut ranges = Vec::new();
    for p in 0..log.partitions(OBJECTS_TOPIC)? {
        let mut range = log.offsets(OBJECTS_TOPIC, p).await?;
        if let Some(t) = until {
            // The first record appended after `t` ends the history.
            let end = log
                .offset_for_time(OBJECTS_TOPIC, p, t.saturating_add(1))
                .await?;
            if range.start > 0 && end <= range.start {
                // Events up to `t` were removed by retention: the state then is unknown.
                return Err(Error::BadInput(format!(
                    "{} is before the oldest event the log still holds (partition {p} starts \
                     at offset {}); choose a later instant",
                    crate::time::format_us(t),
                    range.start
                )));
            }
            range.end = range.end.min(end.max(range.start));
        }
        ranges.push((p, range));
    }
    Ok(ranges)
}

/// Apply the events of `replay` to `index`, a new scratch index: every key's head and history
/// from the ranges' starts (the log start, for the whole story).
pub async fn replay_into(
    log: Arc<dyn Log>,
    codec: Arc<EventCodec>,
    index: Arc<ObjectIndex>,
    replay: Replay,
    mut progress: impl FnMut(u64, u64),
) -> Result<RebuildStats> {
    let started = Instant::now();
    let total = total_of(&replay.ranges);
    let (scans, mut rx) = spawn_scans(log, codec, replay, true);
    // Written in the order they arrive; each partition's history blocks come in order.
    let mut done = 0u64;
    while let Some(write) = rx.recv().await {
        let index = index.clone();
        match write {
            Write::History(records, blocks) => {
                crate::blocking::blocking(move || index.append_history(blocks)).await?;
                done += records;
                progress(done, total);
            }
            Write::Heads(heads) => {
                crate::blocking::blocking(move || index.put_heads(heads, &BTreeMap::new())).await?
            }
            Write::Newest(_) => {
                return Err(Error::Unavailable(
                    "a rebuild was handed undecoded heads".into(),
                ));
            }
        }
    }
    let scanned = join_scans(scans).await?;
    // Last, and durably: the offsets that say the index is complete up to them.
    let applied = scanned.applied;
    crate::blocking::blocking(move || index.put_heads(Vec::new(), &applied)).await?;
    progress(scanned.records, total);
    Ok(RebuildStats {
        records: scanned.records,
        undecodable: scanned.undecodable,
        elapsed: started.elapsed(),
    })
}

/// The heads a replay leaves behind for the keys it sees.
pub struct ReplayedHeads {
    /// (`bucket/key`, position and framed event): [`ReplayedHeads::rows`] decodes the newest.
    runs: Runs,
    codec: Arc<EventCodec>,
    /// Next offset per partition read.
    pub applied: BTreeMap<u32, u64>,
    pub stats: RebuildStats,
}

/// Read the events of `replay` and return the newest head of each key seen, without writing
/// anything or keeping history: what the events after an index snapshot change in it (from
/// the log start: every head). Sorted, the rows merge with the snapshot's in one pass.
pub async fn replay_heads(
    log: Arc<dyn Log>,
    codec: Arc<EventCodec>,
    replay: Replay,
    mut progress: impl FnMut(u64, u64),
) -> Result<ReplayedHeads> {
    let started = Instant::now();
    let total = total_of(&replay.ranges);
    let (scans, mut rx) = spawn_scans(log, codec.clone(), replay, false);
    let mut runs = Runs::new();
    let mut done = 0u64;
    while let Some(write) = rx.recv().await {
        match write {
            Write::History(records, _) => {
                done += records;
                progress(done, total);
            }
            Write::Newest(newest) => {
                runs = crate::blocking::blocking(move || {
                    let rows = newest
                        .into_iter()
                        .map(|(key, (framed, at))| (key, pack(at, &framed)))
                        .collect::<Vec<_>>();
                    runs.push(rows)?;
                    Ok(runs)
                })
                .await?;
            }
            Write::Heads(_) => {
                return Err(Error::Unavailable(
                    "a heads-only replay was handed decoded heads".into(),
                ));
            }
        }
    }
    let scanned = join_scans(scans).await?;
    progress(scanned.records, total);
    Ok(ReplayedHeads {
        runs,
        codec,
        applied: scanned.applied,
        stats: RebuildStats {
            records: scanned.records,
            undecodable: scanned.undecodable,
            elapsed: started.elapsed(),
        },
    })
}

impl ReplayedHeads {
    /// Each key's head as an index row, in key order (once: later calls give nothing).
    pub fn rows(&mut self) -> Result<impl Iterator<Item = Result<Row>> + Send + use<>> {
        let codec = self.codec.clone();
        let merged = std::mem::take(&mut self.runs).merged()?;
        Ok(merged.map(move |row| {
            let (key, packed) = row?;
            let (at, framed) = unpack(&packed)?;
            let head = codec.decode_for_index(framed)?.into_head();
            Ok((key, crate::index::head_row(&head, at)))
        }))
    }
}

/// A newest event in a run: its position, then the event as framed in the log.
fn pack(at: Position, framed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + framed.len());
    out.extend_from_slice(&at.partition.to_le_bytes());
    out.extend_from_slice(&at.offset.to_le_bytes());
    out.extend_from_slice(framed);
    out
}

fn unpack(packed: &[u8]) -> Result<(Position, &[u8])> {
    if packed.len() < 12 {
        return Err(Error::Corrupt("a head run holds a truncated row".into()));
    }
    let partition = u32::from_le_bytes(packed[..4].try_into().expect("4 bytes"));
    let offset = u64::from_le_bytes(packed[4..12].try_into().expect("8 bytes"));
    Ok((Position { partition, offset }, &packed[12..]))
}

fn total_of(ranges: &[(u32, OffsetRange)]) -> u64 {
    ranges.iter().map(|(_, r)| r.end - r.start).sum()
}

/// Start the workers that scan `replay`'s ranges (partitions dealt round-robin); what they
/// find comes on the returned channel.
fn spawn_scans(
    log: Arc<dyn Log>,
    codec: Arc<EventCodec>,
    replay: Replay,
    history: bool,
) -> (tokio::task::JoinSet<Result<Scanned>>, mpsc::Receiver<Write>) {
    let Replay {
        ranges,
        event_time_until,
    } = replay;
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(ranges.len())
        .max(1);
    let (tx, rx) = mpsc::channel::<Write>(workers * 2);
    let mut scans = tokio::task::JoinSet::new();
    for w in 0..workers {
        let mine: Vec<_> = ranges.iter().copied().skip(w).step_by(workers).collect();
        let (log, codec, tx) = (log.clone(), codec.clone(), tx.clone());
        let keep = Keep {
            event_time_until,
            history,
        };
        scans.spawn(async move { scan(log.as_ref(), &codec, mine, keep, &tx).await });
    }
    (scans, rx)
}

/// Wait for every worker; what they found, together.
async fn join_scans(mut scans: tokio::task::JoinSet<Result<Scanned>>) -> Result<Scanned> {
    let mut all = Scanned {
        applied: BTreeMap::new(),
        records: 0,
        undecodable: 0,
    };
    while let Some(scanned) = scans.join_next().await {
        let s =
            scanned.map_err(|e| Error::Unavailable(format!("rebuild worker stopped: {e}")))??;
        all.applied.extend(s.applied);
        all.records += s.records;
        all.undecodable += s.undecodable;
    }
    Ok(all)
}

/// Which of the events read a worker applies, and whether it writes their history.
#[derive(Clone, Copy)]
struct Keep {
    event_time_until: Option<i64>,
    history: bool,
}

/// Scan `ranges` chunk by chunk, sending history blocks to the writer.
async fn scan(
    log: &dyn Log,
    codec: &EventCodec,
    ranges: Vec<(u32, OffsetRange)>,
    keep: Keep,
    tx: &mpsc::Sender<Write>,
) -> Result<Scanned> {
    // Each key's newest event, as framed in the log (copied out of the read chunk, so the
    // chunk is not kept alive by one head), and where it is.
    let mut applied = BTreeMap::new();
    let (mut records_total, mut undecodable) = (0u64, 0u64);
    let mut key = String::new();
    for (p, range) in ranges {
        let mut newest: HeadMap<(Bytes, Position)> = HeadMap::default();
        // Bytes `newest` holds (heads only: the history needs every key's previous offset).
        let mut held = 0usize;
        let mut next = range.start;
        while next < range.end {
            // Heads only: smaller reads, as memory is what such a replay is bounded by.
            let chunk = if keep.history { CHUNK } else { CHUNK / 4 };
            let max = chunk.min((range.end - next) as usize);
            let records = log
                .read(OBJECTS_TOPIC, p, next, max, Duration::ZERO)
                .await?;
            let Some(last) = records.last() else { break };
            next = last.offset + 1;
            applied.insert(p, next);
            let mut blocks = HistoryBlocks::default();
            for rec in &records {
                let decoded: ObjectEvent;
                let summary = match summarize(codec, &rec.value) {
                    Ok(Summary::Scanned(s)) => s,
                    Ok(Summary::Decoded(e)) => {
                        decoded = *e;
                        decoded.summary()
                    }
                    Err(e) => {
                        undecodable += 1;
                        tracing::error!(
                            partition = p,
                            offset = rec.offset,
                            "skipping undecodable record: {e}"
                        );
                        continue;
                    }
                };
                if !summary.event_type.mutates_object()
                    || keep
                        .event_time_until
                        .is_some_and(|t| summary.event_time > t)
                {
                    continue;
                }
                let at = Position {
                    partition: p,
                    offset: rec.offset,
                };
                key.clear();
                key.push_str(summary.bucket);
                key.push('/');
                key.push_str(summary.key);
                let raw = Bytes::copy_from_slice(&rec.value);
                // What the map holds: a newer event of a key replaces the older one.
                let prev = match newest.get_mut(key.as_str()) {
                    Some(slot) => {
                        held = held + raw.len() - slot.0.len();
                        Some(std::mem::replace(slot, (raw, at)).1.offset)
                    }
                    None => {
                        held += raw.len() + key.len() + 64;
                        newest.insert(log_key(summary.bucket, summary.key), (raw, at));
                        None
                    }
                };
                if keep.history {
                    blocks.push(at, prev, &summary);
                }
            }
            records_total += records.len() as u64;
            send(tx, Write::History(records.len() as u64, blocks.finish())).await?;
            if !keep.history && held > HEADS_BUDGET {
                // Heads only: hand these over now; a newer head of the same key comes later.
                let newest = std::mem::take(&mut newest).into_iter().collect();
                send(tx, Write::Newest(newest)).await?;
                held = 0;
            }
        }
        // This partition's heads are final: write them while the next partition is scanned.
        let last = if keep.history {
            Write::Heads(decode_heads(codec, newest)?)
        } else {
            Write::Newest(newest.into_iter().collect())
        };
        send(tx, last).await?;
    }
    Ok(Scanned {
        applied,
        records: records_total,
        undecodable,
    })
}

/// Each key's newest event, decoded into its head.
fn decode_heads(
    codec: &EventCodec,
    newest: HeadMap<(Bytes, Position)>,
) -> Result<Vec<(String, (Head, Position))>> {
    newest
        .into_iter()
        .map(|(key, (raw, at))| Ok((key, (codec.decode_for_index(&raw)?.into_head(), at))))
        .collect()
}

async fn send(tx: &mpsc::Sender<Write>, write: Write) -> Result<()> {
    tx.send(write)
        .await
        .map_err(|_| Error::Unavailable("rebuild writer stopped".into()))
}

enum Summary<'a> {
    /// Written with the current schema: scanned in place.
    Scanned(EventSummary<'a>),
    /// Written with another schema version: decoded with resolution.
    Decoded(Box<ObjectEvent>),
}

fn summarize<'a>(codec: &EventCodec, framed: &'a [u8]) -> Result<Summary<'a>> {
    let (id, payload) = wire::split(framed)?;
    if id == codec.write_id() {
        let scanned = object_event::scan_summary(payload)?;
        // A removal of one version says which at the end of the record.
        if !scanned.needs_full_decode() {
            return Ok(Summary::Scanned(scanned));
        }
    }
    Ok(Summary::Decoded(Box::new(codec.decode_for_index(framed)?)))
}
