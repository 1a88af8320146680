//! One watcher: reads the log from its cursor (history first, then the hub's live changes),
//! keeps what its rule and filter keep, and hands frames to its connection through a small
//! bounded buffer.
//!
//! Invariants:
//! - the cursor moves past a record only once the record's frame (if any) is in the buffer,
//!   and every frame carries the cursor right after its record: no gap, no duplicate on resume;
//! - a record missing from the broadcast (the watcher lagged, or joined late) is read from the
//!   log, and one already passed is skipped: every record is looked at exactly once, in order
//!   per partition;
//! - the buffer is bounded and the pump waits on it (never the hub): a watcher that stops
//!   reading is cut off once it falls more than `--watch-max-lag-events` behind, or after
//!   [`STALL`] without room; it ends with a final error frame naming the reason and the id
//!   to resume from.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tidemark_core::OBJECTS_TOPIC;
use tidemark_core::rules::Rule;
use tidemark_sinks::filtering::Filtering;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::cursor::Cursor;
use super::hub::{Change, Hub};

/// Frames a watcher's buffer holds beyond what its socket holds.
const BUFFER: usize = 64;
/// A watcher whose buffer stays full this long is cut off even when few events arrive.
const STALL: Duration = Duration::from_secs(60);
/// Records read from the log at a time (history, gaps).
const READ_BATCH: usize = 512;

/// What a connection sends.
pub enum Frame {
    /// An event: the cursor after it, its type, and its JSON (shared by every watcher of a
    /// live change).
    Event {
        id: String,
        event_type: &'static str,
        data: Arc<str>,
    },
    Heartbeat,
    /// The last frame of a watcher that was cut off: `{"reason", "resume"}`.
    Error(Value),
}

/// What a watcher is asked to show.
pub struct Options {
    pub rule: Rule,
    pub filter: Option<Filtering>,
    /// Only key, type, bucket, version, sequence and time: "something changed, come and read".
    pub notify_only: bool,
    pub heartbeat: Duration,
}

/// The connection's end of a watcher.
pub struct Feed {
    rx: mpsc::Receiver<Frame>,
    /// Set by the pump before it ends when it cut the watcher off.
    cut: Arc<Mutex<Option<Value>>>,
}

impl Feed {
    /// The next frame; after the pump ended, its error frame if it was cut off, then `None`.
    pub async fn next(&mut self) -> Option<Frame> {
        match self.rx.recv().await {
            Some(frame) => Some(frame),
            None => self.cut.lock().unwrap().take().map(Frame::Error),
        }
    }
}

/// Why a pump stopped.
enum Stop {
    /// The connection is gone or the server is shutting down.
    Done,
    /// Cut off: a reason for the client, and whether it was for lag (else a stall or filter).
    Cut(String, bool),
}

struct Pump {
    hub: Arc<Hub>,
    options: Options,
    cursor: Cursor,
    /// The log's end when the watcher connected: history before it does not count as lag.
    joined: Vec<u64>,
    /// The id of the last event frame handed over.
    last_id: String,
    out: mpsc::Sender<Frame>,
    idle_since: Instant,
}

/// Start a watcher at `from`; `rx` must have been subscribed before `joined` (the log's end)
/// was read.
pub fn start(
    hub: Arc<Hub>,
    options: Options,
    from: Cursor,
    joined: Vec<u64>,
    rx: broadcast::Receiver<Arc<Change>>,
) -> Feed {
    let (out, frames) = mpsc::channel(BUFFER);
    let cut = Arc::new(Mutex::new(None));
    let pump = Pump {
        hub,
        options,
        last_id: from.to_string(),
        cursor: from,
        joined,
        out,
        idle_since: Instant::now(),
    };
    tokio::spawn(pump.run(rx, cut.clone()));
    Feed { rx: frames, cut }
}

impl Pump {
    async fn run(mut self, rx: broadcast::Receiver<Arc<Change>>, cut: Arc<Mutex<Option<Value>>>) {
        let stats = &self.hub.stats;
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let stop = self.follow(rx).await;
        let stats = &self.hub.stats;
        stats.connections.fetch_sub(1, Ordering::Relaxed);
        if let Stop::Cut(reason, lag) = stop {
            let counter = if lag {
                &stats.cut_lag
            } else {
                &stats.cut_stalled
            };
            counter.fetch_add(1, Ordering::Relaxed);
            tracing::info!(resume = self.last_id, "watcher cut off: {reason}");
            // Set before `out` is dropped: the feed reads it once the buffer is drained.
            *cut.lock().unwrap() = Some(json!({"reason": reason, "resume": self.last_id}));
        }
    }

