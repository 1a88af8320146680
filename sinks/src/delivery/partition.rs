//! One subscription's delivery of one log partition to a request sink.
//!
//! A reader task (`reader.rs`) reads the partition from the committed position; the
//! dispatcher here delivers the matches. Unbatched, each key has
//! a lane: one event of a key in flight at a time, in log order, while different keys proceed
//! in parallel up to `delivery.max_in_flight`. Batched, batches go out one at a time in log
//! order. Either way per-key order holds.
//!
//! Invariant: the committed position is the lowest offset not yet done (delivered or in the
//! dead-letter queue), or the read position when nothing is pending. A crash re-delivers
//! what was in flight (at-least-once) and never skips an event.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tidemark_core::OBJECTS_TOPIC;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::context::{Requests, RunCtx};
use super::reader::{dead_letter_failures, read, start_offset_or_stop};
use super::retry::{self, Outcome};
use crate::sink::Delivery;

/// Delivery state of the partition.
struct Dispatch {
    ctx: Arc<RunCtx>,
    /// The sink and its endpoint's circuit.
    to: Requests,
    partition: u32,
    /// Offsets handed over and not done yet.
    pending: BTreeSet<u64>,
    /// Next offset the reader will hand over.
    read_next: u64,
    committed: u64,
    /// Unbatched: per key, its undelivered events (the head is in flight or waiting).
    /// Keyed by `bucket/key`; foldhash, as the index's head maps (SipHash showed in profiles).
    lanes: HashMap<Bytes, VecDeque<Arc<Delivery>>, foldhash::fast::RandomState>,
    /// Keys whose head waits for a free slot.
    ready: VecDeque<Bytes>,
    /// Batched: events waiting for the next batch, and since when the oldest waits.
    queue: VecDeque<Arc<Delivery>>,
    queued_since: Option<Instant>,
    /// Deliveries in flight, polled by this task itself: no task spawn or cross-task wake-up
    /// per event.
    running: FuturesUnordered<BoxFuture<'static, (Vec<Arc<Delivery>>, Outcome)>>,
}

impl Dispatch {
    fn batched(&self) -> bool {
        self.ctx.spec.batch.max_events > 1
    }

    fn take(&mut self, d: Arc<Delivery>) {
        self.pending.insert(d.offset);
        if self.batched() {
            self.queued_since.get_or_insert_with(Instant::now);
            self.queue.push_back(d);
            return;
        }
        let lane = self.lanes.entry(d.key.clone()).or_default();
        lane.push_back(d.clone());
        if lane.len() == 1 {
            self.ready.push_back(d.key.clone());
        }
    }

    fn spawn(&mut self, batch: Vec<Arc<Delivery>>) {
        let (ctx, to) = (self.ctx.clone(), self.to.clone());
        self.running.push(Box::pin(async move {
            if let Some(pace) = ctx.replay.as_ref().and_then(|r| r.pace.as_ref()) {
                pace.wait(batch.len()).await;
            }
            let outcome = retry::deliver(&ctx, &to, &batch).await;
            (batch, outcome)
        }));
    }

    /// Start what may start now; returns when the next batch is due, if one waits.
    fn start(&mut self) -> Option<Instant> {
        if !self.batched() {
            while self.running.len() < self.ctx.spec.delivery.max_in_flight {
                let Some(key) = self.ready.pop_front() else {
                    break;
                };
                let head = self.lanes[&key][0].clone();
                self.spawn(vec![head]);
            }
            return None;
        }
        if !self.running.is_empty() || self.queue.is_empty() {
            return None;
        }
        let max = self.ctx.spec.batch.max_events;
        let due = self.queued_since? + Duration::from_millis(self.ctx.spec.batch.max_wait_ms);
        if self.queue.len() >= max || Instant::now() >= due {
            let n = self.queue.len().min(max);
            let batch: Vec<_> = self.queue.drain(..n).collect();
            self.queued_since = (!self.queue.is_empty()).then(Instant::now);
            self.spawn(batch);
            return None;
        }
        Some(due)
    }

    /// Shutdown: let the deliveries in flight finish (none is started) for up to the
    /// shutdown grace, so their position can be committed.
    async fn drain(&mut self) {
        let grace = SHUTDOWN_GRACE_MS.load(std::sync::atomic::Ordering::Relaxed);
        if grace == 0 || self.running.is_empty() {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_millis(grace), async {
            while let Some((batch, outcome)) = self.running.next().await {
                if !matches!(outcome, Outcome::Gone(_)) {
                    self.finished(&batch);
                }
            }
        })
        .await;
    }

