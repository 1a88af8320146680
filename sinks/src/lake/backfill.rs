//! Backfilling a range of a partition into the lake (a replay of a lake subscription), so a
//! damaged lake partition can be rebuilt from the log.
//!
//! The lake's file names say which segments exist (`objects-p{P}-{start}-{end}`). The range
//! is widened to the segments it cuts into; each known segment is produced again up to exactly
//! its end (writing only its missing files, as after a crash), and the stretches between known
//! segments are produced with the subscription's roll settings, closed where the next known
//! segment starts. A range that starts where no file is known is read from the last known
//! segment end before it (or the subscription's start), segments before the range are only
//! counted, not written: with roll decisions that depend on the data alone (`idle_ms` 0) that
//! reproduces the live worker's boundaries, so the files get the names they had. With idle
//! closing (the default) a lost segment the live worker closed for idleness is produced again
//! with the same offsets, exactly once (a stretch ends where the next known segment starts),
//! but possibly cut into files at other boundaries. A second backfill of the same range finds
//! every segment and writes nothing.
//!
//! The range never goes past the subscription's committed position: what the live worker has
//! not committed it writes itself, and its segments must keep their boundaries.

use std::ops::Range;
use std::sync::Arc;

use super::Lake;
use super::stream::write_segment;
use super::writer::{self, Closed, Writer};
use crate::sink::Feed;
use crate::{Error, Result};

/// Backfill `range` (end exclusive) of the feed's partition; progress shows in the feed's
/// position. Ends early, without error, when the feed is stopped.
pub(super) async fn backfill(lake: Arc<Lake>, feed: &mut Feed, range: Range<u64>) -> Result<()> {
    let partition = feed.partition();
    let committed = feed
        .position()
        .await
        .map_err(|e| e.context("reading the lake's position"))?
        .unwrap_or(0);
    let end = range.end.min(committed);
    feed.show_position(range.start);
    if range.start >= end {
        feed.show_position(range.end);
        return Ok(());
    }
    let lake2 = lake.clone();
    let mut known: Vec<(u64, u64)> = tokio::task::spawn_blocking(move || lake2.files.names())
        .await
        .map_err(|e| Error::Transient(e.to_string()))?
        .map_err(|e| e.context("listing the lake"))?
        .iter()
        .filter_map(|n| writer::parse_file_name(partition, n))
        .collect();
    known.sort_unstable();
    known.dedup();
    let containing = |o: u64| known.iter().find(|(s, e)| *s <= o && o <= *e).copied();
    let first_held = feed
        .log_start()
        .await
        .map_err(|e| e.context("reading the log's offsets"))?;
    let from = match containing(range.start) {
        Some((s, _)) => s,
        // Where the live worker's segment boundaries can be followed from.
        None => known
            .iter()
            .filter(|(_, e)| *e < range.start)
            .map(|(_, e)| e + 1)
            .max()
            .or_else(|| feed.subscription_start())
            .unwrap_or(0)
            .max(first_held),
    };
    // Past the range to where its last segment ends: a known one, else where the live
    // worker's boundaries say (the next known segment, or the committed position).
    let to = match containing(end - 1) {
        Some((_, e)) => e + 1,
        None => known
            .iter()
            .map(|(s, _)| *s)
            .find(|s| *s >= end)
            .unwrap_or(committed),
    };
    let mut at = from;
    while at < to {
        let (stretch_end, forced) = match known.iter().find(|(s, _)| *s == at) {
            Some((_, e)) => (e + 1, Some(*e)),
            None => {
                let next_known = known.iter().map(|(s, _)| *s).find(|s| *s > at);
                (next_known.unwrap_or(to).min(to), None)
            }
        };
        let stretch = at..stretch_end;
        let write = range.start..end;
        if !produce(&lake, feed, stretch, &write, forced).await? {
            return Ok(());
        }
        at = stretch_end;
        feed.show_position(at.max(range.start));
    }
    feed.show_position(range.end);
    Ok(())
}

/// Produce the segments of `stretch`, writing those that overlap `write`; false when
/// stopped first.
async fn produce(
    lake: &Arc<Lake>,
    feed: &mut Feed,
    stretch: Range<u64>,
    write: &Range<u64>,
    forced: Option<u64>,
) -> Result<bool> {
    let partition = feed.partition();
    feed.read(stretch.start, Some(stretch.end));
    let mut w = Writer::new(lake.clone(), stretch.start, forced);
    while let Some(batch) = feed.next().await {
        for d in &batch.deliveries {
            let closed = match d.view() {
                Ok(view) => w.push(d.offset, &view, partition),
                Err(e) => {
                    feed.dead_letter(d, &e).await;
                    None
                }
            };
            if let Some(closed) = closed {
                write_overlapping(lake, feed, closed, write).await?;
            }
        }
        if let (Some(closed), _) = w.advance(batch.next) {
            write_overlapping(lake, feed, closed, write).await?;
        }
    }
    if feed.is_stopped() {
        return Ok(false);
    }
    // The stretch ends where the next known segment starts: what is buffered closes here.
    if let Some(closed) = w.close_idle(stretch.end) {
        write_overlapping(lake, feed, closed, write).await?;
    }
    Ok(true)
}

/// Write `closed` if it overlaps `write` (others are only followed for their boundaries).
async fn write_overlapping(
    lake: &Arc<Lake>,
    feed: &Feed,
    closed: Closed,
    write: &Range<u64>,
) -> Result<()> {
    if closed.end < write.start || closed.start >= write.end {
        return Ok(());
    }
    write_segment(lake, feed, closed)
        .await
        .map_err(|e| e.context("backfilling the lake"))
}