    async fn follow(&mut self, mut rx: broadcast::Receiver<Arc<Change>>) -> Stop {
        match self.catch_up(self.joined.clone()).await {
            Ok(()) => {}
            Err(stop) => return stop,
        }
        let mut closing = self.hub.closing();
        loop {
            let beat = self.idle_since + self.options.heartbeat;
            let step = tokio::select! {
                r = rx.recv() => match r {
                    Ok(change) => self.live(change).await,
                    // Missed part of the ring: read it from the log.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let heads = self.hub.heads().collect();
                        self.catch_up(heads).await
                    }
                    Err(broadcast::error::RecvError::Closed) => Err(Stop::Done),
                },
                _ = tokio::time::sleep_until(beat) => self.heartbeat().await,
                _ = self.out.closed() => Err(Stop::Done),
                _ = closing.changed() => Err(Stop::Done),
            };
            if let Err(stop) = step {
                return stop;
            }
        }
    }

    async fn heartbeat(&mut self) -> Result<(), Stop> {
        // Also a safety net: anything published but not seen is read now.
        let heads = self.hub.heads().collect();
        self.catch_up(heads).await?;
        self.idle_since = Instant::now();
        match self.out.try_send(Frame::Heartbeat) {
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Stop::Done),
            // A full buffer needs no heartbeat.
            _ => Ok(()),
        }
    }

    async fn live(&mut self, change: Arc<Change>) -> Result<(), Stop> {
        let p = change.partition as usize;
        let at = self.cursor.0[p];
        if change.offset < at {
            return Ok(());
        }
        if change.offset > at {
            self.read_log(change.partition, change.offset).await?;
        }
        self.handle(vec![change]).await
    }

    /// Read every partition from the cursor up to `ends`.
    async fn catch_up(&mut self, ends: Vec<u64>) -> Result<(), Stop> {
        for (p, end) in ends.into_iter().enumerate() {
            self.read_log(p as u32, end).await?;
        }
        Ok(())
    }

    /// Read `partition` from the cursor up to `end` (exclusive) from the log.
    async fn read_log(&mut self, partition: u32, end: u64) -> Result<(), Stop> {
        while self.cursor.0[partition as usize] < end {
            // History that matches nothing sends nothing: notice a client that left anyway.
            if self.out.is_closed() {
                return Err(Stop::Done);
            }
            let from = self.cursor.0[partition as usize];
            let max = ((end - from) as usize).min(READ_BATCH);
            let records = self
                .hub
                .log
                .read(OBJECTS_TOPIC, partition, from, max, Duration::from_secs(1))
                .await
                .map_err(|e| {
                    Stop::Cut(
                        format!("reading partition {partition} of the log failed: {e}"),
                        false,
                    )
                })?;
            if records.is_empty() {
                // Not readable yet: the live changes or the next heartbeat bring it.
                return Ok(());
            }
            let changes = records
                .into_iter()
                .filter(|r| r.offset < end)
                .map(|r| Arc::new(Change::decode(&self.hub.codec, r)))
                .collect();
            self.handle(changes).await?;
        }
        Ok(())
    }

    /// Changes of one partition, in offset order, starting at the cursor.
    async fn handle(&mut self, changes: Vec<Arc<Change>>) -> Result<(), Stop> {
        let matched: Vec<_> = changes
            .iter()
            .filter_map(|c| c.event.clone())
            .filter(|e| self.options.rule.matches(e))
            .collect();
        let mut keep = match &mut self.options.filter {
            Some(f) if !matched.is_empty() => f.keep(matched).await.map_err(|reason| {
                Stop::Cut(
                    format!("the watch filter cannot decide now: {reason}"),
                    false,
                )
            })?,
            _ => vec![true; matched.len()],
        }
        .into_iter();
        for change in changes {
            let p = change.partition as usize;
            self.cursor.0[p] = change.offset + 1;
            let Some(event) = &change.event else { continue };
            if !self.options.rule.matches(event) || !keep.next().unwrap_or(false) {
                continue;
            }
            let id = self.cursor.to_string();
            let Some(data) = change.data(self.options.notify_only) else {
                continue;
            };
            let frame = Frame::Event {
                id: id.clone(),
                event_type: event.event_type.as_str(),
                data,
            };
            self.send(frame).await?;
            self.last_id = id;
        }
        Ok(())
    }

    /// Hand a frame over, waiting for room; cut off a watcher that falls too far behind or
    /// makes no room for too long.
    async fn send(&mut self, frame: Frame) -> Result<(), Stop> {
        let blocked = Instant::now();
        loop {
            match tokio::time::timeout(Duration::from_millis(100), self.out.reserve()).await {
                Ok(Ok(permit)) => {
                    permit.send(frame);
                    self.idle_since = Instant::now();
                    return Ok(());
                }
                Ok(Err(_)) => return Err(Stop::Done),
                Err(_) => {
                    let lag = self.lag();
                    if lag > self.hub.max_lag {
                        return Err(Stop::Cut(
                            format!(
                                "the watcher fell behind by {lag} events (limit {}, \
                                 --watch-max-lag-events); resume with Last-Event-ID (or \
                                 ?since=) set to the last id received",
                                self.hub.max_lag
                            ),
                            true,
                        ));
                    }
                    if blocked.elapsed() > STALL {
                        return Err(Stop::Cut(
                            format!(
                                "the connection read nothing for {} s; resume with \
                                 Last-Event-ID (or ?since=) set to the last id received",
                                STALL.as_secs()
                            ),
                            false,
                        ));
                    }
                }
            }
        }
    }

    /// Events appended since the watcher joined that it has not looked at yet.
    fn lag(&self) -> u64 {
        let floor = Cursor(
            self.cursor
                .0
                .iter()
                .zip(&self.joined)
                .map(|(at, joined)| *at.max(joined))
                .collect(),
        );
        floor.behind(self.hub.heads())
    }
}
