//! The Iceberg sink as a stream sink: one log partition's matching events make a round, read
//! into the journal's data files (one per table partition) and the inventory's changes as
//! they arrive; every `commit_interval_ms` after the round's first event (or sooner at
//! `commit_max_rows` or 32 MiB of records) the round's files are written and committed to
//! each table with the log position they reach, and only then is the subscription's position
//! moved. A round that was not committed when the worker stops is read again by the next one.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use iceberg::spec::{DataFile, Struct};
use tokio::time::Instant;

use super::commit::Appender;
use super::inventory::InvRow;
use super::overwrite::{Change, Changes, Overwriter};
use super::rows::JournalColumns;
use super::{COMMIT_MAX_BYTES, Iceberg, TableInfo, datafile, schema};
use crate::sink::{Delivery, Feed, StreamSink};
use crate::{Error, Result};
use tidemark_core::codec::view::EventView;

impl StreamSink for Iceberg {
    fn endpoint(&self) -> &str {
        &self.describe
    }

    fn reads_views(&self) -> bool {
        true
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
    let journal = sink.journal.info().await?;
    let partition = feed.partition();
    let position = feed.from();
    // A crash may have come between a table's commit and the position it allowed: each table
    // skips what it reflects already, and the read resumes where the one behind is. An
    // inventory that is not kept covers every offset, so it never takes a row.
    let (inventory, inventory_covers) = match sink.spec.inventory {
        false => (None, u64::MAX),
        true => {
            let inventory = sink.inventory.info().await?;
            let covers = match sink.inventory.covers(partition).await? {
                Some(at) => {
                    catch_up_inventory(&sink, feed, at).await?;
                    at
                }
                // Never committed: the inventory starts from the index's live objects.
                None => super::backfill::inventory(&sink, &inventory, feed).await?,
            };
            (Some(inventory), covers)
        }
    };
    // The journal never takes an event below the subscription's position (a catch-up of
    // the inventory may read from further back).
    let journal_from = sink.journal.covered(partition).await?.max(position);
    let mut covered = [journal_from, inventory_covers];
    let resume = covered[0].min(covered[1]);
    if resume > feed.from() {
        tracing::info!(
            subscription = feed.subscription(),
            partition,
            "the tables already reflect offsets {}..{resume}; resuming after them",
            feed.from()
        );
        feed.commit(resume).await?;
        feed.read(resume, None);
    }
    let tables = Tables {
        journal: &journal,
        inventory: inventory.as_ref(),
    };
    let interval = Duration::from_millis(sink.spec.commit_interval_ms);
    // The round's rows are read into their files as they arrive, a few thousand at a time
    // while the records are fresh in memory, rather than all at its end: the records go as
    // soon as they are read, and the next ones reuse their memory.
    let mut round = Round::new(&journal, partition);
    let mut pending: Vec<Arc<Delivery>> = Vec::new();
    let mut buffered_bytes = 0usize;
    let mut next = feed.from();
    let mut committed = next;
    let mut due: Option<Instant> = None;
    let mut late = false;
    loop {
        feed.show_position(committed);
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            batch = feed.next() => {
                let Some(batch) = batch else {
                    if !feed.is_stopped() && (round.rows > 0 || !pending.is_empty()) {
                        take(&mut round, &mut pending, covered).await?;
                        flush(&sink, &tables, feed, &mut round, &mut covered, next).await?;
                    }
                    return Ok(());
                };
                if let Some(first) = batch.deliveries.first()
                    && due.is_none()
                {
                    due = Some(Instant::now() + interval);
                    late = arrived_before(first, interval);
                }
                buffered_bytes += batch.deliveries.iter().map(|d| d.wire.len()).sum::<usize>();
                pending.extend(batch.deliveries);
                next = batch.next;
                // A round whose first event is older than the interval (a catch-up) is past
                // its deadline already: once the reader has reached the log's end, waiting
                // out another interval only delays it. It must still make a file worth its
                // commit, so a slow trickle of old events keeps to the interval.
                let late_and_done = late && batch.caught_up && buffered_bytes >= EARLY_BYTES;
                let full = round.rows + pending.len() >= sink.spec.commit_max_rows
                    || buffered_bytes >= COMMIT_MAX_BYTES
                    || late_and_done;
                if full || pending.len() >= TAKE_ROWS || batch.caught_up {
                    take(&mut round, &mut pending, covered).await?;
                }
                if full {
                    buffered_bytes = 0;
                    flush(&sink, &tables, feed, &mut round, &mut covered, next).await?;
                    committed = next;
                    due = None;
                } else if round.rows == 0
                    && pending.is_empty()
                    && next > committed
                    && feed.commit(next).await.is_ok()
                {
                    // Nothing of this stretch was for the tables: the position moves on.
                    committed = next;
                }
            }
            _ = tokio::time::sleep_until(due.unwrap_or(far)), if due.is_some() => {
                buffered_bytes = 0;
                take(&mut round, &mut pending, covered).await?;
                flush(&sink, &tables, feed, &mut round, &mut covered, next).await?;
                committed = next;
                due = None;
            }
        }
    }
}

