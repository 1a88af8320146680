//! Subscriptions and their sinks: which events go where, and delivering them at least once
//! (exactly once into the lake).
//!
//! # Layout
//! Modules depend only on those listed before them.
//! - `error.rs`: the crate's error, with the transient / configuration / data kinds of a
//!   failed write.
//! - `client.rs`, `guard.rs`, `socket.rs`: the node's outbound HTTP client, its address
//!   guard, and the guarded connections of sinks that speak their own protocol.
//! - `secrets.rs`: secrets by reference, and how a spec holds them.
//! - `stats.rs`: what a subscription's delivery counts (status, metrics).
//! - `sink/`: the seam: [`sink::Delivery`], the two kinds of sink (request [`sink::Sink`],
//!   stream [`sink::StreamSink`] with its [`sink::Feed`]), what a kind is built with.
//! - `filtering/`: running a WASM filter over a narrow context, for subscriptions, replays
//!   and live watchers.
//! - `webhook/`: the webhook sink: its spec, payload formats, Standard Webhooks signatures.
//! - `function/`: function triggers over HTTP (CloudEvents) or as a declared local process.
//! - `lake/`: the Parquet lake sink (Hive-partitioned files, exactly-once commits).
//! - `iceberg/`: the Iceberg sink (journal and inventory tables).
//! - `message/`: what queue sinks share: an event as a message, templates of event fields.
//! - `aws/`: credentials, Signature Version 4 and signed calls, for the AWS sinks.
//! - `kafka/`, `sqs/`, `lambda/`, `redis_stream/`, `nats/`, `amqp/`: queue and function
//!   sinks, one folder each.
//! - `subscription/`: the subscription JSON (`spec.rs`), its validation, and storing it in
//!   the catalog (`_config`) with secrets moved out to references.
//! - `kinds.rs`: the closed set of sink kinds: building the sink a subscription names.
//! - `delivery/`: the engine: reading each subscription's partitions (decode, rules, filter,
//!   dead letters, positions) and feeding its sink; retries, circuit breakers, redrive,
//!   replays, status.

pub mod amqp;
pub mod aws;
pub mod client;
pub mod delivery;
mod error;
pub mod filtering;
pub mod function;
pub mod guard;
pub mod iceberg;
pub mod kafka;
pub mod kinds;
pub mod lake;
pub mod lambda;
pub mod message;
pub mod nats;
mod parquet_file;
pub mod redis_stream;
pub mod secrets;
pub mod sink;
pub mod socket;
pub mod sqs;
pub mod stats;
pub mod subscription;
pub mod webhook;

pub use error::{Error, Result};
