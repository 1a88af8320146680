//! Stream sinks: a sink that consumes one log partition's matching events in order, writes
//! them its own way (files, tables) and commits the subscription's position itself.
//!
//! The engine reads the partition (decode, rules, filter, dead letters for what cannot be
//! handed over) and gives the sink a [`Feed`]. Invariant the sink keeps: a position is
//! committed ([`Feed::commit`]) only once every event before it is durably written, so a
//! crash or a stop re-reads from there and nothing is lost; a sink that writes each offset
//! range to the same place (the lake names files by offsets) writes it exactly once.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use tidemark_core::event::ObjectEvent;
use tidemark_core::log::Position;
use tokio::sync::{mpsc, watch};

use super::Delivery;
use crate::Result;
use crate::stats::Stats;

/// A sink fed one partition at a time, that commits positions itself. Its methods take
/// `Arc<Self>` so a sink can hand itself to blocking threads (encoding, fsync) or tasks.
pub trait StreamSink: Send + Sync + 'static {
    /// What status and logs name the destination by (`file:///lake`, `s3://bucket/prefix`).
    fn endpoint(&self) -> &str;

    /// Whether the sink reads deliveries only through [`Delivery::view`](super::Delivery::view)
    /// (copying fields into columns): then, when no WASM filter needs the decoded event, the
    /// engine tests its rules on each record's leading fields (or on a view, for rules on
    /// later fields) and never decodes it in full. Such a sink dead-letters a delivery whose
    /// view fails ([`Feed::dead_letter`]) before it commits a position past it.
    fn reads_views(&self) -> bool {
        false
    }

    /// Write `feed` (a live partition, read from [`Feed::from`]) until [`Feed::next`] ends:
    /// when the worker is stopped (what is not committed then is read again by the next
    /// worker), or at the end of a bounded read (the default backfill: everything read is to
    /// be written; [`Feed::is_stopped`] tells which). An error (a failed write, with its kind)
    /// makes the engine record it and start the partition over from its committed position
    /// after a pause.
    fn write<'a>(self: Arc<Self>, feed: &'a mut Feed) -> BoxFuture<'a, Result<()>>;

    /// A replay: write `range` (end exclusive) of the feed's partition again, for a damaged
    /// destination. [`Feed::commit`] only shows progress here: the live worker keeps the
    /// position. By default the range is read and handed to [`StreamSink::write`]; a sink
    /// that must not write an offset twice (the lake) writes only what is missing instead.
    fn backfill<'a>(
        self: Arc<Self>,
        feed: &'a mut Feed,
        range: Range<u64>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            feed.read(range.start, Some(range.end));
            self.write(feed).await
        })
    }
}

/// Matching events of one partition, in log order, and where the read is now.
pub struct Batch {
    /// Past the rules and the filter; may be empty (nothing in the stretch matched).
    pub deliveries: Vec<Arc<Delivery>>,
    /// The offset after the last record read: everything before it is in this batch or
    /// earlier ones, or was not for this subscription (or is in the dead-letter queue).
    pub next: u64,
    /// The read that gave this batch got fewer records than it asked for: the reader had
    /// reached the end of the log (on Kafka, a fetch may also end short; a hint, not a
    /// guarantee, so sinks use it only to commit sooner).
    pub caught_up: bool,
}

/// The engine's side of a feed. A trait so this seam names nothing of the engine above it;
/// `delivery::feed` implements it.
pub(crate) trait Source: Send + Sync {
    /// Read from `from` up to `end` (exclusive; `None`: follow the log), dropping what was
    /// being read.
    fn read(&mut self, from: u64, end: Option<u64>);

    /// The next batch, failures already dead-lettered; `None` once a bounded read reached its
    /// end (or nothing is being read). Cancel-safe: a dropped call loses no batch.
    fn next(&mut self) -> BoxFuture<'_, Option<Batch>>;

    /// Put a record the sink could not read (a damaged record handed over undecoded) in the
    /// dead-letter queue, durably.
    fn dead_letter(&self, offset: u64, wire: bytes::Bytes, error: String) -> BoxFuture<'_, ()>;

    /// Commit the subscription's position (a no-op for replays).
    fn commit(&self, position: u64) -> BoxFuture<'_, Result<()>>;

    /// The committed position, else the subscription's start offset.
    fn position(&self) -> BoxFuture<'_, Result<Option<u64>>>;

    /// The first offset the log still holds.
    fn log_start(&self) -> BoxFuture<'_, Result<u64>>;

    /// The subscription's start offset of this partition (resolved when it was created).
    fn subscription_start(&self) -> Option<u64>;

