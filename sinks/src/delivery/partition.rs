//! One subscription's delivery of one log partition.
//!
//! A reader task reads the partition from the committed position, decodes each record and
//! matches it against the rules; the dispatcher delivers the matches. Unbatched, each key has
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

use super::RunCtx;
use super::dead_letters::DeadLetter;
use super::filtering::{self, Decision, Filtering};
use super::retry::{self, Outcome};
use crate::sink::Delivery;

/// What the reader hands over: the matches of a stretch of the log, and where it ends.
pub(crate) struct Chunk {
    pub deliveries: Vec<Arc<Delivery>>,
    /// Records that could not be decoded: dead-lettered, never skipped silently.
    pub undecodable: Vec<(u64, Bytes, String)>,
    /// Events the filter failed on, for the dead-letter queue (`on_filter_error`).
    pub filter_failed: Vec<(Arc<Delivery>, String)>,
    pub next: u64,
}

/// Where delivery of `partition` starts: the committed position, or the subscription's
/// start offset before anything was committed.
pub(crate) async fn start_offset(ctx: &RunCtx, partition: u32) -> tidemark_core::Result<u64> {
    let range = ctx.log.offsets(OBJECTS_TOPIC, partition).await?;
    let from = match ctx
        .log
        .committed(&ctx.consumer, OBJECTS_TOPIC, partition)
        .await?
    {
        Some(o) => o,
        None => ctx
            .start_offsets
            .get(&partition)
            .copied()
            .unwrap_or(range.start),
    };
    if from < range.start {
        tracing::error!(
            subscription = ctx.name,
            partition,
            "events {from}..{} were removed by retention before they were delivered; continuing at {}",
            range.start,
            range.start
        );
        return Ok(range.start);
    }
    Ok(from)
}

