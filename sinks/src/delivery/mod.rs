//! The delivery engine: runs every active subscription of the catalog, and answers for them
//! (status, dead letters, redrive).
//!
//! # Layout
//! - `partition.rs`: reading one partition and delivering it in per-key order; the commit
//!   invariant lives there.
//! - `retry.rs`: attempts, backoff with full jitter, `Retry-After`, giving up.
//! - `circuit.rs`: a circuit breaker per endpoint.
//! - `dead_letters.rs`: the persisted dead-letter queue.
//! - `stats.rs`: counters behind status and metrics.
//! - `runner.rs`: one subscription: its consumer group membership and partition workers.
//! - `replay.rs`: re-delivering offset ranges beside the live delivery (replay jobs).
//! - `watch_filter.rs`: a subscription's filter borrowed by a live watcher (`GET /v1/watch`).
//!
//! Each subscription runs in its own tasks with its own in-flight limit, and waits only on its
//! own endpoint's circuit, so a slow or failing subscription never stalls another.

mod circuit;
pub mod dead_letters;
mod filtering;
mod partition;
mod redrive;
pub mod replay;
mod retry;
mod runner;
pub mod stats;
mod watch_filter;

pub use circuit::Circuits;
pub use dead_letters::{DEAD_LETTERS_TOPIC, DeadLetter, DeadLetters};
pub(crate) use partition::{dead_letter_failures, read, start_offset};
pub use replay::{DryRun, Replay, ReplayProgress};
pub use watch_filter::WatchFilter;

/// How lake workers hold the run's shared state.
pub(crate) type RunCtxRef = Arc<RunCtx>;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidemark_core::OBJECTS_TOPIC;
use tidemark_core::codec::EventCodec;
use tidemark_core::log::Log;
use tidemark_core::rules::Rule;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::client::HttpClient;
use crate::function::{FunctionSink, Invocations};
use crate::sink::Sink;
use crate::subscription::spec::{SinkSpec, SubscriptionSpec};
use crate::subscription::{Subscription, Subscriptions};
use crate::webhook::sink::{WebhookSink, endpoint_of, parse_secrets};
use crate::{Error, Result, secrets};
use circuit::Circuit;
use stats::Stats;

/// Everything the workers of one running subscription share.
pub(crate) struct RunCtx {
    pub name: String,
    pub consumer: String,
    pub spec: SubscriptionSpec,
    pub start_offsets: BTreeMap<u32, u64>,
    pub rule: Rule,
    pub sink: Arc<dyn Sink>,
    pub circuit: Arc<Circuit>,
    pub stats: Arc<Stats>,
    pub dead_letters: Arc<DeadLetters>,
    pub log: Arc<dyn Log>,
    pub codec: Arc<EventCodec>,
    pub filters: Arc<tidemark_plugins::Filters>,
    /// A lake subscription's settings: its partitions are written by lake workers.
    pub lake: Option<Arc<crate::lake::Lake>>,
    /// Set when this run re-delivers a range for a replay job (its position is not kept).
    pub replay: Option<Arc<replay::ReplayMark>>,
}

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
    client: HttpClient,
    /// CloudEvents `source` base of this node's payloads.
    source: String,
    running: tokio::sync::Mutex<HashMap<String, Running>>,
    /// By subscription name and generation, so a re-created subscription starts at zero.
    stats: Mutex<HashMap<(String, Uuid), Arc<Stats>>>,
    invocations: Mutex<HashMap<String, Arc<Invocations>>>,
    /// Dead letters being redriven now (not offered to a second redrive).
    redriving: Mutex<HashSet<Uuid>>,
    /// Subscriptions this node does not run, and why: a process function it does not
    /// declare. They resume when the operator declares it (a restart with the new
    /// configuration).
    paused: Mutex<HashMap<String, String>>,
    /// Set by [`Engine::shutdown`]: nothing starts any more.
    stopping: std::sync::atomic::AtomicBool,
}

