//! The materializer: one task per partition of `objects` reads durable records from the index's
//! applied offset on, and commits them to the index in batches. Progress is published so that
//! queries can wait until the index has caught up with what was acknowledged before them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{Batch, ObjectIndex};
use crate::codec::EventCodec;
use crate::log::Log;
use crate::{OBJECTS_TOPIC, Result};

/// Records per index commit at most.
const MAX_BATCH: usize = 20_000;
/// How long a read waits at the end of a partition before looking again.
const IDLE_WAIT: Duration = Duration::from_millis(500);

pub struct Materializer {
    log: Arc<dyn Log>,
    index: Arc<ObjectIndex>,
    codec: Arc<EventCodec>,
    /// Next offset the index will apply, per partition.
    applied: watch::Sender<BTreeMap<u32, u64>>,
}

impl Materializer {
    pub fn new(log: Arc<dyn Log>, index: Arc<ObjectIndex>, codec: Arc<EventCodec>) -> Result<Arc<Materializer>> {
        let applied = index.applied()?;
        Ok(Arc::new(Materializer {
            log,
            index,
            codec,
            applied: watch::Sender::new(applied),
        }))
    }

    /// Start one task per partition; they run until the returned set is dropped.
    pub fn start(self: &Arc<Self>) -> Result<JoinSet<()>> {
        let mut tasks = JoinSet::new();
        for p in 0..self.log.partitions(OBJECTS_TOPIC)? {
            let me = self.clone();
            tasks.spawn(async move {
                loop {
                    if let Err(e) = me.follow(p).await {
                        tracing::error!(partition = p, "materializer failed: {e}; retrying in 1s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            });
        }
        Ok(tasks)
    }

    async fn follow(&self, p: u32) -> Result<()> {
        let range = self.log.offsets(OBJECTS_TOPIC, p).await?;
        let mut next = self.applied.borrow().get(&p).copied().unwrap_or(range.start);
        if next < range.start {
            tracing::error!(
                partition = p,
                "index needs offset {next} but the log starts at {}: records were removed by \
                 retention before being indexed; continuing from the log start",
                range.start
            );
            next = range.start;
        }
        loop {
            let records = self.log.read(OBJECTS_TOPIC, p, next, MAX_BATCH, IDLE_WAIT).await?;
            let Some(last) = records.last() else { continue };
            next = last.offset + 1;
            let mut batch = Batch::default();
            for rec in &records {
                match self.codec.decode(&rec.value) {
                    Ok(event) => batch.add(p, rec.offset, &event),
                    Err(e) => {
                        tracing::error!(partition = p, offset = rec.offset, "skipping undecodable record: {e}");
                        batch.skip(p, rec.offset);
                    }
                }
            }
            let index = self.index.clone();
            tokio::task::spawn_blocking(move || index.commit(batch))
                .await
                .expect("index commit task panicked")?;
            self.applied.send_modify(|m| {
                m.insert(p, next);
            });
        }
    }

    /// Wait until every partition has applied at least up to `targets` (next offsets).
    /// Returns false on timeout.
    pub async fn wait_for(&self, targets: &BTreeMap<u32, u64>, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        let caught_up = |m: &BTreeMap<u32, u64>| targets.iter().all(|(p, t)| *t == 0 || m.get(p).is_some_and(|a| a >= t));
        tokio::time::timeout(timeout, rx.wait_for(caught_up)).await.is_ok_and(|r| r.is_ok())
    }

    /// Records durable in the log but not yet in the index.
    pub async fn lag(&self) -> Result<u64> {
        let applied = self.applied.borrow().clone();
        let mut lag = 0;
        for p in 0..self.log.partitions(OBJECTS_TOPIC)? {
            let range = self.log.offsets(OBJECTS_TOPIC, p).await?;
            lag += range.end - applied.get(&p).copied().unwrap_or(range.start).max(range.start);
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
