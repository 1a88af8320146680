//! The node's one reader of the live log for every watcher: a tailer task per partition
//! decodes each new record once and broadcasts it, and its JSON is rendered once for every
//! watcher that shows it. Watchers never slow it down: the broadcast ring is bounded and
//! shared, and a watcher that misses part of it reads what it missed from the log itself (see
//! `pump.rs`). The tailers run only while someone watches: the first watcher starts them at
//! the log's end, and they stop within a second of the last one leaving (a watcher that comes
//! back reads what it missed from the log, by its cursor).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tidemark_core::OBJECTS_TOPIC;
use tidemark_core::codec::EventCodec;
use tidemark_core::event::ObjectEvent;
use tidemark_core::log::{Log, Record};
use tokio::sync::{Mutex, broadcast, watch};

/// Changes the broadcast ring holds: a watcher further behind reads from the log instead.
const RING: usize = 4096;

/// One record of the `objects` topic, decoded once for every watcher.
pub struct Change {
    pub partition: u32,
    pub offset: u64,
    /// `None`: the record cannot be decoded (logged once, by the tailer).
    pub event: Option<Arc<ObjectEvent>>,
    /// Its frame data, rendered by the first watcher that shows it: the full form and the
    /// `notify_only` form.
    full: OnceLock<Arc<str>>,
    notify: OnceLock<Arc<str>>,
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
            full: OnceLock::new(),
            notify: OnceLock::new(),
        }
    }

    /// The event's JSON as `log tail --json` prints it (or its notification form), with its
    /// partition and offset; rendered once for all watchers. `None` when not decoded.
    pub fn data(&self, notify_only: bool) -> Option<Arc<str>> {
        let event = self.event.as_deref()?;
        let cell = if notify_only {
            &self.notify
        } else {
            &self.full
        };
        Some(
            cell.get_or_init(|| render(self, event, notify_only).to_string().into())
                .clone(),
        )
    }
}

fn render(change: &Change, event: &ObjectEvent, notify_only: bool) -> serde_json::Value {
    let mut v = if notify_only {
        serde_json::json!({
            "event_type": event.event_type.as_str(),
            "event_time": tidemark_core::time::format_us(event.event_time),
            "bucket": event.bucket,
            "key": event.key,
            "version_id": event.version_id,
            "sequence": event.sequence,
        })
    } else {
        event.to_json()
    };
    v["partition"] = change.partition.into();
    v["offset"] = change.offset.into();
    v
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
    /// Which partitions' tailers run. Held while a tailer decides to stop and while a watcher
    /// joins, so a watcher never joins a tailer that is leaving.
    tailing: Mutex<Vec<bool>>,
    /// How many of them run (for `/metrics`, without taking the lock).
    running: AtomicU64,
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
            tailing: Mutex::new(vec![false; partitions as usize]),
            running: AtomicU64::new(0),
            closing: watch::channel(false).0,
            stats: WatchStats::default(),
        })
    }

    /// Join the broadcast, starting the tailers that do not run (at the log's end).
    /// Everything a tailer publishes after this returns reaches the receiver (or shows up as
    /// a lag); what came before, the watcher reads from the log.
    pub async fn subscribe(
        self: &Arc<Self>,
    ) -> tidemark_core::Result<broadcast::Receiver<Arc<Change>>> {
        let mut tailing = self.tailing.lock().await;
        let rx = self.tx.subscribe();
        for p in 0..self.partitions {
            if tailing[p as usize] {
                continue;
            }
            let end = self.log.offsets(OBJECTS_TOPIC, p).await?.end;
            // Heads only move forward: watchers' lag is measured against them.
            self.heads[p as usize].fetch_max(end, Ordering::Relaxed);
            tailing[p as usize] = true;
            self.running.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(self.clone().tail(p));
        }
        Ok(rx)
    }

    /// Partitions being tailed now (for `/metrics`).
    pub fn tailers(&self) -> u64 {
        self.running.load(Ordering::Relaxed)
    }

    /// Stop `partition`'s tailer if nobody watches; decided under the lock watchers join
    /// with.
    async fn leave_if_unwatched(&self, partition: u32) -> bool {
        if self.tx.receiver_count() > 0 {
            return false;
        }
        let mut tailing = self.tailing.lock().await;
        if self.tx.receiver_count() > 0 {
            return false;
        }
        tailing[partition as usize] = false;
        self.running.fetch_sub(1, Ordering::Relaxed);
        true
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
            if self.leave_if_unwatched(partition).await {
                return;
            }
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
                // No receiver is fine: the tailer stops at its next round.
                let _ = self.tx.send(change);
                self.heads[partition as usize].fetch_max(next, Ordering::Relaxed);
            }
        }
    }
}