/// Deliveries read into a round's files at once: enough to dwarf the trip to the blocking
/// pool, few enough that their records are still in the CPU's cache.
const TAKE_ROWS: usize = 4096;

/// Read `pending` into `round` on the blocking pool.
async fn take(
    round: &mut Round,
    pending: &mut Vec<Arc<Delivery>>,
    covered: [u64; 2],
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let deliveries = std::mem::take(pending);
    let mut taken = std::mem::replace(round, Round::empty());
    *round = tokio::task::spawn_blocking(move || {
        taken.take(&deliveries, covered)?;
        Ok(taken)
    })
    .await
    .unwrap_or_else(|e| Err(Error::Transient(format!("the encoder thread failed: {e}"))))?;
    Ok(())
}

/// An inventory turned off, then on again, stopped at `at`, which may be behind the
/// subscription's position: read the log again from there (the journal skips what it holds).
/// If the log no longer holds that offset, the inventory cannot follow it: the table must
/// start over from the index, which a dropped table does.
async fn catch_up_inventory(sink: &Iceberg, feed: &mut Feed, at: u64) -> Result<()> {
    if at >= feed.from() {
        return Ok(());
    }
    let start = feed.log_start().await?;
    if at < start {
        return Err(Error::Config(format!(
            "{}: it stopped following log partition {} at offset {at}, and the log now \
             starts at {start}; drop the table to have it rebuilt from the index",
            sink.inventory.ident,
            feed.partition()
        )));
    }
    tracing::info!(
        subscription = feed.subscription(),
        partition = feed.partition(),
        "{} reflects offsets up to {at}; reading the log again from there",
        sink.inventory.ident
    );
    feed.read(at, None);
    Ok(())
}

/// A late round (see `write`) commits at the log's end once it holds this many bytes.
const EARLY_BYTES: usize = COMMIT_MAX_BYTES / 8;

/// Whether `d`'s event happened more than `interval` ago (by the clock of the node that took
/// it), so its round is late already.
fn arrived_before(d: &Delivery, interval: Duration) -> bool {
    let now = chrono::Utc::now().timestamp_micros();
    let interval = i64::try_from(interval.as_micros()).unwrap_or(i64::MAX);
    d.view()
        .is_ok_and(|e| e.event_time < now.saturating_sub(interval))
}

struct Tables<'a> {
    journal: &'a TableInfo,
    /// `None` when the sink keeps no inventory.
    inventory: Option<&'a TableInfo>,
}

