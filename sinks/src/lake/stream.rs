//! The lake as a stream sink: one log partition's feed goes into the segment writer; each
//! closed segment is written, and only then is the subscription's position committed to its
//! end. Events buffered in an open segment when the worker stops are not lost: the position
//! is still before them, and the next worker reads them again.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use super::Lake;
use super::writer::{self, Closed, Writer};
use crate::sink::{Feed, StreamSink};
use crate::{Error, Result};

impl StreamSink for Lake {
    fn endpoint(&self) -> &str {
        &self.describe
    }

    fn reads_views(&self) -> bool {
        true
    }

    fn write<'a>(self: Arc<Self>, feed: &'a mut Feed) -> BoxFuture<'a, Result<()>> {
        Box::pin(write(self, feed))
    }

    fn backfill<'a>(
        self: Arc<Self>,
        feed: &'a mut Feed,
        range: Range<u64>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(super::backfill::backfill(self, feed, range))
    }
}

/// The end of a segment of `partition` starting at `start` whose files exist already (a
/// crash came between committing them and committing the position).
pub(super) fn interrupted(lake: &Lake, partition: u32, start: u64) -> Result<Option<u64>> {
    Ok(lake
        .files
        .names()?
        .iter()
        .filter_map(|n| writer::parse_file_name(partition, n))
        .find(|(s, _)| *s == start)
        .map(|(_, end)| end))
}

/// Clear what a crash left of `partition`'s files and find a segment it interrupted at
/// `from` (which must then end where its files say).
async fn open(lake: &Arc<Lake>, partition: u32, from: u64) -> Result<Option<u64>> {
    let prefix = format!("objects-p{partition}-");
    let lake = lake.clone();
    tokio::task::spawn_blocking(move || {
        lake.files.remove_leftovers(&prefix)?;
        interrupted(&lake, partition, from)
    })
    .await
    .unwrap_or_else(|e| Err(Error::Transient(e.to_string())))
    .map_err(|e| e.context("opening the lake"))
}

/// Encode and commit every file of `closed` on a blocking thread (encoding and fsync are
/// blocking work); counts them in the feed.
pub(super) async fn write_segment(lake: &Arc<Lake>, feed: &Feed, closed: Closed) -> Result<()> {
    let rows = closed.rows() as u64;
    let (lake, partition) = (lake.clone(), feed.partition());
    let files = tokio::task::spawn_blocking(move || writer::write(&lake, partition, closed))
        .await
        .unwrap_or_else(|e| Err(Error::Transient(format!("the writer thread failed: {e}"))))?;
    feed.written(files as u64, rows);
    Ok(())
}

/// Write `closed`, then commit its end. An error when the write failed (the worker starts
/// over from the committed position, producing the same segment again); false when the feed
/// was stopped before the position could be committed.
async fn write_and_commit(lake: &Arc<Lake>, feed: &mut Feed, closed: Closed) -> Result<bool> {
    let end = closed.end;
    write_segment(lake, feed, closed)
        .await
        .map_err(|e| e.context("writing the lake"))?;
    loop {
        match feed.commit(end + 1).await {
            Ok(()) => return Ok(true),
            Err(e) => {
                tracing::warn!(
                    subscription = feed.subscription(),
                    partition = feed.partition(),
                    "committing {}: {e}",
                    end + 1
                );
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = feed.stopped() => return Ok(false),
                }
            }
        }
    }
}

/// Write a live feed from its committed position until it is stopped.
async fn write(lake: Arc<Lake>, feed: &mut Feed) -> Result<()> {
    let (partition, from) = (feed.partition(), feed.from());
    let forced = open(&lake, partition, from).await?;
    if let Some(end) = forced {
        tracing::info!(
            subscription = feed.subscription(),
            partition,
            "completing the interrupted segment {from}..={end}"
        );
    }
    let mut w = Writer::new(lake.clone(), from, forced);
    let mut committed = from;
    let idle = Duration::from_millis(lake.roll.idle_ms);
    let mut last_event = Instant::now();
    let mut read_next = from;
    loop {
        feed.show_position(w.start());
        let idle_due = (!w.is_empty() && !idle.is_zero()).then(|| last_event + idle);
        let far = || Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            batch = feed.next() => {
                let Some(batch) = batch else { return Ok(()) };
                for d in &batch.deliveries {
                    last_event = Instant::now();
                    let closed = match d.view() {
                        Ok(view) => w.push(d.offset, &view, partition),
                        Err(e) => {
                            feed.dead_letter(d, &e).await;
                            None
                        }
                    };
                    if let Some(closed) = closed
                        && !write_and_commit(&lake, feed, closed).await?
                    {
                        return Ok(());
                    }
                }
                read_next = batch.next;
                let (closed, position) = w.advance(batch.next);
                if let Some(closed) = closed
                    && !write_and_commit(&lake, feed, closed).await?
                {
                    return Ok(());
                }
                if let Some(p) = position
                    && p > committed
                    && feed.commit(p).await.is_ok()
                {
                    committed = p;
                }
            }
            _ = tokio::time::sleep_until(idle_due.unwrap_or_else(far)), if idle_due.is_some() => {
                if let Some(closed) = w.close_idle(read_next)
                    && !write_and_commit(&lake, feed, closed).await?
                {
                    return Ok(());
                }
            }
        }
    }
}
