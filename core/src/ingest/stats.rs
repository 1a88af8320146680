//! Ingest counters for `/metrics`: mutations accepted and refused per interface, and how
//! long appends take to become durable. Plain atomics, read at scrape time.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where a mutation came from; a label of the ingest counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Interface {
    /// `POST /v1/mutations` and `PUT /v1/content` (and mutations forwarded by another node).
    #[default]
    Http,
    /// The S3-compatible API.
    S3,
    /// `POST /v1/ingest/s3-events` (S3 / MinIO notifications).
    S3Events,
    /// Bucket sync jobs.
    Sync,
    /// Restore jobs (compensating mutations).
    Restore,
}

impl Interface {
    pub const ALL: [Interface; 5] = [
        Interface::Http,
        Interface::S3,
        Interface::S3Events,
        Interface::Sync,
        Interface::Restore,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Http => "http",
            Interface::S3 => "s3",
            Interface::S3Events => "s3_events",
            Interface::Sync => "sync",
            Interface::Restore => "restore",
        }
    }
}

/// Upper bounds (seconds) of the append latency histogram's buckets.
pub const APPEND_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default)]
pub struct IngestStats {
    /// Per interface (index of [`Interface::ALL`]): mutations whose event is durable.
    accepted: [AtomicU64; 5],
    /// Per interface: mutations refused (precondition, not the owner, log unavailable).
    refused: [AtomicU64; 5],
    /// Append-to-durable time per log append: counts per bucket of [`APPEND_BUCKETS`]
    /// (plus +Inf), and the sum of seconds.
    append: Mutex<([u64; 13], f64)>,
}

impl IngestStats {
    pub fn count(&self, interface: Interface, accepted: u64, refused: u64) {
        let i = interface as usize;
        self.accepted[i].fetch_add(accepted, Ordering::Relaxed);
        self.refused[i].fetch_add(refused, Ordering::Relaxed);
    }

    pub fn observe_append(&self, took: Duration) {
        let s = took.as_secs_f64();
        let i = APPEND_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(APPEND_BUCKETS.len());
        let mut h = self.append.lock().unwrap();
        h.0[i] += 1;
        h.1 += s;
    }

    /// Accepted and refused mutations of `interface`.
    pub fn counts(&self, interface: Interface) -> (u64, u64) {
        let i = interface as usize;
        (
            self.accepted[i].load(Ordering::Relaxed),
            self.refused[i].load(Ordering::Relaxed),
        )
    }

    /// Per-bucket counts (not cumulative) and the sum of seconds.
    pub fn append_latency(&self) -> ([u64; 13], f64) {
        *self.append.lock().unwrap()
    }
}