/// A round being written: the journal's files, encoded as rows arrive, and the inventory's
/// changes, each row taken only from the offset its table already reflects.
struct Round {
    /// `None` for the placeholder left while a round is on the blocking pool.
    files: Option<JournalFiles>,
    changes: Vec<Change>,
    /// Records whose read failed: dead-lettered before the position passes them.
    unreadable: Vec<(Arc<Delivery>, tidemark_core::Error)>,
    /// Deliveries taken.
    rows: usize,
}

impl Round {
    fn new(journal: &TableInfo, partition: u32) -> Round {
        Round {
            files: Some(JournalFiles::new(journal.clone(), partition)),
            ..Round::empty()
        }
    }

    fn empty() -> Round {
        Round {
            files: None,
            changes: Vec::new(),
            unreadable: Vec::new(),
            rows: 0,
        }
    }

    /// Read each delivery's view once, for both tables (this read is its check).
    fn take(&mut self, deliveries: &[Arc<Delivery>], covered: [u64; 2]) -> Result<()> {
        let [journal_from, inventory_from] = covered;
        let files = self
            .files
            .as_mut()
            .expect("a round on the blocking pool is taken whole");
        self.rows += deliveries.len();
        for d in deliveries {
            let e = match d.view() {
                Ok(e) => e,
                Err(error) => {
                    self.unreadable.push((d.clone(), error));
                    continue;
                }
            };
            if d.offset >= inventory_from && e.event_type.mutates_object() {
                let row = InvRow::after(&e, files.partition, d.offset);
                self.changes
                    .push((e.bucket.to_owned(), e.key.to_owned(), row));
            }
            if d.offset >= journal_from {
                files.push(&e, d.offset)?;
            }
        }
        Ok(())
    }

    /// The journal's files (path, bytes, manifest entry), the inventory's changes and the
    /// unreadable records.
    #[allow(clippy::type_complexity)]
    fn finish(
        self,
    ) -> Result<(
        Vec<(String, Bytes, DataFile)>,
        Vec<Change>,
        Vec<(Arc<Delivery>, tidemark_core::Error)>,
    )> {
        let files = match self.files {
            Some(files) => files.finish()?,
            None => Vec::new(),
        };
        Ok((files, self.changes, self.unreadable))
    }
}

/// Write `round` to the tables (the journal's files, the inventory's changes), commit them as
/// covering the partition up to `next`, then move the subscription's position there.
async fn flush(
    sink: &Arc<Iceberg>,
    tables: &Tables<'_>,
    feed: &Feed,
    round: &mut Round,
    covered: &mut [u64; 2],
    next: u64,
) -> Result<()> {
    let partition = feed.partition();
    let done = std::mem::replace(round, Round::new(tables.journal, partition));
    let rows = done.rows as u64;
    let started = Instant::now();
    let (encoded, changes, unreadable) =
        tokio::task::spawn_blocking(move || done.finish())
            .await
            .unwrap_or_else(|e| Err(Error::Transient(format!("the encoder thread failed: {e}"))))?;
    // Damaged records leave the tables for the dead-letter queue before the position passes.
    for (d, error) in &unreadable {
        feed.dead_letter(d, error).await;
    }
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
    let written = started.elapsed();
    if !files.is_empty() {
        let appender = Appender {
            catalog: sink.catalog.clone(),
            ident: sink.journal.ident.clone(),
        };
        sink.journal_commits
            .commit(&appender, partition, next, files)
            .await?;
    }
    covered[0] = covered[0].max(next);
    if let Some(inventory) = tables.inventory
        && !changes.is_empty()
    {
        let overwriter = Overwriter {
            catalog: sink.catalog.clone(),
            ident: sink.inventory.ident.clone(),
            info: inventory.clone(),
        };
        let changes = Changes {
            changes,
            files: Vec::new(),
        };
        sink.inventory_commits
            .commit(&overwriter, partition, next, changes)
            .await?;
    }
    covered[1] = covered[1].max(next);
    tracing::debug!(
        subscription = feed.subscription(),
        partition,
        "committed {rows} events up to offset {next}: {count} journal files written in {} ms, \
         the tables committed in {} ms more",
        written.as_millis(),
        (started.elapsed() - written).as_millis()
    );
    feed.written(count, rows);
    sink.maintain().await;
    // The tables hold the rows now; if the position cannot move, a restart skips them by the
    // offsets the tables record.
    if let Err(e) = feed.commit(next).await {
        tracing::warn!(
            subscription = feed.subscription(),
            partition,
            "committing position {next} after the tables' commits: {e}"
        );
    }
    Ok(())
}
/// Rows of the journal built into columns before they are encoded into their file: enough
/// for the encoder's work per call to dwarf its overhead, few enough that a round's rows are
/// never all in memory at once (a backfill's round can hold hundreds of thousands of rows).
const CHUNK_ROWS: usize = 16 * 1024;

