//! The delivery engine: runs every active subscription of the catalog, and answers for them
//! (status, dead letters, redrive, replays). It reads each subscription's partitions and
//! feeds its sink without knowing which sink it is: request sinks event by event, stream
//! sinks a partition's stream at a time.
//!
//! # Layout
//! - `context.rs`: what one run of a subscription shares (`RunCtx`), built from the
//!   catalog's subscription and the sink [`Kinds`] builds.
//! - `runner.rs`: one subscription: its consumer group membership and partition workers.
//! - `reader.rs`: reading one partition: decode, rules, filter, dead letters for what cannot
//!   be handed over.
//! - `partition.rs`: delivering one partition to a request sink in per-key order; the commit
//!   invariant lives there.
//! - `retry.rs`: attempts, backoff with full jitter, `Retry-After`, giving up.
//! - `circuit.rs`: a circuit breaker per endpoint.
//! - `feed.rs`: feeding one partition to a stream sink (the engine's side of its feed).
//! - `dead_letters.rs`: the persisted dead-letter queue; `redrive.rs` sends letters again.
//! - `replay.rs`: re-delivering offset ranges beside the live delivery (replay jobs).
//!
//! Each subscription runs in its own tasks with its own in-flight limit, and waits only on its
//! own endpoint's circuit, so a slow or failing subscription never stalls another.

mod circuit;
mod context;
pub mod dead_letters;
mod feed;
mod partition;
mod reader;
mod redrive;
pub mod replay;
mod retry;
mod runner;
#[cfg(test)]
mod tests;

pub use circuit::Circuits;
pub use dead_letters::{DEAD_LETTERS_TOPIC, DeadLetter, DeadLetters};
pub use replay::{DryRun, Replay, ReplayProgress};

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidemark_core::OBJECTS_TOPIC;
use tidemark_core::codec::EventCodec;
use tidemark_core::log::Log;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::Result;
use crate::client::Outbound;
use crate::kinds::Kinds;
use crate::sink::LiveObjects;
use crate::stats::{self, Stats};
use crate::subscription::{Subscription, Subscriptions};

struct Running {
    /// The catalog change it runs (a new change restarts it).
    version: Uuid,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

pub struct Engine {
    pub subscriptions: Arc<Subscriptions>,
    log: Arc<dyn Log>,
    codec: Arc<EventCodec>,
    pub dead_letters: Arc<DeadLetters>,
    circuits: Circuits,
    /// Builds each subscription's sink from its spec.
    kinds: Kinds,
    running: tokio::sync::Mutex<HashMap<String, Running>>,
    /// By subscription name and generation, so a re-created subscription starts at zero.
    stats: Mutex<HashMap<(String, Uuid), Arc<Stats>>>,
    /// Dead letters being redriven now (not offered to a second redrive).
    redriving: Mutex<HashSet<Uuid>>,
    /// Subscriptions this node does not run, and why: a process function it does not
    /// declare. They resume when the operator declares it (a restart with the new
    /// configuration).
    paused: Mutex<HashMap<String, String>>,
    /// Set by [`Engine::shutdown`]: nothing starts any more.
    stopping: std::sync::atomic::AtomicBool,
    /// This node's index, for stream sinks that start a state table from it.
    objects: Option<Arc<dyn LiveObjects>>,
}

impl Engine {
    /// Start running every active subscription, and keep following the catalog.
    pub fn start(
        subscriptions: Arc<Subscriptions>,
        dead_letters: Arc<DeadLetters>,
        log: Arc<dyn Log>,
        codec: Arc<EventCodec>,
        source: String,
        outbound: Outbound,
        objects: Option<Arc<dyn LiveObjects>>,
    ) -> Arc<Engine> {
        let engine = Arc::new(Engine::new(
            subscriptions,
            dead_letters,
            log,
            codec,
            source,
            outbound,
            objects,
        ));
        tokio::spawn(engine.clone().follow());
        engine
    }

