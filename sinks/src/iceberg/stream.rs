//! The Iceberg sink as a stream sink: one log partition's matching events are buffered as
//! journal rows; every `commit_interval_ms` after the first buffered event (or sooner at
//! `commit_max_rows`) they are written as data files, one per table partition, committed
//! with the log position they reach, and only then is the subscription's position moved.
//! Events buffered when the worker stops are read again by the next one.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use iceberg::spec::{DataFile, Literal, Struct};
use tokio::time::Instant;

use super::rows::{Row, journal_batch};
use super::{Iceberg, Journal, datafile};
use crate::sink::{Delivery, Feed, StreamSink};
use crate::{Error, Result};

const DAY_US: i64 = 86_400_000_000;

impl StreamSink for Iceberg {
    fn endpoint(&self) -> &str {
        &self.describe
    }

    fn write<'a>(self: Arc<Self>, feed: &'a mut Feed) -> BoxFuture<'a, Result<()>> {
        Box::pin(write(self, feed))
    }

    /// A replay has nothing to rewrite: every event the table covers is in it once, and the
    /// live worker appends the rest. Progress shows the range done.
    fn backfill<'a>(
        self: Arc<Self>,
        feed: &'a mut Feed,
        range: Range<u64>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            feed.show_position(range.end);
            Ok(())
        })
    }
}

/// Write a live feed from its committed position until it is stopped.
async fn write(sink: Arc<Iceberg>, feed: &mut Feed) -> Result<()> {
    let journal = sink.journal().await?;
    let partition = feed.partition();
    // A crash may have come between a commit and the position it allowed: skip what the
    // table holds already.
    let covered = sink.covered(partition).await?;
    if covered > feed.from() {
        tracing::info!(
            subscription = feed.subscription(),
            partition,
            "the journal already holds offsets {}..{covered}; resuming after them",
            feed.from()
        );
        feed.commit(covered).await?;
        feed.read(covered, None);
    }
    let interval = Duration::from_millis(sink.spec.commit_interval_ms);
    let mut buffered: Vec<Arc<Delivery>> = Vec::new();
    let mut next = feed.from();
    let mut committed = next;
    let mut due: Option<Instant> = None;
    loop {
        feed.show_position(committed);
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            batch = feed.next() => {
                let Some(batch) = batch else {
                    if !feed.is_stopped() && !buffered.is_empty() {
                        flush(&sink, &journal, feed, &mut buffered, next).await?;
                    }
                    return Ok(());
                };
                if !batch.deliveries.is_empty() && due.is_none() {
                    due = Some(Instant::now() + interval);
                }
                buffered.extend(batch.deliveries);
                next = batch.next;
                if buffered.len() >= sink.spec.commit_max_rows {
                    flush(&sink, &journal, feed, &mut buffered, next).await?;
                    committed = next;
                    due = None;
                } else if buffered.is_empty() && next > committed && feed.commit(next).await.is_ok() {
                    // Nothing of this stretch was for the table: the position moves on.
                    committed = next;
                }
            }
            _ = tokio::time::sleep_until(due.unwrap_or(far)), if due.is_some() => {
                flush(&sink, &journal, feed, &mut buffered, next).await?;
                committed = next;
                due = None;
            }
        }
    }
}

/// Write `buffered` as data files, commit them as covering the partition up to `next`, then
/// move the subscription's position there.
async fn flush(
    sink: &Arc<Iceberg>,
    journal: &Journal,
    feed: &Feed,
    buffered: &mut Vec<Arc<Delivery>>,
    next: u64,
) -> Result<()> {
    let deliveries = std::mem::take(buffered);
    let partition = feed.partition();
    let rows = deliveries.len() as u64;
    let encoded = {
        let journal = journal.clone();
        tokio::task::spawn_blocking(move || encode(&journal, partition, &deliveries))
            .await
            .unwrap_or_else(|e| Err(Error::Transient(format!("the encoder thread failed: {e}"))))?
    };
    let mut files = Vec::with_capacity(encoded.len());
    for (path, bytes, file) in encoded {
        sink.catalog
            .file_io()
            .new_output(&path)
            .map_err(|e| Error::Transient(format!("writing {path}: {e}")))?
            .write(bytes)
            .await
            .map_err(|e| Error::Transient(format!("writing {path}: {e}")))?;
        files.push(file);
    }
    let count = files.len() as u64;
    sink.committer
        .commit(&sink.catalog, partition, next, files)
        .await?;
    feed.written(count, rows);
    // The table holds the rows now; if the position cannot move, a restart skips them by the
    // offsets the table records.
    if let Err(e) = feed.commit(next).await {
        tracing::warn!(
            subscription = feed.subscription(),
            partition,
            "committing position {next} after the journal commit: {e}"
        );
    }
    Ok(())
}

/// Rows of `deliveries` encoded as one Parquet file per table partition (day, bucket), with
/// each file's path and manifest entry.
fn encode(
    journal: &Journal,
    partition: u32,
    deliveries: &[Arc<Delivery>],
) -> Result<Vec<(String, Bytes, DataFile)>> {
    let mut groups: BTreeMap<(i64, &str), Vec<Row<'_>>> = BTreeMap::new();
    for d in deliveries {
        let day = d.event.event_time.div_euclid(DAY_US);
        groups.entry((day, &d.event.bucket)).or_default().push(Row {
            event: &d.event,
            partition,
            offset: d.offset,
        });
    }
    let mut out = Vec::with_capacity(groups.len());
    for ((day, bucket), rows) in groups {
        let batch = journal_batch(&rows)?;
        let (bytes, meta) = datafile::encode(&batch)?;
        let date = chrono::DateTime::from_timestamp(day * 86_400, 0)
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_else(|| day.to_string());
        let (first, last) = (rows[0].offset, rows[rows.len() - 1].offset);
        let path = format!(
            "{}/data/record_timestamp_day={date}/bucket={bucket}/p{partition}-{first}-{last}-{}.parquet",
            journal.location,
            uuid::Uuid::now_v7()
        );
        let day = i32::try_from(day).map_err(|_| {
            Error::Transient(format!("event day {day} is outside Iceberg's date range"))
        })?;
        let key = Struct::from_iter([Some(Literal::date(day)), Some(Literal::string(bucket))]);
        let file = datafile::data_file(
            path.clone(),
            bytes.len() as u64,
            &meta,
            &journal.schema,
            key,
            journal.spec_id,
        )?;
        out.push((path, Bytes::from(bytes), file));
    }
    Ok(out)
}