/// One data file being written.
struct JournalFile {
    key: Struct,
    columns: JournalColumns,
    file: datafile::Encoder,
    first: u64,
    last: u64,
}

/// Journal rows of one log partition encoded as one Parquet file per table partition (day,
/// bucket), a chunk of rows at a time.
struct JournalFiles {
    journal: TableInfo,
    partition: u32,
    /// By table partition (its directory names it).
    files: BTreeMap<String, JournalFile>,
    /// Consecutive rows mostly share their hour and bucket, hence their table partition (an
    /// hour lies in one day, month and year): its directory is worked out once per run.
    last: Option<((i64, String), String)>,
}

impl JournalFiles {
    fn new(journal: TableInfo, partition: u32) -> Self {
        JournalFiles {
            journal,
            partition,
            files: BTreeMap::new(),
            last: None,
        }
    }

    fn push(&mut self, event: &EventView<'_>, offset: u64) -> Result<()> {
        let (time, bucket) = (event.event_time, event.bucket);
        let hour = time.div_euclid(super::partitioning::HOUR_US);
        let dir = match &self.last {
            Some(((h, b), dir)) if *h == hour && b == bucket => dir,
            _ => {
                let (key, dir) = super::partitioning::key(&self.journal.parts, time, bucket)?;
                if !self.files.contains_key(&dir) {
                    // Nothing sized ahead: a round may open a file for each of thousands of
                    // buckets, most with a few rows.
                    let file =
                        datafile::Encoder::new(schema::journal_arrow(), 0, self.journal.format)?;
                    let open = JournalFile {
                        key,
                        columns: JournalColumns::new(),
                        file,
                        first: offset,
                        last: offset,
                    };
                    self.files.insert(dir.clone(), open);
                }
                &self.last.insert(((hour, bucket.to_owned()), dir)).1
            }
        };
        let file = self.files.get_mut(dir).expect("opened above");
        file.last = offset;
        file.columns.push(event, self.partition, offset);
        if file.columns.len() >= CHUNK_ROWS {
            file.file.write(&file.columns.finish()?)?;
        }
        Ok(())
    }

    /// Each file's path, bytes and manifest entry.
    fn finish(self) -> Result<Vec<(String, Bytes, DataFile)>> {
        let mut out = Vec::with_capacity(self.files.len());
        for (dir, mut f) in self.files {
            if !f.columns.is_empty() {
                f.file.write(&f.columns.finish()?)?;
            }
            let (bytes, meta) = f.file.finish()?;
            let dir = match dir.is_empty() {
                true => String::new(),
                false => format!("{dir}/"),
            };
            let path = format!(
                "{}/data/{dir}p{}-{}-{}-{}.parquet",
                self.journal.location,
                self.partition,
                f.first,
                f.last,
                uuid::Uuid::now_v7()
            );
            let file = datafile::data_file(
                path.clone(),
                bytes.len() as u64,
                &meta,
                &self.journal.schema,
                f.key,
                self.journal.spec_id,
            )?;
            out.push((path, Bytes::from(bytes), file));
        }
        Ok(out)
    }
}