impl Engine {
    /// Start running every active subscription, and keep following the catalog.
    pub fn start(
        subscriptions: Arc<Subscriptions>,
        dead_letters: Arc<DeadLetters>,
        log: Arc<dyn Log>,
        codec: Arc<EventCodec>,
        source: String,
        client: HttpClient,
    ) -> Arc<Engine> {
        let engine = Arc::new(Engine {
            subscriptions,
            log,
            codec,
            dead_letters,
            circuits: Circuits::default(),
            client,
            source,
            running: Default::default(),
            stats: Default::default(),
            invocations: Default::default(),
            redriving: Default::default(),
            paused: Default::default(),
            stopping: Default::default(),
        });
        tokio::spawn(engine.clone().follow());
        engine
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
            if let Some(reason) = self.paused_reason(&sub) {
                if !self.paused.lock().unwrap().contains_key(&name) {
                    tracing::warn!(subscription = name, "not delivering: {reason}");
                }
                paused.insert(name, reason);
                continue;
            }
            if running.contains_key(&name) {
                continue;
            }
            match self.context(&sub) {
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

    /// Why this node cannot run `sub` at all (not a passing failure): its process function
    /// is not declared here.
    fn paused_reason(&self, sub: &Subscription) -> Option<String> {
        match &sub.stored.spec.sink {
            SinkSpec::Function(f) if f.mode == "process" => {
                self.subscriptions.functions().resolve(f).err()
            }
            _ => None,
        }
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

    fn invocations_of(&self, name: &str) -> Arc<Invocations> {
        self.invocations
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    fn context(&self, sub: &Subscription) -> Result<RunCtx> {
        let lake = match &sub.stored.spec.sink {
            SinkSpec::Parquet(p) => {
                let secret = match p.s3.as_ref().and_then(|s| s.secret_access_key.as_ref()) {
                    Some(r) => Some(secrets::resolve(self.subscriptions.catalog(), r)?),
                    None => None,
                };
                Some(Arc::new(
                    crate::lake::Lake::open(p, secret)
                        .map_err(|(field, e)| Error::invalid(field, e))?,
                ))
            }
            _ => None,
        };
        let sink = match &lake {
            Some(l) => l.clone() as Arc<dyn Sink>,
            None => self.sink(sub, None)?,
        };
        let stats = self.stats_of(sub);
        // A (re)started run starts its filter afresh: replacing a subscription lifts a
        // quarantine.
        *stats.filter.lock().unwrap() = stats::FilterStatus {
            reference: sub.stored.spec.filter.clone().unwrap_or_default(),
            state: "starting",
            ..Default::default()
        };
        Ok(RunCtx {
            replay: None,
            lake,
            filters: self.subscriptions.filters().clone(),
            name: sub.name().to_string(),
            consumer: sub.consumer(),
            spec: sub.stored.spec.clone(),
            start_offsets: sub.stored.start_offsets.clone(),
            rule: sub.rule.clone(),
            circuit: self.circuits.get(sink.endpoint()),
            sink,
            stats,
            dead_letters: self.dead_letters.clone(),
            log: self.log.clone(),
            codec: self.codec.clone(),
        })
    }

    /// The sink of a subscription, secrets resolved; `replay` marks re-deliveries.
    pub fn sink(&self, sub: &Subscription, replay: Option<String>) -> Result<Arc<dyn Sink>> {
        let catalog = self.subscriptions.catalog();
        let bad = |field: &str, e: String| Error::invalid(field, e);
        Ok(match &sub.stored.spec.sink {
            SinkSpec::Webhook(w) => {
                let uri: http::Uri = w.url.parse().map_err(|e| bad("sink.url", format!("{e}")))?;
                let values = secrets::resolve_all(catalog, &w.secret.list())?;
                let bearer = match &w.bearer_token {
                    Some(r) => Some(
                        http::HeaderValue::from_str(&format!(
                            "Bearer {}",
                            secrets::resolve(catalog, r)?
                        ))
                        .map_err(|_| bad("sink.bearer_token", "not a valid header value".into()))?,
                    ),
                    None => None,
                };
                let mut headers = Vec::new();
                for (k, v) in &w.headers {
                    let name = http::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|e| bad("sink.headers", e.to_string()))?;
                    let value = http::HeaderValue::from_str(v)
                        .map_err(|e| bad("sink.headers", e.to_string()))?;
                    headers.push((name, value));
                }
                Arc::new(WebhookSink {
                    client: self.client.clone(),
                    endpoint: endpoint_of(&uri),
                    uri,
                    format: w.format,
                    secrets: parse_secrets(&values).map_err(|e| bad("sink.secret", e))?,
                    bearer,
                    headers,
                    timeout: Duration::from_millis(w.timeout_ms),
                    subscription: sub.name().to_string(),
                    source: self.source.clone(),
                    replay,
                })
            }
            SinkSpec::Function(f) => {
                let values = secrets::resolve_all(catalog, &f.secret.list())?;
                let process = match f.mode.as_str() {
                    "process" => Some(
                        self.subscriptions
                            .functions()
                            .resolve(f)
                            .map_err(|e| bad("sink.function", e))?,
                    ),
                    _ => None,
                };
                Arc::new(FunctionSink::new(
                    f,
                    process,
                    self.client.clone(),
                    parse_secrets(&values).map_err(|e| bad("sink.secret", e))?,
                    sub.name().to_string(),
                    self.source.clone(),
                    replay,
                    self.invocations_of(sub.name()),
                )?)
            }
            SinkSpec::Parquet(_) => {
                return Err(Error::invalid(
                    "sink.type",
                    "a lake is not re-delivered to; replay its range into the lake instead",
                ));
            }
        })
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
            "lake_files": matches!(sub.stored.spec.sink, SinkSpec::Parquet(_)).then(|| get(&stats.lake_files)),
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
        if !matches!(sub.stored.spec.sink, SinkSpec::Function(_)) {
            return Err(Error::invalid(
                "name",
                format!("subscription '{name}' has no function sink"),
            ));
        }
        Ok(self.invocations_of(name).to_json())
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
                lake: matches!(
                    sub.stored.spec.sink,
                    crate::subscription::spec::SinkSpec::Parquet(_)
                ),
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
    /// A Parquet lake subscription (its files and rows are counted).
    pub lake: bool,
    /// `closed`, `open` or `half-open`.
    pub circuit: Option<String>,
    pub lag: u64,
}
