//! Subscriptions and their sinks: which events go where, and delivering them at least once.
//!
//! # Layout
//! - `subscription/`: the subscription JSON (`spec.rs`), its validation, and storing it in
//!   the catalog (`_config`) with secrets moved out to references (`secrets.rs`).
//! - `delivery/`: the engine: per-partition workers, retries, circuit breakers, dead letters,
//!   redrive, status.
//! - `sink.rs`: the `Sink` trait, the seam between the engine and destinations.
//! - `webhook/`: payload formats, Standard Webhooks signatures, the HTTP webhook sink.
//! - `function/`: function triggers over HTTP (CloudEvents) or as a local process.
//! - `lake/`: the Parquet lake sink (Hive-partitioned files, exactly-once commits).
//! - `client.rs`, `guard.rs`: the node's outbound HTTP client and its address guard.

pub mod client;
pub mod delivery;
mod error;
pub mod function;
pub mod guard;
pub mod lake;
pub mod secrets;
pub mod sink;
pub mod subscription;
pub mod webhook;

pub use error::{Error, Result};