/// Read `partition` from `next` and hand over what matches, up to `end` (exclusive; `None`:
/// follow the log for ever). Returns, closing `out`, once `end` is reached.
pub(crate) async fn read(
    ctx: Arc<RunCtx>,
    partition: u32,
    mut next: u64,
    end: Option<u64>,
    out: mpsc::Sender<Chunk>,
) {
    let mut filtering = Filtering::new(&ctx);
    loop {
        if end.is_some_and(|end| next >= end) {
            return;
        }
        if let Some(f) = &mut filtering
            && f.prepare(&ctx).await.is_err()
        {
            // Paused: the filter is quarantined or unavailable; nothing is handed over.
            tokio::time::sleep(filtering::RETRY).await;
            continue;
        }
        let records = match ctx
            .log
            .read(
                OBJECTS_TOPIC,
                partition,
                next,
                end.map_or(512, |end| (end - next).min(512) as usize),
                Duration::from_millis(500),
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(
                    subscription = ctx.name,
                    partition,
                    "reading the log: {e}; retrying in 1s"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(last) = records.last().map(|r| r.offset) else {
            continue;
        };
        let mut chunk = Chunk {
            deliveries: Vec::new(),
            undecodable: Vec::new(),
            filter_failed: Vec::new(),
            next: last + 1,
        };
        let mut skipped = 0;
        for rec in records {
            match ctx.codec.decode(&rec.value) {
                Ok(event) if ctx.rule.matches(&event) => {
                    chunk.deliveries.push(Arc::new(Delivery {
                        partition,
                        offset: rec.offset,
                        key: rec.key,
                        event: Arc::new(event),
                        wire: rec.value,
                    }))
                }
                Ok(_) => skipped += 1,
                Err(e) => chunk
                    .undecodable
                    .push((rec.offset, rec.value, e.to_string())),
            }
        }
        ctx.stats
            .skipped
            .fetch_add(skipped, std::sync::atomic::Ordering::Relaxed);
        if let Some(f) = &mut filtering
            && !chunk.deliveries.is_empty()
        {
            apply_filter(&ctx, f, &mut chunk).await;
        }
        next = chunk.next;
        if out.send(chunk).await.is_err() {
            return;
        }
    }
}

/// Keep what the filter keeps; failures go where `on_filter_error` says. When the filter is
/// quarantined mid-chunk, the chunk ends at the event that did it.
async fn apply_filter(ctx: &Arc<RunCtx>, f: &mut Filtering, chunk: &mut Chunk) {
    let matched = std::mem::take(&mut chunk.deliveries);
    let events = matched.iter().map(|d| d.event.clone()).collect();
    let decisions = f.decide(ctx, events).await;
    if decisions.len() < matched.len() {
        chunk.next = match decisions.len() {
            // Nothing decided (the filter thread failed): read these again.
            0 => matched[0].offset,
            n => matched[n - 1].offset + 1,
        };
        chunk.undecodable.retain(|(o, _, _)| *o < chunk.next);
    }
    for (d, decision) in matched.into_iter().zip(decisions) {
        match decision {
            Decision::Keep => chunk.deliveries.push(d),
            Decision::Drop => {}
            Decision::Failed(kind, message) => match ctx.spec.on_filter_error.as_str() {
                "deliver" => chunk.deliveries.push(d),
                "skip" => {}
                _ => chunk
                    .filter_failed
                    .push((d, format!("the filter failed ({kind}): {message}"))),
            },
        }
    }
}

/// Delivery state of the partition.
struct Dispatch {
    ctx: Arc<RunCtx>,
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
        let ctx = self.ctx.clone();
        self.running.push(Box::pin(async move {
            if let Some(pace) = ctx.replay.as_ref().and_then(|r| r.pace.as_ref()) {
                pace.wait(batch.len()).await;
            }
            let outcome = retry::deliver(&ctx, &batch).await;
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

/// Put the records a chunk could not hand over (undecodable, or the filter failed on them)
/// in the dead-letter queue, durably, before the position may move past them.
pub(crate) async fn dead_letter_failures(ctx: &RunCtx, partition: u32, chunk: &mut Chunk) {
    for (offset, wire, error) in std::mem::take(&mut chunk.undecodable) {
        dead_letter_undecodable(ctx, partition, offset, wire, error).await;
    }
    for (delivery, error) in std::mem::take(&mut chunk.filter_failed) {
        let letter = DeadLetter::new(&ctx.name, &delivery, 0, &error, None);
        retry::store_dead_letter(ctx, &letter).await;
        ctx.stats
            .dead_lettered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn dead_letter_undecodable(
    ctx: &RunCtx,
    partition: u32,
    offset: u64,
    wire: Bytes,
    error: String,
) {
    let mut letter = DeadLetter {
        id: uuid::Uuid::now_v7(),
        subscription: ctx.name.clone(),
        partition,
        offset,
        event_id: None,
        event_type: None,
        bucket: None,
        key: None,
        attempts: 0,
        error: format!("the record cannot be decoded: {error}"),
        status: None,
        dead_at: tidemark_core::time::format_us(tidemark_core::time::now_us()),
        wire: String::new(),
    };
    letter.wire = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &wire);
    retry::store_dead_letter(ctx, &letter).await;
}

/// Deliver `partition` until `stop` turns true or the endpoint is gone; commits the safe
/// point before returning. Returns the 410 message when the endpoint is gone.
pub async fn run(
    ctx: Arc<RunCtx>,
    partition: u32,
    mut stop: watch::Receiver<bool>,
) -> Option<String> {
    let from = loop {
        match start_offset(&ctx, partition).await {
            Ok(o) => break o,
            Err(e) => {
                tracing::warn!(
                    subscription = ctx.name,
                    partition,
                    "finding the start position: {e}; retrying in 1s"
                );
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return None,
                }
            }
        }
    };
    deliver(ctx, partition, from, None, stop).await
}

/// Deliver `partition` from `from` until `stop`, the endpoint is gone, or (with an `end`)
/// everything before `end` is done. Returns the 410 message when the endpoint is gone.
pub(crate) async fn deliver(
    ctx: Arc<RunCtx>,
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
