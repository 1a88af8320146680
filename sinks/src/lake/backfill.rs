//! Backfilling a range of a partition into the lake (a replay of a lake subscription), so a
//! damaged lake partition can be rebuilt from the log.
//!
//! The lake's file names say which segments exist (`objects-p{P}-{start}-{end}`). The range
//! is widened to the segments it cuts into; each known segment is produced again up to exactly
//! its end (writing only its missing files, as after a crash), and the stretches between known
//! segments are produced with the subscription's roll settings, closed where the next known
//! segment starts. A range that starts where no file is known is read from the last known
//! segment end before it (or the subscription's start), segments before the range are only
//! counted, not written: with roll decisions that depend on the data alone (`idle_ms` 0, the
//! default) that reproduces the live worker's boundaries, so the files get the names they had.
//! A second backfill of the same range finds every segment and writes nothing.
//!
//! The range never goes past the subscription's committed position: what the live worker has
//! not committed it writes itself, and its segments must keep their boundaries.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tidemark_core::OBJECTS_TOPIC;
use tokio::sync::{mpsc, watch};

use super::writer::{self, Closed, Writer};
use super::{Lake, failed};
use crate::delivery::RunCtxRef;

/// Backfill `range` (end exclusive) of `partition`; progress shows in the run's live
/// position. Ends early, without error, when `stop` turns true.
pub(crate) async fn backfill(
    ctx: &RunCtxRef,
    lake: &Arc<Lake>,
    partition: u32,
    range: Range<u64>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let committed = ctx
        .log
        .committed(&ctx.consumer, OBJECTS_TOPIC, partition)
        .await
        .map_err(|e| format!("reading the lake's position: {e}"))?
        .or_else(|| ctx.start_offsets.get(&partition).copied())
        .unwrap_or(0);
    let end = range.end.min(committed);
    let live = ctx.stats.live_position(partition);
    live.store(range.start, Ordering::Relaxed);
    if range.start >= end {
        live.store(range.end, Ordering::Relaxed);
        return Ok(());
    }
    let lake2 = lake.clone();
    let mut known: Vec<(u64, u64)> = tokio::task::spawn_blocking(move || lake2.files.names())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("listing the lake: {e}"))?
        .iter()
        .filter_map(|n| writer::parse_file_name(partition, n))
        .collect();
    known.sort_unstable();
    known.dedup();
    let containing = |o: u64| known.iter().find(|(s, e)| *s <= o && o <= *e).copied();
    let first_held = ctx
        .log
        .offsets(OBJECTS_TOPIC, partition)
        .await
        .map_err(|e| format!("reading the log's offsets: {e}"))?
        .start;
    let from = match containing(range.start) {
        Some((s, _)) => s,
        // Where the live worker's segment boundaries can be followed from.
        None => known
            .iter()
            .filter(|(_, e)| *e < range.start)
            .map(|(_, e)| e + 1)
            .max()
            .or_else(|| ctx.start_offsets.get(&partition).copied())
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
        if !produce(ctx, lake, partition, stretch, &write, forced, &mut stop).await? {
            return Ok(());
        }
        at = stretch_end;
        live.store(at.max(range.start), Ordering::Relaxed);
    }
    live.store(range.end, Ordering::Relaxed);
    Ok(())
}

/// Produce the segments of `stretch`, writing those that overlap `write`; false when
/// stopped first.
async fn produce(
    ctx: &RunCtxRef,
    lake: &Arc<Lake>,
    partition: u32,
    stretch: Range<u64>,
    write: &Range<u64>,
    forced: Option<u64>,
    stop: &mut watch::Receiver<bool>,
) -> Result<bool, String> {
    let (tx, mut rx) = mpsc::channel(4);
    let reader = tokio::spawn(crate::delivery::read(
        ctx.clone(),
        partition,
        stretch.start,
        Some(stretch.end),
        tx,
    ));
    let mut w = Writer::new(lake.clone(), stretch.start, forced);
    loop {
        tokio::select! {
            chunk = rx.recv() => {
                let Some(mut chunk) = chunk else { break };
                crate::delivery::dead_letter_failures(ctx, partition, &mut chunk).await;
                for d in &chunk.deliveries {
                    if let Some(closed) = w.push(d.offset, &d.event, partition) {
                        write_segment(ctx, lake, partition, closed, write).await?;
                    }
                }
                if let (Some(closed), _) = w.advance(chunk.next) {
                    write_segment(ctx, lake, partition, closed, write).await?;
                }
            }
            _ = stop.changed() => {
                reader.abort();
                return Ok(false);
            }
        }
    }
    // The stretch ends where the next known segment starts: what is buffered closes here.
    if let Some(closed) = w.close_idle(stretch.end) {
        write_segment(ctx, lake, partition, closed, write).await?;
    }
    Ok(true)
}

/// Write `closed` if it overlaps `write` (others are only followed for their boundaries).
async fn write_segment(
    ctx: &RunCtxRef,
    lake: &Arc<Lake>,
    partition: u32,
    closed: Closed,
    write: &Range<u64>,
) -> Result<(), String> {
    if closed.end < write.start || closed.start >= write.end {
        return Ok(());
    }
    let rows = closed.rows() as u64;
    let lake2 = lake.clone();
    let files = tokio::task::spawn_blocking(move || writer::write(&lake2, partition, closed))
        .await
        .unwrap_or_else(|e| Err(format!("the writer thread failed: {e}")))
        .map_err(|e| {
            let message = format!("backfilling the lake: {e}");
            failed(ctx, partition, message.clone());
            message
        })?;
    ctx.stats.lake_written(files as u64, rows);
    Ok(())
}