    fn finished(&mut self, batch: &[Arc<Delivery>]) {
        for d in batch {
            self.pending.remove(&d.offset);
            if self.batched() {
                continue;
            }
            if let Some(lane) = self.lanes.get_mut(&d.key) {
                lane.pop_front();
                if lane.is_empty() {
                    self.lanes.remove(&d.key);
                } else {
                    self.ready.push_back(d.key.clone());
                }
            }
        }
    }

    fn safe_point(&self) -> u64 {
        self.pending.first().copied().unwrap_or(self.read_next)
    }

    async fn commit(&mut self) {
        let point = self.safe_point();
        // A replay never moves the subscription's position.
        if point <= self.committed || self.ctx.replay.is_some() {
            return;
        }
        match self
            .ctx
            .log
            .commit(&self.ctx.consumer, OBJECTS_TOPIC, self.partition, point)
            .await
        {
            Ok(()) => self.committed = point,
            Err(e) => tracing::warn!(
                subscription = self.ctx.name,
                partition = self.partition,
                "committing position {point}: {e}"
            ),
        }
    }
}

/// Deliver `partition` until `stop` turns true or the endpoint is gone; commits the safe
/// point before returning. Returns the 410 message when the endpoint is gone.
pub(crate) async fn run(
    ctx: Arc<RunCtx>,
    to: Requests,
    partition: u32,
    mut stop: watch::Receiver<bool>,
) -> Option<String> {
    let from = start_offset_or_stop(&ctx, partition, &mut stop).await?;
    deliver(ctx, to, partition, from, None, stop).await
}

/// Deliver `partition` from `from` until `stop`, the endpoint is gone, or (with an `end`)
/// everything before `end` is done. Returns the 410 message when the endpoint is gone.
pub(crate) async fn deliver(
    ctx: Arc<RunCtx>,
    to: Requests,
    partition: u32,
    from: u64,
    end: Option<u64>,
    mut stop: watch::Receiver<bool>,
) -> Option<String> {
    let (tx, mut rx) = mpsc::channel(4);
    let reader = tokio::spawn(read(ctx.clone(), partition, from, end, tx));
    let cap = (ctx.spec.delivery.max_in_flight * 16)
        .max(ctx.spec.batch.max_events * 4)
        .max(1024);
    let mut d = Dispatch {
        ctx: ctx.clone(),
        to,
        partition,
        pending: BTreeSet::new(),
        read_next: from,
        committed: from,
        lanes: HashMap::default(),
        ready: VecDeque::new(),
        queue: VecDeque::new(),
        queued_since: None,
        running: FuturesUnordered::new(),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let live = ctx.stats.live_position(partition);
    let mut gone = None;
    let mut read_all = false;
    while !*stop.borrow() && gone.is_none() {
        live.store(d.safe_point(), std::sync::atomic::Ordering::Relaxed);
        if read_all && d.pending.is_empty() {
            break;
        }
        let due = d.start();
        let room = d.pending.len() < cap && !read_all;
        tokio::select! {
            chunk = rx.recv(), if room => {
                let Some(mut chunk) = chunk else {
                    // The reader stops by itself only at a bounded range's end.
                    if end.is_none() { break }
                    read_all = true;
                    continue;
                };
                dead_letter_failures(&ctx, partition, &mut chunk).await;
                for delivery in chunk.deliveries {
                    d.take(delivery);
                }
                d.read_next = chunk.next;
            }
            Some((batch, outcome)) = d.running.next() => {
                match outcome {
                    Outcome::Gone(message) => gone = Some(message),
                    _ => d.finished(&batch),
                }
            }
            _ = tokio::time::sleep_until(due.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))), if due.is_some() => {}
            _ = tick.tick() => d.commit().await,
            _ = stop.changed() => {}
        }
    }
    reader.abort();
    if gone.is_none() && *stop.borrow() {
        d.drain().await;
    }
    // Work still in flight is abandoned; it stays pending, so the position stays before it.
    d.running.clear();
    d.commit().await;
    gone
}

/// How long a stopping worker lets its deliveries in flight finish, in ms: set once, by
/// `Engine::shutdown_within` as the process stops (0: abandon them at once, as a
/// subscription that is changed or removed does). Process-wide because one engine runs per
/// process and the workers have no other handle on it.
static SHUTDOWN_GRACE_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub(crate) fn set_shutdown_grace(grace: Duration) {
    SHUTDOWN_GRACE_MS.store(
        grace.as_millis() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
}
