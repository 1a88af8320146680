//! Reading one partition for a subscription, whatever consumes it: a reader task reads the
//! log from a position, decodes each record, matches it against the rules, runs the WASM
//! filter, and hands over chunks of matches in log order. What cannot be handed over
//! (undecodable records, events the filter failed on) goes to the dead-letter queue before
//! the position may move past it: nothing is skipped silently.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tidemark_core::OBJECTS_TOPIC;
use tokio::sync::{mpsc, watch};

use super::context::{RunCtx, Target};
use super::dead_letters::DeadLetter;
use super::retry;
use crate::filtering::{self, Decision, Filtering, OnFilterError};
use crate::sink::Delivery;

/// What the reader hands over: the matches of a stretch of the log, and where it ends.
pub(crate) struct Chunk {
    pub deliveries: Vec<Arc<Delivery>>,
    /// Records that could not be decoded: dead-lettered, never skipped silently.
    pub undecodable: Vec<(u64, Bytes, String)>,
    /// Events the filter failed on, for the dead-letter queue (`on_filter_error`).
    pub filter_failed: Vec<(Arc<Delivery>, String)>,
    pub next: u64,
    /// The read that gave this chunk got fewer records than it asked for: the reader had
    /// reached the end of the log at that moment.
    pub caught_up: bool,
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

/// [`start_offset`], asked again every second until the log answers; `None` when `stop`
/// turns true first.
pub(crate) async fn start_offset_or_stop(
    ctx: &RunCtx,
    partition: u32,
    stop: &mut watch::Receiver<bool>,
) -> Option<u64> {
    loop {
        match start_offset(ctx, partition).await {
            Ok(o) => return Some(o),
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
    }
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
    let mut filtering = ctx.filter.clone().map(Filtering::new);
    // Records only viewed, never decoded, for a sink that copies fields and no filter.
    let views = filtering.is_none() && matches!(&ctx.target, Target::Stream(s) if s.reads_views());
    // Rules on the leading fields alone: the record's one full read (and check) is the sink's.
    let summaries = views && ctx.rule.tests_only_summary();
    // No rule at all: a record of the current schema is handed over unread.
    let unread = summaries && ctx.rule.takes_every_event();
    loop {
        if end.is_some_and(|end| next >= end) {
            return;
        }
        if let Some(f) = &mut filtering
            && f.prepare().await.is_err()
        {
            // Paused: the filter is quarantined or unavailable; nothing is handed over.
            tokio::time::sleep(filtering::RETRY).await;
            continue;
        }
        let want = end.map_or(512, |end| (end - next).min(512) as usize);
        let records = match ctx
            .log
            .read(
                OBJECTS_TOPIC,
                partition,
                next,
                want,
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
            caught_up: records.len() < want,
        };
        let mut skipped = 0;
        for rec in records {
            // Another schema or layout, or a damaged record, gives no summary or view: the
            // full decoder decides.
            let matched = if unread {
                ctx.codec.is_current(&rec.value).then_some(true)
            } else if summaries {
                ctx.codec
                    .summary(&rec.value)
                    .ok()
                    .flatten()
                    .map(|s| ctx.rule.matches_summary(&s))
            } else if views {
                ctx.codec
                    .view(&rec.value)
                    .ok()
                    .flatten()
                    .map(|v| ctx.rule.matches_view(&v))
            } else {
                None
            };
            match matched {
                Some(true) => {
                    chunk.deliveries.push(Arc::new(Delivery::undecoded(
                        partition, rec.offset, rec.key, rec.value,
                    )));
                    continue;
                }
                Some(false) => {
                    skipped += 1;
                    continue;
                }
                None => {}
            }
            match ctx.codec.decode(&rec.value) {
                Ok(event) if ctx.rule.matches(&event) => chunk.deliveries.push(Arc::new(
                    Delivery::new(partition, rec.offset, rec.key, Arc::new(event), rec.value),
                )),
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
            apply_filter(f, &mut chunk).await;
        }
        next = chunk.next;
        if out.send(chunk).await.is_err() {
            return;
        }
    }
}

/// Keep what the filter keeps; failures go where `on_filter_error` says. When the filter is
/// quarantined mid-chunk, the chunk ends at the event that did it.
async fn apply_filter(f: &mut Filtering, chunk: &mut Chunk) {
    let matched = std::mem::take(&mut chunk.deliveries);
    let events = matched.iter().map(|d| d.event().clone()).collect();
    let decisions = f.decide(events).await;
    if decisions.len() < matched.len() {
        chunk.next = match decisions.len() {
            // Nothing decided (the filter thread failed): read these again.
            0 => matched[0].offset,
            n => matched[n - 1].offset + 1,
        };
        chunk.undecodable.retain(|(o, _, _)| *o < chunk.next);
    }
    let on_error = f.context().on_error;
    for (d, decision) in matched.into_iter().zip(decisions) {
        match decision {
            Decision::Keep => chunk.deliveries.push(d),
            Decision::Drop => {}
            Decision::Failed(kind, message) => match on_error {
                OnFilterError::Deliver => chunk.deliveries.push(d),
                OnFilterError::Skip => {}
                OnFilterError::DeadLetter => chunk
                    .filter_failed
                    .push((d, format!("the filter failed ({kind}): {message}"))),
            },
        }
    }
}

/// Put the records a chunk could not hand over (undecodable, or the filter failed on them)
/// in the dead-letter queue, durably, before the position may move past them. Each leaves
/// the chunk once stored, so a call dropped midway (a stream sink racing its feed with a
/// timer) is resumed by the next one without losing any.
pub(crate) async fn dead_letter_failures(ctx: &RunCtx, partition: u32, chunk: &mut Chunk) {
    while let Some((offset, wire, error)) = chunk.undecodable.first().cloned() {
        dead_letter_undecodable(ctx, partition, offset, wire, error).await;
        chunk.undecodable.remove(0);
    }
    while let Some((delivery, error)) = chunk.filter_failed.first().cloned() {
        let letter = DeadLetter::new(&ctx.name, &delivery, 0, &error, None);
        retry::store_dead_letter(ctx, &letter).await;
        chunk.filter_failed.remove(0);
        ctx.stats
            .dead_lettered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

pub(crate) async fn dead_letter_undecodable(
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
