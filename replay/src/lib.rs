//! Replay and point-in-time recovery: the index as of an instant (snapshots plus a bounded
//! replay), re-delivery of a time range through a subscription, restore of a bucket.
//!
//! # Layout
//! - `jobs/`: long-running jobs (re-deliveries, restores, syncs) with id, progress and cancel,
//!   recorded in `_config` and resumed after a restart or by another node.
//! - `redeliver.rs`: `tidemark replay` / `POST /v1/replays`: a time range re-sent through a
//!   subscription's current rules, filter and sink, beside its live delivery.
//! - `snapshot/`: periodic index snapshots, each tagged with the log offsets it covers
//!   (`format.rs` the file, `periodic.rs` the server's task).
//! - `state.rs`: the index as of an instant: a snapshot plus the events after it.
//! - `restore/`: `tidemark restore`: compensating mutations back to an instant (`plan.rs` the
//!   difference, `apply.rs` the mutations).
//! - `error.rs`: this crate's error.

mod error;
pub mod jobs;
pub mod redeliver;
pub mod restore;
pub mod snapshot;
pub mod state;

pub use error::{Error, Result};
