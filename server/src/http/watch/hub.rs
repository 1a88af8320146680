//! The node's one reader of the live log for every watcher: a tailer task per partition
//! decodes each new record once and broadcasts it. Watchers never slow it down: the broadcast
//! ring is bounded and shared, and a watcher that misses part of it reads what it missed from
//! the log itself (see `pump.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tidemark_core::OBJECTS_TOPIC;
use tidemark_core::codec::EventCodec;
use tidemark_core::event::ObjectEvent;
use tidemark_core::log::{Log, Record};
use tokio::sync::{OnceCell, broadcast, watch};

/// Changes the broadcast ring holds: a watcher further behind reads from the log instead.
const RING: usize = 4096;

/// One record of the `objects` topic, decoded once for every watcher.
pub struct Change {
    pub partition: u32,
    pub offset: u64,
    /// `None`: the record cannot be decoded (logged once, by the tailer).
    pub event: Option<Arc<ObjectEvent>>,
}

impl Change {
    pub fn decode(codec: &EventCodec, rec: Record) -> Change {
        let event = match codec.decode(&rec.value) {
            Ok(e) => Some(Arc::new(e)),
            Err(e) => {
                tracing::warn!(
                    partition = rec.partition,
                    offset = rec.offset,
                    "watch: record cannot be decoded, not shown to watchers: {e}"
                );
                None
            }
        };
        Change {
            partition: rec.partition,
            offset: rec.offset,
            event,
        }
    }
}

/// Watcher counts for `/metrics`.
#[derive(Default)]
pub struct WatchStats {
    /// Open watch streams (SSE and WebSocket).
    pub connections: AtomicI64,
    /// Watchers cut off because they fell behind or stopped reading, and their reason.
    pub cut_lag: AtomicU64,
    pub cut_stalled: AtomicU64,
}

pub struct Hub {
    pub log: Arc<dyn Log>,
    pub codec: Arc<EventCodec>,
    pub partitions: u32,
    /// Events a watcher may fall behind the log (appended since it connected) before it is cut
    /// off (`serve --watch-max-lag-events`).
    pub max_lag: u64,
    tx: broadcast::Sender<Arc<Change>>,
    /// Next offset each partition's tailer publishes: what watchers measure their lag against.
    heads: Vec<AtomicU64>,
    started: OnceCell<()>,
    /// Turns true when the server shuts down: every watch stream ends.
    closing: watch::Sender<bool>,
    pub stats: WatchStats,
}

impl Hub {
    pub fn new(log: Arc<dyn Log>, codec: Arc<EventCodec>, max_lag: u64) -> Arc<Hub> {
        let partitions = log.partitions(OBJECTS_TOPIC).unwrap_or(1);
        Arc::new(Hub {
            log,
            codec,
            partitions,
            max_lag,
            tx: broadcast::channel(RING).0,
            heads: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            started: OnceCell::new(),
            closing: watch::channel(false).0,
            stats: WatchStats::default(),
        })
    }

    /// Join the broadcast, starting the tailers on first use. Everything a tailer publishes
    /// after this returns reaches the receiver (or shows up as a lag).
    pub async fn subscribe(
        self: &Arc<Self>,
    ) -> tidemark_core::Result<broadcast::Receiver<Arc<Change>>> {
        self.started
            .get_or_try_init(|| async {
                for p in 0..self.partitions {
                    let end = self.log.offsets(OBJECTS_TOPIC, p).await?.end;
                    self.heads[p as usize].store(end, Ordering::Relaxed);
                }
                for p in 0..self.partitions {
                    tokio::spawn(self.clone().tail(p));
                }
                Ok::<_, tidemark_core::Error>(())
            })
            .await?;
        Ok(self.tx.subscribe())
    }

    /// Next offset published, per partition.
    pub fn heads(&self) -> impl Iterator<Item = u64> + '_ {
        self.heads.iter().map(|h| h.load(Ordering::Relaxed))
    }

    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// End every watch stream (graceful shutdown must not wait for them).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    async fn tail(self: Arc<Self>, partition: u32) {
        let mut closing = self.closing();
        let mut next = self.heads[partition as usize].load(Ordering::Relaxed);
        while !*closing.borrow() {
            let read = self
                .log
                .read(OBJECTS_TOPIC, partition, next, 512, Duration::from_secs(1));
            let records = tokio::select! {
                r = read => r,
                _ = closing.changed() => return,
            };
            let records = match records {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(partition, "watch: reading the log: {e}; retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            for rec in records {
                next = rec.offset + 1;
                let change = Arc::new(Change::decode(&self.codec, rec));
                // No receiver is fine: nobody watches now.
                let _ = self.tx.send(change);
                self.heads[partition as usize].store(next, Ordering::Relaxed);
            }
        }
    }
}
