//! Segments: how one log partition's events become committed Parquet files, exactly once.
//!
//! A segment is a range of log offsets `[start, end]` of one partition. Its events are
//! grouped by partition directory (the template) and written as one file per directory,
//! all named `objects-p{partition}-{start}-{end}.parquet`. When every file of a segment is
//! committed, the subscription's position moves to `end + 1`; never before.
//!
//! A segment closes before an event that would take it past `max_rows`, `max_bytes` or
//! `max_age_ms` of event time (decisions from the data alone), or when the stream has been
//! idle for `idle_ms`. A crash between committing files and the position leaves files named
//! for the interrupted segment; on restart they are found (`first offset == position`) and
//! the segment is produced again up to exactly their `end`, which writes only the files that
//! are missing. So whichever way a segment was closed, the same offsets always end up in the
//! same files: no event is written twice or lost.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tidemark_core::codec::view::EventView;

use super::Lake;
use super::segment_file::{ENCODERS_PER_SEGMENT, SegmentFile};
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RollSpec {
    /// Rows in a segment (across its directories).
    pub max_rows: usize,
    /// Estimated bytes of a segment's rows.
    pub max_bytes: usize,
    /// Event time from a segment's first event to the event that closes it.
    pub max_age_ms: u64,
    /// Close an open segment after this long without new events (wall clock; 0: never, so
    /// the files a lake holds depend on the log alone). Safe for exactly-once (see above).
    /// On by default so a quiet stream's events land within [`DEFAULT_IDLE_MS`].
    pub idle_ms: u64,
}

/// A quiet stream's open segment is written this long after its last event.
pub const DEFAULT_IDLE_MS: u64 = 30_000;

impl Default for RollSpec {
    fn default() -> Self {
        RollSpec {
            max_rows: 250_000,
            max_bytes: 128 << 20,
            max_age_ms: 3_600_000,
            idle_ms: DEFAULT_IDLE_MS,
        }
    }
}

/// The largest `max_rows`: an open segment holds its rows (encoded, or as columns when the
/// encoder is behind) until it closes, so the roll limits are what bound a lake
/// subscription's memory.
pub const MAX_ROWS: usize = 10_000_000;
/// The largest `max_bytes` (estimated uncompressed bytes of an open segment's rows).
pub const MAX_BYTES: usize = 1 << 30;

impl RollSpec {
    /// Each limit is positive, rows and bytes at most their maxima; errors name the field.
    pub fn check(&self) -> Result<()> {
        let capped = [
            ("sink.roll.max_rows", self.max_rows, MAX_ROWS),
            ("sink.roll.max_bytes", self.max_bytes, MAX_BYTES),
        ];
        for (field, value, max) in capped {
            if !(1..=max).contains(&value) {
                return Err(Error::invalid(
                    field,
                    format!("{value} is out of range 1..={max}"),
                ));
            }
        }
        // Event time alone holds nothing in memory (the rows and bytes limits still apply),
        // so it has no maximum.
        if self.max_age_ms == 0 {
            return Err(Error::invalid("sink.roll.max_age_ms", "must be positive"));
        }
        Ok(())
    }
}

/// A closed segment, ready to write.
pub struct Closed {
    pub start: u64,
    pub end: u64,
    pub dirs: BTreeMap<String, SegmentFile>,
}

impl Closed {
    pub fn rows(&self) -> usize {
        self.dirs.values().map(SegmentFile::len).sum()
    }
}

pub fn file_name(partition: u32, start: u64, end: u64) -> String {
    format!("objects-p{partition}-{start:012}-{end:012}.parquet")
}

/// `(start, end)` from a file name of `partition`, if it is one.
pub fn parse_file_name(partition: u32, name: &str) -> Option<(u64, u64)> {
    let rest = name
        .strip_prefix(&format!("objects-p{partition}-"))?
        .strip_suffix(".parquet")?;
    let (start, end) = rest.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?))
}

pub struct Writer {
    lake: Arc<Lake>,
    /// First offset of the open segment (the position to commit when it closes empty).
    start: u64,
    dirs: BTreeMap<String, SegmentFile>,
    rows: usize,
    bytes: usize,
    first_time: Option<i64>,
    /// A segment found half-committed at start: it must end exactly here.
    forced_end: Option<u64>,
    /// The directory of the event being pushed, rendered here without allocating.
    dir: String,
    /// Encoder threads the open segment's files may still start.
    spare_encoders: usize,
}

