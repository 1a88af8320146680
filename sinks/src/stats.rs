//! What a subscription's delivery has done on this node since it started: the counters of
//! `GET /v1/subscriptions/NAME/status` and `/metrics`. Kept apart from the engine because
//! everything that runs for a subscription counts here: the filter, both kinds of sink, the
//! engine.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

/// Upper bounds (seconds) of the attempt latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    pub at: String,
    pub message: String,
    pub status: Option<i32>,
    pub attempt: u32,
}

/// The WASM filter of a running subscription: which version, and whether it runs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FilterStatus {
    pub reference: String,
    /// The version events are filtered with now.
    pub version: Option<u32>,
    /// `active`, `quarantined` (too many consecutive errors; waits for another version),
    /// `unavailable` (the reference does not resolve, or the module cannot be loaded), or
    /// `capacity` (the server has no room for an instance now: the filter memory budget or
    /// the instance slots; it starts by itself when there is).
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub consecutive_errors: u32,
    /// Errors by kind (`trap`, `fuel`, `timeout`, `memory`, `module`, `verdict`, `init`).
    pub errors: BTreeMap<&'static str, u64>,
    /// The version that was quarantined: a different version resumes delivery.
    #[serde(skip)]
    pub quarantined: Option<u32>,
    /// Partitions waiting for room for their instance now (state `capacity` while any).
    #[serde(skip)]
    pub waiting_for_capacity: u32,
}

#[derive(Default)]
pub struct Stats {
    /// Events delivered (a batch counts its events).
    pub delivered: AtomicU64,
    /// Events moved to the dead-letter queue.
    pub dead_lettered: AtomicU64,
    /// Attempts that failed (an event may fail several times before it is delivered).
    pub failed_attempts: AtomicU64,
    /// Requests sent, successful or not.
    pub attempts: AtomicU64,
    /// Events not matching the rules, passed over.
    pub skipped: AtomicU64,
    /// Deliveries in progress now.
    pub in_flight: AtomicU64,
    /// Events the WASM filter dropped, and events it failed on (handled by the policy).
    pub filtered_out: AtomicU64,
    pub filter_failed: AtomicU64,
    /// Stream sinks (the lake): files committed (rows count as delivered).
    pub lake_files: AtomicU64,
    /// Stream sinks: rows in the committed files.
    pub lake_rows: AtomicU64,
    /// The WASM filter as this node runs it.
    pub filter: Mutex<FilterStatus>,
    pub last_error: Mutex<Option<LastError>>,
    /// Attempt latency: counts per bucket of [`LATENCY_BUCKETS`] (plus +Inf), and the sum.
    latency: Mutex<([u64; 13], f64)>,
    /// Per partition delivered here, the position it would commit now: status reads it so
    /// lag is current between commits.
    live: Mutex<BTreeMap<u32, Arc<AtomicU64>>>,
}

impl Stats {
    pub fn observe_attempt(&self, took: Duration) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let s = took.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        let mut h = self.latency.lock().unwrap();
        h.0[i] += 1;
        h.1 += s;
    }

    /// Per-bucket counts (not cumulative) and the sum of seconds.
    pub fn latency(&self) -> ([u64; 13], f64) {
        *self.latency.lock().unwrap()
    }

    /// A stream sink committed a segment: `files` written now, `rows` in it.
    pub fn files_written(&self, files: u64, rows: u64) {
        self.lake_files.fetch_add(files, Ordering::Relaxed);
        self.lake_rows.fetch_add(rows, Ordering::Relaxed);
        self.delivered.fetch_add(rows, Ordering::Relaxed);
    }

    pub fn failed(&self, e: LastError) {
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap() = Some(e);
    }

    /// The cell a partition worker keeps its current position in.
    pub fn live_position(&self, partition: u32) -> Arc<AtomicU64> {
        self.live
            .lock()
            .unwrap()
            .entry(partition)
            .or_default()
            .clone()
    }

    /// The current position of `partition`, if a worker on this node delivers it.
    pub fn position(&self, partition: u32) -> Option<u64> {
        let live = self.live.lock().unwrap();
        live.get(&partition).map(|p| p.load(Ordering::Relaxed))
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
