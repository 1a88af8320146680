//! Feeding stream sinks: the engine's side of a [`Feed`] (reading, dead letters, positions),
//! the worker that hands one live partition to a stream sink, and a replay's backfill.
//!
//! The engine does not know which stream sink it feeds. What it keeps for every one: a
//! failed write is recorded (log, status) and the partition starts over from its committed
//! position after a pause that doubles up to 30 s; a replay's feed never moves the position.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tidemark_core::OBJECTS_TOPIC;
use tidemark_core::event::{EventType, ObjectEvent};
use tidemark_core::log::Position;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::context::RunCtx;
use super::reader::{self, Chunk};
use crate::filtering::{Decision, Filtering, OnFilterError};
use crate::sink::{Batch, Feed, LiveObject, LiveScan, Source, StreamSink};
use crate::stats::LastError;
use crate::{Error, Result};

/// A reader task and what it hands over; the task ends with it.
struct Reading {
    chunks: mpsc::Receiver<Chunk>,
    task: JoinHandle<()>,
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One partition of a run, as a feed reads it.
struct PartitionSource {
    ctx: Arc<RunCtx>,
    partition: u32,
    reading: Option<Reading>,
    /// A chunk received and not yet handed over: its failures are being dead-lettered.
    held: Option<Chunk>,
}

impl Source for PartitionSource {
    fn read(&mut self, from: u64, end: Option<u64>) {
        let (tx, chunks) = mpsc::channel(4);
        let task = tokio::spawn(reader::read(
            self.ctx.clone(),
            self.partition,
            from,
            end,
            tx,
        ));
        self.held = None;
        self.reading = Some(Reading { chunks, task });
    }

    fn next(&mut self) -> BoxFuture<'_, Option<Batch>> {
        async move {
            if self.held.is_none() {
                let reading = self.reading.as_mut()?;
                self.held = Some(reading.chunks.recv().await?);
            }
            let chunk = self.held.as_mut().expect("held above");
            reader::dead_letter_failures(&self.ctx, self.partition, chunk).await;
            let chunk = self.held.take().expect("held above");
            Some(Batch {
                deliveries: chunk.deliveries,
                next: chunk.next,
                caught_up: chunk.caught_up,
            })
        }
        .boxed()
    }

    fn dead_letter(&self, offset: u64, wire: bytes::Bytes, error: String) -> BoxFuture<'_, ()> {
        reader::dead_letter_undecodable(&self.ctx, self.partition, offset, wire, error).boxed()
    }

    fn commit(&self, position: u64) -> BoxFuture<'_, Result<()>> {
        async move {
            // A replay never moves the subscription's position.
            if self.ctx.replay.is_some() {
                return Ok(());
            }
            let ctx = &self.ctx;
            ctx.log
                .commit(&ctx.consumer, OBJECTS_TOPIC, self.partition, position)
                .await?;
            Ok(())
        }
        .boxed()
    }

    fn position(&self) -> BoxFuture<'_, Result<Option<u64>>> {
        async move {
            let ctx = &self.ctx;
            let committed = ctx
                .log
                .committed(&ctx.consumer, OBJECTS_TOPIC, self.partition)
                .await?;
            Ok(committed.or_else(|| self.subscription_start()))
        }
        .boxed()
    }

    fn log_start(&self) -> BoxFuture<'_, Result<u64>> {
        async move {
            let range = self.ctx.log.offsets(OBJECTS_TOPIC, self.partition).await?;
            Ok(range.start)
        }
        .boxed()
    }

    fn subscription_start(&self) -> Option<u64> {
        self.ctx.start_offsets.get(&self.partition).copied()
    }

    fn live_objects(&self, at_least: u64) -> Option<LiveScan> {
        let index = self.ctx.objects.clone()?;
        let (raw, objects) = (mpsc::channel(2), mpsc::channel(2));
        let (raw_tx, raw_rx) = raw;
        let (tx, rx) = objects;
        let scan = {
            let partition = self.partition;
            async move { index.scan(partition, at_least, raw_tx).await }
        };
        let kept = keep_live(self.ctx.clone(), raw_rx, tx);
        let applied = tokio::spawn(async move {
            let (applied, kept) = tokio::join!(scan, kept);
            kept?;
            applied
        });
        Some(LiveScan {
            objects: rx,
            applied,
        })
    }
}

