//! Re-delivering ranges of the log through a subscription, for a replay job.
//!
//! A replay runs the subscription's current rules, filter and sink (marked with the job id,
//! so receivers can tell re-deliveries apart) over fixed offset ranges, one worker per
//! partition with the same per-key lanes as live delivery. It has its own counters and never
//! commits a position: the live delivery goes on beside it, untouched, and several replays of
//! one subscription do not see each other. Events that exhaust their retries go to the
//! subscription's dead letters, with the job named in the error.
//!
//! A stream sink is not re-sent anything: it backfills the range itself
//! ([`crate::sink::StreamSink::backfill`]; the lake writes only files that are missing).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::time::Instant;

use super::context::{RunCtx, Target};
use super::{Engine, feed, partition, reader};
use crate::stats::Stats;
use crate::{Error, Result};

/// What marks a run as a replay.
pub struct ReplayMark {
    pub id: String,
    /// `--rate`: the most events per second this replay sends.
    pub pace: Option<Pace>,
}

/// Spaces sends evenly at a rate: each send reserves the next free slot.
pub struct Pace {
    per_event: Duration,
    next: Mutex<Instant>,
}

impl Pace {
    pub fn new(per_second: f64) -> Pace {
        Pace {
            per_event: Duration::from_secs_f64(1.0 / per_second),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Wait for the slot of `n` events.
    pub async fn wait(&self, n: usize) {
        let start = {
            let mut next = self.next.lock().await;
            let start = (*next).max(Instant::now());
            *next = start + self.per_event * n as u32;
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

/// Where a replay is: records gone through of the total, and what became of the matches.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayProgress {
    /// Log records gone through (matching or not).
    pub done: u64,
    pub total: u64,
    pub delivered: u64,
    pub dead_lettered: u64,
    /// Records the rules did not match.
    pub skipped: u64,
    pub filtered_out: u64,
    pub filter_failed: u64,
    pub failed_attempts: u64,
    /// Stream sinks' backfills: files written now (files already there are not written
    /// again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lake_files: Option<u64>,
}

/// `--dry-run`: what a replay would send.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DryRun {
    /// Matching events per event type.
    pub by_type: BTreeMap<String, u64>,
    pub matched: u64,
    pub skipped: u64,
    pub filtered_out: u64,
    /// The first matching events, in log order per partition.
    pub first: Vec<serde_json::Value>,
}

/// A prepared replay of a subscription over offset ranges.
pub struct Replay {
    ctx: Arc<RunCtx>,
    ranges: BTreeMap<u32, Range<u64>>,
}

impl Engine {
    /// Prepare replay `id` of subscription `name` over `ranges` (per partition of `objects`,
    /// end exclusive), at most `rate` events per second.
    pub fn replay(
        &self,
        name: &str,
        id: &str,
        ranges: BTreeMap<u32, Range<u64>>,
        rate: Option<f64>,
    ) -> Result<Replay> {
        let sub = self.subscriptions.get(name)?;
        let mark = Arc::new(ReplayMark {
            id: id.to_string(),
            pace: rate.map(Pace::new),
        });
        Ok(Replay::of(self.context(&sub, Some(mark))?, ranges))
    }
}

impl Replay {
    /// A replay of `ranges` by `ctx`, a run marked as this replay's.
    pub(crate) fn of(ctx: RunCtx, ranges: BTreeMap<u32, Range<u64>>) -> Replay {
        Replay {
            ctx: Arc::new(ctx),
            ranges,
        }
    }

    pub fn progress(&self) -> ReplayProgress {
        let s = &self.ctx.stats;
        let mut done = 0;
        let mut total = 0;
        for (p, r) in &self.ranges {
            total += r.end - r.start;
            if let Some(at) = s.position(*p) {
                done += at.clamp(r.start, r.end) - r.start;
            }
        }
        ReplayProgress {
            done,
            total,
            delivered: Stats::get(&s.delivered),
            dead_lettered: Stats::get(&s.dead_lettered),
            skipped: Stats::get(&s.skipped),
            filtered_out: Stats::get(&s.filtered_out),
            filter_failed: Stats::get(&s.filter_failed),
            failed_attempts: Stats::get(&s.failed_attempts),
            lake_files: matches!(self.ctx.target, Target::Stream(_))
                .then(|| Stats::get(&s.lake_files)),
        }
    }

    /// Per partition delivered to a request sink, the offset before which every event of its
    /// range is done (delivered or dead-lettered): where a resumed replay may start without
    /// skipping anything. Partitions not started yet are left out, and so is a stream sink's
    /// backfill, which is redone whole (it writes only the files that are missing).
    pub fn positions(&self) -> BTreeMap<u32, u64> {
        if matches!(self.ctx.target, Target::Stream(_)) {
            return BTreeMap::new();
        }
        self.ranges
            .iter()
            .filter_map(|(p, r)| {
                let at = self.ctx.stats.position(*p)?;
                Some((*p, at.clamp(r.start, r.end)))
            })
            .collect()
    }

    /// Re-deliver every range; ends when all are done or `stop` turns true. An endpoint that
    /// answers 410 Gone ends the replay with an error; so does a stream sink's failed
    /// backfill (with its kind: transient, the sink's settings, or an event's data).
    pub async fn run(&self, stop: watch::Receiver<bool>) -> Result<()> {
        let mut workers = tokio::task::JoinSet::new();
        for (p, r) in &self.ranges {
            if r.is_empty() {
                continue;
            }
            workers.spawn(run_range(self.ctx.clone(), *p, r.clone(), stop.clone()));
        }
        let mut failure = None;
        while let Some(done) = workers.join_next().await {
            let outcome = done.unwrap_or_else(|e| {
                Err(Error::Unavailable(format!("a replay worker failed: {e}")))
            });
            if let Err(e) = outcome {
                failure.get_or_insert(e);
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Read the ranges through the rules and filter without sending anything: counts per
    /// event type and the first `first` matches.
    pub async fn dry_run(&self, mut stop: watch::Receiver<bool>, first: usize) -> DryRun {
        let mut out = DryRun::default();
        for (p, r) in &self.ranges {
            if r.is_empty() {
                continue;
            }
            let (tx, mut rx) = mpsc::channel(4);
            let reader = tokio::spawn(reader::read(self.ctx.clone(), *p, r.start, Some(r.end), tx));
            let live = self.ctx.stats.live_position(*p);
            loop {
                tokio::select! {
                    chunk = rx.recv() => {
                        let Some(chunk) = chunk else { break };
                        for d in &chunk.deliveries {
                            // A sink that reads views gets records unchecked (the reader may
                            // have read their leading fields only): a damaged one is no match.
                            let Ok(e) = d.view() else { continue };
                            *out.by_type.entry(e.event_type.as_str().to_string()).or_default() += 1;
                            out.matched += 1;
                            if out.first.len() < first {
                                let mut e = e.to_event().to_json();
                                e["partition"] = (*p).into();
                                e["offset"] = d.offset.into();
                                out.first.push(e);
                            }
                        }
                        live.store(chunk.next, Ordering::Relaxed);
                    }
                    _ = stop.changed() => break,
                }
            }
            reader.abort();
            if *stop.borrow() {
                break;
            }
        }
        out.skipped = Stats::get(&self.ctx.stats.skipped);
        out.filtered_out = Stats::get(&self.ctx.stats.filtered_out);
        out
    }
}

/// Replay `range` of `partition` through the run's sink.
async fn run_range(
    ctx: Arc<RunCtx>,
    partition: u32,
    range: Range<u64>,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    match &ctx.target {
        Target::Stream(sink) => {
            feed::backfill(ctx.clone(), sink.clone(), partition, range, stop).await
        }
        Target::Request(to) => {
            let to = to.clone();
            match partition::deliver(ctx, to, partition, range.start, Some(range.end), stop).await {
                Some(gone) => Err(Error::Unavailable(format!(
                    "the endpoint is gone (410): {gone}"
                ))),
                None => Ok(()),
            }
        }
    }
}
