//! The materializer: one task follows every partition of `objects` from the index's applied
//! offsets and commits what it read to the index. Under load it commits large batches (each
//! commit rewrites every index page it touches, so fewer, larger commits write far less), and
//! decoding the next batch overlaps with committing the previous one. Progress is published so
//! queries can wait until the index has caught up with what was acknowledged before them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::{Batch, ObjectIndex};
use crate::codec::EventCodec;
use crate::log::{Log, Record};
use crate::{Error, OBJECTS_TOPIC, Result};

/// Records per index commit at most.
const MAX_BATCH: usize = 100_000;
/// How long a read waits at the end of the log before looking again.
const IDLE_WAIT: Duration = Duration::from_millis(500);

pub struct Materializer {
    log: Arc<dyn Log>,
    index: Arc<ObjectIndex>,
    codec: Arc<EventCodec>,
    /// Next offset the index will apply, per partition.
    applied: watch::Sender<BTreeMap<u32, u64>>,
}

/// A commit running on the blocking pool, and the offsets it makes applied.
type Pending = (JoinHandle<Result<()>>, BTreeMap<u32, u64>);

impl Materializer {
    pub fn new(
        log: Arc<dyn Log>,
        index: Arc<ObjectIndex>,
        codec: Arc<EventCodec>,
    ) -> Result<Arc<Materializer>> {
        let applied = index.applied()?;
        Ok(Arc::new(Materializer {
            log,
            index,
            codec,
            applied: watch::Sender::new(applied),
        }))
    }