    /// The partition's live objects as of at least `at_least`, past the subscription's rules
    /// and filter, as creation events; `None` when this node has no index to read.
    fn live_objects(&self, at_least: u64) -> Option<LiveScan>;
}

/// A partition's live objects being read from the index ([`Feed::live_objects`]).
pub struct LiveScan {
    /// Each live object as the event that made its state (`ObjectCreated:Put`, its position),
    /// in key order, in chunks; only those the subscription's rules and filter keep.
    pub objects: mpsc::Receiver<Vec<(Arc<ObjectEvent>, Position)>>,
    /// Resolves, once `objects` is drained, to the next offset the scan had not applied: the
    /// objects are the state just before it.
    pub applied: tokio::task::JoinHandle<Result<u64>>,
}

/// One partition as a stream sink reads it.
pub struct Feed {
    partition: u32,
    subscription: String,
    source: Box<dyn Source>,
    /// Where the current read started.
    from: u64,
    stop: watch::Receiver<bool>,
    stats: Arc<Stats>,
    /// The position status and replay progress show for this partition.
    shown: Arc<AtomicU64>,
}

impl Feed {
    pub(crate) fn new(
        partition: u32,
        subscription: String,
        source: Box<dyn Source>,
        stop: watch::Receiver<bool>,
        stats: Arc<Stats>,
    ) -> Feed {
        let shown = stats.live_position(partition);
        Feed {
            partition,
            subscription,
            source,
            from: 0,
            stop,
            stats,
            shown,
        }
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The subscription's name, for logs.
    pub fn subscription(&self) -> &str {
        &self.subscription
    }

    /// Where the current read started: on a live feed, the committed position.
    pub fn from(&self) -> u64 {
        self.from
    }

    /// Read from `from` up to `end` (exclusive; `None`: follow the log), in place of what
    /// was being read.
    pub fn read(&mut self, from: u64, end: Option<u64>) {
        self.from = from;
        self.source.read(from, end);
    }

    /// The next batch; `None` when the worker is stopped or a bounded read is done
    /// ([`Feed::is_stopped`] tells which). Cancel-safe, so it can be raced with timers.
    pub async fn next(&mut self) -> Option<Batch> {
        if self.is_stopped() {
            return None;
        }
        tokio::select! {
            batch = self.source.next() => batch,
            _ = self.stop.changed() => None,
        }
    }

    pub fn is_stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves when the worker is stopped.
    pub async fn stopped(&mut self) {
        while !self.is_stopped() {
            if self.stop.changed().await.is_err() {
                return;
            }
        }
    }

    /// Put `delivery` in the dead-letter queue, durably, because it cannot be read (`error`
    /// names why): a sink that reads views does so for a damaged record before it commits a
    /// position past it.
    pub async fn dead_letter(&self, delivery: &Delivery, error: &tidemark_core::Error) {
        tracing::warn!(
            subscription = self.subscription,
            partition = self.partition,
            offset = delivery.offset,
            "a record cannot be read, dead-lettered: {error}"
        );
        self.source
            .dead_letter(delivery.offset, delivery.wire.clone(), error.to_string())
            .await;
    }

    /// Move the subscription's position to `position`: every event before it is written.
    /// Once committed it is also the position shown (status, replay progress); on a replay,
    /// where nothing is committed, it is only shown.
    pub async fn commit(&self, position: u64) -> Result<()> {
        self.source.commit(position).await?;
        self.show_position(position);
        Ok(())
    }

    /// The committed position, else the subscription's start offset (`None`: neither).
    pub async fn position(&self) -> Result<Option<u64>> {
        self.source.position().await
    }

    /// The subscription's start offset of this partition.
    pub fn subscription_start(&self) -> Option<u64> {
        self.source.subscription_start()
    }

    /// The partition's live objects from this node's index, as of at least `at_least`, past
    /// the subscription's rules and filter (`None`: no index here).
    pub fn live_objects(&self, at_least: u64) -> Option<LiveScan> {
        self.source.live_objects(at_least)
    }

    /// The first offset the log still holds (retention removes older ones).
    pub async fn log_start(&self) -> Result<u64> {
        self.source.log_start().await
    }

    /// Show `position` as this partition's position in status (its lag) and replay progress.
    pub fn show_position(&self, position: u64) {
        self.shown.store(position, Ordering::Relaxed);
    }

    /// Count a committed segment: `files` written now, `rows` in it (rows count as
    /// delivered).
    pub fn written(&self, files: u64, rows: u64) {
        self.stats.files_written(files, rows);
    }
}