/// The live objects the subscription's rules and filter keep, each as the creation event of
/// its state. A filter that fails on one follows `on_filter_error`, except that nothing is
/// dead-lettered (there is no record to keep): such an object is left out, and logged.
async fn keep_live(
    ctx: Arc<RunCtx>,
    mut raw: mpsc::Receiver<Vec<LiveObject>>,
    out: mpsc::Sender<Vec<(Arc<ObjectEvent>, Position)>>,
) -> Result<()> {
    let mut filtering = ctx.filter.clone().map(Filtering::new);
    while let Some(chunk) = raw.recv().await {
        let mut kept: Vec<(Arc<ObjectEvent>, Position)> = Vec::with_capacity(chunk.len());
        for (log_key, head, at) in chunk {
            let Some(state) = head.state else { continue };
            let (bucket, key) = log_key.split_once('/').unwrap_or((&log_key, ""));
            let event = ObjectEvent::new(
                head.event_id,
                EventType::ObjectCreatedPut,
                state.last_modified,
                bucket.to_string(),
                key.to_string(),
                head.sequence,
                Some(state),
            );
            if ctx.rule.matches(&event) {
                kept.push((Arc::new(event), at));
            }
        }
        if let Some(f) = &mut filtering
            && !kept.is_empty()
        {
            f.prepare()
                .await
                .map_err(|e| Error::Transient(format!("the filter is not available: {e}")))?;
            let decisions = f.decide(kept.iter().map(|k| k.0.clone()).collect()).await;
            if decisions.len() < kept.len() {
                return Err(Error::Transient(
                    "the filter stopped while reading the live objects".into(),
                ));
            }
            let on_error = f.context().on_error;
            let all = std::mem::take(&mut kept);
            for (object, decision) in all.into_iter().zip(decisions) {
                match decision {
                    Decision::Keep => kept.push(object),
                    Decision::Drop => {}
                    Decision::Failed(kind, message) => match on_error {
                        OnFilterError::Deliver => kept.push(object),
                        _ => tracing::warn!(
                            subscription = ctx.name,
                            "the filter failed ({kind}) on live object {}/{}: {message}; \
                             left out",
                            object.0.bucket,
                            object.0.key
                        ),
                    },
                }
            }
        }
        if out.send(kept).await.is_err() {
            return Err(Error::Transient("the live objects' reader stopped".into()));
        }
    }
    Ok(())
}

fn feed(ctx: &Arc<RunCtx>, partition: u32, stop: watch::Receiver<bool>) -> Feed {
    let source = PartitionSource {
        ctx: ctx.clone(),
        partition,
        reading: None,
        held: None,
    };
    Feed::new(
        partition,
        ctx.name.clone(),
        Box::new(source),
        stop,
        ctx.stats.clone(),
    )
}

/// A failure the worker will retry (or a replay reports), in the log and in status.
fn failed(ctx: &RunCtx, partition: u32, e: &Error) {
    tracing::error!(subscription = ctx.name, partition, "{e}");
    ctx.stats.failed(LastError {
        at: tidemark_core::time::format_us(tidemark_core::time::now_us()),
        message: e.to_string(),
        status: None,
        attempt: 0,
    });
}

/// Feed `partition` to `sink` from its committed position until `stop`.
pub(super) async fn run(
    ctx: Arc<RunCtx>,
    sink: Arc<dyn StreamSink>,
    partition: u32,
    mut stop: watch::Receiver<bool>,
) {
    let mut pause = Duration::from_millis(200);
    loop {
        let Some(from) = reader::start_offset_or_stop(&ctx, partition, &mut stop).await else {
            return;
        };
        let mut feed = feed(&ctx, partition, stop.clone());
        feed.read(from, None);
        let written = sink.clone().write(&mut feed).await;
        drop(feed);
        if *stop.borrow() {
            return;
        }
        if let Err(e) = written {
            failed(&ctx, partition, &e);
        }
        // A failed write: start over from the committed position after a pause.
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

/// A replay: `sink` writes `range` of `partition` again; ends early when `stop` turns true.
pub(super) async fn backfill(
    ctx: Arc<RunCtx>,
    sink: Arc<dyn StreamSink>,
    partition: u32,
    range: Range<u64>,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut feed = feed(&ctx, partition, stop);
    let written = sink.backfill(&mut feed, range).await;
    if let Err(e) = &written {
        failed(&ctx, partition, e);
    }
    written
}