    /// An engine that runs nothing until told to (`start` follows the catalog).
    fn new(
        subscriptions: Arc<Subscriptions>,
        dead_letters: Arc<DeadLetters>,
        log: Arc<dyn Log>,
        codec: Arc<EventCodec>,
        source: String,
        outbound: Outbound,
        objects: Option<Arc<dyn LiveObjects>>,
    ) -> Engine {
        let kinds = Kinds::new(
            subscriptions.catalog().clone(),
            subscriptions.functions().clone(),
            outbound,
            source,
            codec.clone(),
        );
        Engine {
            subscriptions,
            log,
            codec,
            dead_letters,
            circuits: Circuits::default(),
            kinds,
            running: Default::default(),
            stats: Default::default(),
            redriving: Default::default(),
            paused: Default::default(),
            stopping: Default::default(),
            objects,
        }
    }

    async fn follow(self: Arc<Self>) {
        let mut changes = self.subscriptions.catalog().watch();
        // Also every few seconds: a subscription whose secret could not be resolved is retried.
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            self.reconcile().await;
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = tick.tick() => {}
            }
        }
    }

    async fn reconcile(self: &Arc<Self>) {
        let wanted: HashMap<String, Subscription> = self
            .subscriptions
            .list()
            .into_iter()
            .filter(|s| s.stored.disabled.is_none())
            .map(|s| (s.name().to_string(), s))
            .collect();
        let mut running = self.running.lock().await;
        if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let stale: Vec<String> = running
            .iter()
            .filter(|(name, r)| {
                wanted.get(*name).map(|s| s.entry.changed_by) != Some(r.version)
                    || r.task.is_finished()
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            let r = running.remove(&name).expect("listed");
            let _ = r.stop.send(true);
            let _ = r.task.await;
        }
        let mut paused = HashMap::new();
        for (name, sub) in wanted {
            if let Some(reason) = self.kinds.paused_reason(&sub.stored.spec.sink) {
                if !self.paused.lock().unwrap().contains_key(&name) {
                    tracing::warn!(subscription = name, "not delivering: {reason}");
                }
                paused.insert(name, reason);
                continue;
            }
            if running.contains_key(&name) {
                continue;
            }
            match self.context(&sub, None) {
                Ok(ctx) => {
                    let (stop, stopped) = watch::channel(false);
                    let task = tokio::spawn(runner::run(self.clone(), Arc::new(ctx), stopped));
                    running.insert(
                        name,
                        Running {
                            version: sub.entry.changed_by,
                            stop,
                            task,
                        },
                    );
                }
                Err(e) => {
                    tracing::error!(subscription = name, "cannot start delivery: {e}");
                    self.stats_of(&sub).failed(stats::LastError {
                        at: tidemark_core::time::format_us(tidemark_core::time::now_us()),
                        message: format!("cannot start delivery: {e}"),
                        status: None,
                        attempt: 0,
                    });
                }
            }
        }
        *self.paused.lock().unwrap() = paused;
    }

    /// Stop every subscription on this node: each partition worker commits the position of
    /// what it finished, so a graceful restart re-delivers only what was in flight.
    /// Stop every subscription, letting deliveries in flight finish for up to `grace`
    /// (retries included) before the positions are committed. A delivery still running then
    /// is abandoned: its position stays before it, so it is delivered again after a restart.
    pub async fn shutdown_within(&self, grace: Duration) {
        partition::set_shutdown_grace(grace);
        self.shutdown().await;
    }

    pub async fn shutdown(&self) {
        let mut running = self.running.lock().await;
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for r in running.values() {
            let _ = r.stop.send(true);
        }
        for (_, r) in running.drain() {
            let _ = r.task.await;
        }
    }

    fn stats_of(&self, sub: &Subscription) -> Arc<Stats> {
        self.stats
            .lock()
            .unwrap()
            .entry((sub.name().to_string(), sub.entry.created_by))
            .or_default()
            .clone()
    }

    /// Remove a subscription and its dead letters.
    pub async fn delete(&self, name: &str, actor: Option<String>) -> Result<()> {
        self.subscriptions.delete(name, actor).await?;
        for letter in self.dead_letters.list(name) {
            self.dead_letters.remove(name, letter.id).await?;
        }
        Ok(())
    }

    /// `GET /v1/subscriptions/NAME/status`.
    pub async fn status(&self, name: &str) -> Result<serde_json::Value> {
        let sub = self.subscriptions.get(name)?;
        let consumer = sub.consumer();
        let stats = self.stats_of(&sub);
        let mut partitions = Vec::new();
        let (mut lag, mut ends) = (0u64, 0u64);
        for p in 0..self.log.partitions(OBJECTS_TOPIC)? {
            let range = self.log.offsets(OBJECTS_TOPIC, p).await?;
            let committed = match self.log.committed(&consumer, OBJECTS_TOPIC, p).await? {
                Some(o) => o,
                None => sub
                    .stored
                    .start_offsets
                    .get(&p)
                    .copied()
                    .unwrap_or(range.start),
            };
            // Between commits, the worker delivering the partition here knows better.
            let position = stats
                .position(p)
                .map_or(committed, |live| live.max(committed));
            let behind = range.end.saturating_sub(position);
            lag += behind;
            ends += range.end;
            partitions.push(serde_json::json!({
                "partition": p, "position": position, "committed": committed,
                "end": range.end, "lag": behind,
            }));
        }
        let running = self.running.lock().await.contains_key(name);
        let paused = self.paused.lock().unwrap().get(name).cloned();
        let endpoint = sub.stored.spec.sink.endpoint();
        let circuit = endpoint.as_deref().map(|e| self.circuits.get(e));
        let get = |c: &std::sync::atomic::AtomicU64| Stats::get(c);
        Ok(serde_json::json!({
            "name": name,
            "state": match (&sub.stored.disabled, running, &paused) {
                (Some(_), _, _) => "disabled",
                (None, _, Some(_)) => "paused",
                (None, true, None) => "running",
                (None, false, None) => "starting",
            },
            "disabled_reason": sub.stored.disabled,
            "paused_reason": paused,
            "endpoint": endpoint,
            "circuit": circuit.as_ref().map(|c| c.state_name()),
            "circuit_opened": circuit.as_ref().map(|c| c.times_opened()),
            "position": partitions.iter().map(|p| p["position"].as_u64().unwrap_or(0)).sum::<u64>(),
            "end": ends,
            "lag": lag,
            "partitions": partitions,
            "delivered": get(&stats.delivered),
            "dead_lettered": get(&stats.dead_lettered),
            "failed_attempts": get(&stats.failed_attempts),
            "attempts": get(&stats.attempts),
            "skipped": get(&stats.skipped),
            "in_flight": get(&stats.in_flight),
            "lake_files": sub.stored.spec.sink.is_stream().then(|| get(&stats.lake_files)),
            "filtered_out": get(&stats.filtered_out),
            "filter_failed": get(&stats.filter_failed),
            "filter": sub.stored.spec.filter.as_ref().map(|_| stats.filter.lock().unwrap().clone()),
            "dead_letters": self.dead_letters.count(name),
            "last_error": *stats.last_error.lock().unwrap(),
        }))
    }

    /// Recent invocations of a function subscription.
    pub fn invocations(&self, name: &str) -> Result<serde_json::Value> {
        let sub = self.subscriptions.get(name)?;
        self.kinds.invocations(name, &sub.stored.spec.sink)
    }

    /// For `/metrics`: every subscription's numbers.
    pub async fn metrics(&self) -> Vec<SubscriptionMetrics> {
        let mut out = Vec::new();
        for sub in self.subscriptions.list() {
            let status = self.status(sub.name()).await.unwrap_or_default();
            out.push(SubscriptionMetrics {
                name: sub.name().to_string(),
                stats: self.stats_of(&sub),
                dead_letters: self.dead_letters.count(sub.name()),
                lake: sub.stored.spec.sink.is_stream(),
                circuit: status["circuit"].as_str().map(str::to_string),
                lag: status["lag"].as_u64().unwrap_or(0),
            });
        }
        out
    }
}

/// One subscription's numbers for `/metrics`.
pub struct SubscriptionMetrics {
    pub name: String,
    pub stats: Arc<Stats>,
    pub dead_letters: usize,
    /// A stream sink's subscription, the lake (its files and rows are counted).
    pub lake: bool,
    /// `closed`, `open` or `half-open`.
    pub circuit: Option<String>,
    pub lag: u64,
}
