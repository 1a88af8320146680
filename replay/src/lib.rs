//! Replay and point-in-time recovery: the index as of an instant (snapshots plus a bounded
//! replay), re-delivery of a time range through a subscription, restore of a bucket.
//!
//! # Layout
//! - `jobs.rs`: long-running jobs (re-deliveries, restores) with id, progress and cancel.
//! - `redeliver.rs`: `tidemark replay` / `POST /v1/replays`: a time range re-sent through a
//!   subscription's current rules, filter and sink, beside its live delivery.
//! - `snapshot.rs`: periodic index snapshots, each tagged with the log offsets it covers.
//! - `state.rs`: the index as of an instant: a snapshot plus the events after it.
//! - `restore.rs`: `tidemark restore`: compensating mutations back to an instant.
//! - `error.rs`: this crate's error.

mod error;
pub mod jobs;
pub mod redeliver;

pub use error::{Error, Result};