impl Writer {
    pub fn new(lake: Arc<Lake>, start: u64, forced_end: Option<u64>) -> Writer {
        Writer {
            lake,
            start,
            dirs: BTreeMap::new(),
            rows: 0,
            bytes: 0,
            first_time: None,
            forced_end,
            dir: String::new(),
            spare_encoders: ENCODERS_PER_SEGMENT,
        }
    }

    pub fn start(&self) -> u64 {
        self.start
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    fn full_before(&self, e: &EventView<'_>) -> bool {
        let roll = &self.lake.roll;
        self.rows > 0
            && (self.rows >= roll.max_rows
                || self.bytes >= roll.max_bytes
                || self.first_time.is_some_and(|t| {
                    e.event_time.saturating_sub(t) >= (roll.max_age_ms as i64).saturating_mul(1000)
                }))
    }

    /// Close the open segment at `end` (inclusive); the next starts after it.
    fn close(&mut self, end: u64) -> Closed {
        let closed = Closed {
            start: self.start,
            end,
            dirs: std::mem::take(&mut self.dirs),
        };
        self.start = end + 1;
        self.rows = 0;
        self.bytes = 0;
        self.first_time = None;
        self.forced_end = None;
        self.spare_encoders = ENCODERS_PER_SEGMENT;
        closed
    }

    /// Add the event at `offset`; returns the segment it closed first, if any.
    pub fn push(&mut self, offset: u64, e: &EventView<'_>, partition: u32) -> Option<Closed> {
        let closed = match self.forced_end {
            Some(end) if offset > end => Some(self.close(end)),
            Some(_) => None,
            None if self.full_before(e) => Some(self.close(offset - 1)),
            None => None,
        };
        self.dir.clear();
        self.lake.template.render_into(e, &mut self.dir);
        if !self.dirs.contains_key(&self.dir) {
            self.dirs.insert(self.dir.clone(), SegmentFile::new());
        }
        let file = self.dirs.get_mut(&self.dir).expect("inserted above");
        let before = file.approx_bytes();
        file.push_view(
            &self.lake.options,
            e,
            partition,
            offset,
            &mut self.spare_encoders,
        );
        self.bytes += file.approx_bytes() - before;
        self.rows += 1;
        self.first_time.get_or_insert(e.event_time);
        closed
    }

    /// The reader has gone through `next - 1`. Returns a segment to write when a forced end
    /// was reached, and the position that may be committed now when nothing is buffered.
    pub fn advance(&mut self, next: u64) -> (Option<Closed>, Option<u64>) {
        if let Some(end) = self.forced_end
            && next > end
        {
            return (Some(self.close(end)), None);
        }
        if self.rows == 0 && self.forced_end.is_none() {
            self.start = next;
            return (None, Some(next));
        }
        (None, None)
    }

    /// Close the open segment at `next - 1` (the stream was idle).
    pub fn close_idle(&mut self, next: u64) -> Option<Closed> {
        (self.rows > 0 && self.forced_end.is_none()).then(|| self.close(next - 1))
    }
}

/// Encode and commit every file of `closed`; returns how many files were written now
/// (files committed by an earlier, interrupted run are left as they are).
pub fn write(lake: &Lake, partition: u32, closed: Closed) -> Result<usize> {
    let name = file_name(partition, closed.start, closed.end);
    let mut written = 0;
    for (dir, file) in closed.dirs {
        // Committed by the interrupted run: not written again (what its encoder did is
        // dropped).
        if lake.files.exists(&dir, &name)? {
            continue;
        }
        let bytes = file.finish(&lake.options)?;
        lake.files.put(&dir, &name, &bytes)?;
        written += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::ParquetSpec;
    use crate::lake::columns::Rows;
    use crate::lake::encode::encode;
    use tidemark_core::event::ObjectEvent;

    fn lake(dir: &std::path::Path, roll: RollSpec) -> Arc<Lake> {
        let spec = ParquetSpec {
            path: dir.to_string_lossy().into_owned(),
            s3: None,
            partition: "bucket={bucket}".into(),
            roll,
            parquet: Default::default(),
        };
        Arc::new(Lake::open(&spec, None).unwrap())
    }

    fn event(bucket: &str, time_s: i64) -> ObjectEvent {
        let mut e = tidemark_core::event::sample_event(1);
        e.bucket = bucket.into();
        e.event_time = time_s * 1_000_000;
        e
    }

    #[test]
    fn segments_close_on_rows_and_event_time_and_are_named_by_their_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let roll = RollSpec {
            max_rows: 3,
            max_age_ms: 10_000,
            ..RollSpec::default()
        };
        let mut w = Writer::new(lake(dir.path(), roll), 100, None);
        assert!(w.push(100, &EventView::of(&event("a", 0)), 0).is_none());
        assert!(w.push(102, &EventView::of(&event("b", 1)), 0).is_none());
        assert!(w.push(103, &EventView::of(&event("a", 2)), 0).is_none());
        // The fourth row closes [100, 103] first.
        let closed = w.push(105, &EventView::of(&event("a", 3)), 0).unwrap();
        assert_eq!((closed.start, closed.end, closed.rows()), (100, 104, 3));
        assert_eq!(
            closed.dirs.keys().collect::<Vec<_>>(),
            ["bucket=a", "bucket=b"]
        );
        // Ten seconds of event time later, the next closes too.
        let closed = w.push(106, &EventView::of(&event("a", 13)), 0).unwrap();
        assert_eq!((closed.start, closed.end, closed.rows()), (105, 105, 1));
        assert_eq!(w.start(), 106);
        // Idle: the open segment closes where the reader is.
        let closed = w.close_idle(110).unwrap();
        assert_eq!((closed.start, closed.end), (106, 109));
        // Nothing buffered: the position may move on by itself.
        assert_eq!(w.advance(120).1, Some(120));
        assert_eq!(
            file_name(3, 120, 4095),
            "objects-p3-000000000120-000000004095.parquet"
        );
        assert_eq!(
            parse_file_name(3, "objects-p3-000000000120-000000004095.parquet"),
            Some((120, 4095))
        );
        assert_eq!(
            parse_file_name(2, "objects-p3-000000000120-000000004095.parquet"),
            None
        );
    }

    /// However many of a segment's directories fill a chunk, at most
    /// `ENCODERS_PER_SEGMENT` start an encoder thread; the others are encoded at the close,
    /// and every file holds its directory's rows. The next segment may start as many again.
    #[test]
    fn a_segment_starts_a_bounded_number_of_encoder_threads() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = ParquetSpec {
            path: dir.path().to_string_lossy().into_owned(),
            s3: None,
            partition: "bucket={bucket}".into(),
            roll: RollSpec::default(),
            parquet: Default::default(),
        };
        // Row groups of 500 rows: a chunk is 500 rows (it never spans two groups).
        spec.parquet.row_group_rows = 500;
        let l = Arc::new(Lake::open(&spec, None).unwrap());
        let buckets = ENCODERS_PER_SEGMENT + 3;
        let mut w = Writer::new(l.clone(), 0, None);
        let mut offset = 0;
        for segment in 0..2 {
            for i in 0..buckets * 1200 {
                let e = event(&format!("b{}", i % buckets), 0);
                assert!(w.push(offset, &EventView::of(&e), 0).is_none());
                offset += 1;
            }
            let closed = w.close_idle(offset).unwrap();
            let streaming = closed.dirs.values().filter(|f| f.has_encoder()).count();
            assert_eq!(streaming, ENCODERS_PER_SEGMENT, "segment {segment}");
            let name = file_name(0, closed.start, closed.end);
            assert_eq!(write(&l, 0, closed).unwrap(), buckets);
            for b in 0..buckets {
                let bytes = std::fs::read(dir.path().join(format!("bucket=b{b}")).join(&name));
                let reader =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                        bytes::Bytes::from(bytes.unwrap()),
                    )
                    .unwrap();
                assert_eq!(reader.metadata().file_metadata().num_rows(), 1200, "b{b}");
            }
        }
    }

    #[test]
    fn an_interrupted_segment_is_produced_again_up_to_its_end_and_only_missing_files_written() {
        let dir = tempfile::tempdir().unwrap();
        let l = lake(dir.path(), RollSpec::default());
        // A first run closed [0, 9] when idle, committed bucket=a's file and crashed before
        // bucket=b's.
        let name = file_name(1, 0, 9);
        let mut a = Rows::new();
        a.push(&event("a", 0), 1, 0);
        let bytes = encode(&a.finish(), &l.options).unwrap();
        l.files.put("bucket=a", &name, &bytes).unwrap();
        assert_eq!(
            super::super::stream::interrupted(&l, 1, 0).unwrap(),
            Some(9)
        );
        // The restart forces the segment to end at 9, though more events follow.
        let mut w = Writer::new(l.clone(), 0, Some(9));
        w.push(0, &EventView::of(&event("a", 0)), 1);
        w.push(4, &EventView::of(&event("b", 0)), 1);
        let closed = w.push(12, &EventView::of(&event("a", 1)), 1).unwrap();
        assert_eq!((closed.start, closed.end), (0, 9));
        assert_eq!(
            write(&l, 1, closed).unwrap(),
            1,
            "only bucket=b's file was missing"
        );
        assert!(dir.path().join("bucket=b").join(&name).exists());
    }
}