    /// Start following the log; runs until the returned set is dropped.
    pub fn start(self: &Arc<Self>) -> Result<JoinSet<()>> {
        let mut tasks = JoinSet::new();
        let me = self.clone();
        tasks.spawn(async move {
            loop {
                match me.follow().await {
                    Err(Error::Shutdown) => return,
                    Err(e) => {
                        tracing::error!("materializer failed: {e}; retrying in 1s");
                        // After a failed commit redb refuses everything until it is opened
                        // again (a full disk): reopen, so reads work meanwhile and commits
                        // resume once there is space.
                        if matches!(e, Error::Index { .. } | Error::StorageFull(_)) {
                            let index = me.index.clone();
                            let reopened =
                                tokio::task::spawn_blocking(move || index.reopen()).await;
                            if let Ok(Err(e)) = reopened {
                                tracing::error!("cannot reopen the index: {e}");
                            }
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Ok(()) => return,
                }
            }
        });
        Ok(tasks)
    }

    async fn follow(&self) -> Result<()> {
        let partitions = self.log.partitions(OBJECTS_TOPIC)?;
        // Resume from what the index holds durably: after a failed run, that is the truth.
        let applied = {
            let index = self.index.clone();
            crate::blocking::blocking(move || index.applied()).await?
        };
        let mut next = BTreeMap::new();
        for p in 0..partitions {
            let range = self.log.offsets(OBJECTS_TOPIC, p).await?;
            let mut n = applied.get(&p).copied().unwrap_or(range.start);
            if n < range.start {
                tracing::error!(
                    partition = p,
                    "index needs offset {n} but the log starts at {}: records were removed by \
                     retention before being indexed; continuing from the log start",
                    range.start
                );
                n = range.start;
            }
            next.insert(p, n);
        }
        let mut pending: Option<Pending> = None;
        loop {
            // With a commit in flight, only take what is already there, so that commit is
            // published as soon as it is done.
            let wait = if pending.is_some() {
                Duration::ZERO
            } else {
                IDLE_WAIT
            };
            let collected = self.collect(&mut next, wait).await;
            // Finish the commit in flight before anything else, even when reading failed: a
            // restart resumes from the index, which must then include it, or its records would
            // be applied twice (and a key's history would point back at itself).
            if let Some((handle, applied)) = pending.take() {
                crate::blocking::join(handle).await?;
                self.applied.send_replace(applied);
            }
            let batch = collected?;
            if !batch.is_empty() {
                let index = self.index.clone();
                pending = Some((
                    tokio::task::spawn_blocking(move || index.commit(batch)),
                    next.clone(),
                ));
            }
        }
    }

    /// Read and decode up to `MAX_BATCH` records from all partitions, waiting up to `wait` for
    /// the first one.
    async fn collect(&self, next: &mut BTreeMap<u32, u64>, wait: Duration) -> Result<Batch> {
        let mut batch = Batch::default();
        for (p, from) in next.iter_mut() {
            let records = self
                .log
                .read(
                    OBJECTS_TOPIC,
                    *p,
                    *from,
                    MAX_BATCH - batch.len(),
                    Duration::ZERO,
                )
                .await?;
            self.add(&mut batch, *p, from, records);
            if batch.len() >= MAX_BATCH {
                return Ok(batch);
            }
        }
        if batch.is_empty() && !wait.is_zero() {
            // Idle: wait on every partition at once; the first to receive records wins.
            let reads = next.iter().map(|(p, from)| {
                let p = *p;
                self.log
                    .read(OBJECTS_TOPIC, p, *from, MAX_BATCH, wait)
                    .map(move |r| (p, r))
            });
            let ((p, records), _, _) = futures::future::select_all(reads).await;
            let from = next.get_mut(&p).expect("known partition");
            self.add(&mut batch, p, from, records?);
        }
        Ok(batch)
    }

    fn add(&self, batch: &mut Batch, p: u32, from: &mut u64, records: Vec<Record>) {
        for rec in &records {
            // Each offset is applied once: a record below the position was applied already.
            if rec.offset < *from {
                tracing::warn!(
                    partition = p,
                    offset = rec.offset,
                    next = *from,
                    "ignoring a record the index has applied"
                );
                continue;
            }
            match self.codec.decode_for_index(&rec.value) {
                Ok(event) => batch.add(p, rec.offset, event),
                Err(e) => {
                    tracing::error!(
                        partition = p,
                        offset = rec.offset,
                        "skipping undecodable record: {e}"
                    );
                    batch.skip(p, rec.offset);
                }
            }
        }
        if let Some(last) = records.last() {
            *from = (*from).max(last.offset + 1);
        }
    }

    /// Wait until every partition has applied at least up to `targets` (next offsets).
    /// Returns false on timeout.
    pub async fn wait_for(&self, targets: &BTreeMap<u32, u64>, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        let caught_up = |m: &BTreeMap<u32, u64>| {
            targets
                .iter()
                .all(|(p, t)| *t == 0 || m.get(p).is_some_and(|a| a >= t))
        };
        tokio::time::timeout(timeout, rx.wait_for(caught_up))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Next offset the index will apply, per partition, updated as each commit lands (index
    /// snapshots are taken every so many applied events).
    pub fn subscribe_applied(&self) -> watch::Receiver<BTreeMap<u32, u64>> {
        self.applied.subscribe()
    }

    /// Records durable in the log but not yet in the index.
    pub async fn lag(&self) -> Result<u64> {
        Ok(self.lag_by_partition().await?.values().sum())
    }

    /// Per partition of `objects`: records durable in the log but not yet in the index.
    pub async fn lag_by_partition(&self) -> Result<BTreeMap<u32, u64>> {
        let applied = self.applied.borrow().clone();
        let mut lag = BTreeMap::new();
        for p in 0..self.log.partitions(OBJECTS_TOPIC)? {
            let range = self.log.offsets(OBJECTS_TOPIC, p).await?;
            let done = applied
                .get(&p)
                .copied()
                .unwrap_or(range.start)
                .max(range.start);
            lag.insert(p, range.end.saturating_sub(done));
        }
        Ok(lag)
    }

    /// The log's current end offsets: what a query should wait for to see all acknowledged writes.
    pub async fn log_ends(&self) -> Result<BTreeMap<u32, u64>> {
        let mut out = BTreeMap::new();
        for p in 0..self.log.partitions(OBJECTS_TOPIC)? {
            out.insert(p, self.log.offsets(OBJECTS_TOPIC, p).await?.end);
        }
        Ok(out)
    }
}
