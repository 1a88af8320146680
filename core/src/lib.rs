//! Tidemark core: the stages every mutation passes through before any sink sees it.
//!
//! # Layout
//! - [`blobs`]: the content store: object bytes named by their SHA-256, and their collection.
//! - [`multipart`]: parts of S3 multipart uploads waiting for their completion.
//! - [`content_store`]: `--content-store DIR|s3://…`: opening the blobs and parts of one place.
//! - [`catalog`]: configuration entities (subscriptions, secrets) event-sourced on `_config`.
//! - [`event`]: the object event (`ObjectEvent`), its types and the object state it carries.
//! - [`codec`]: Avro encoding in the Confluent wire format, with a direct encoder/decoder on the
//!   hot path and apache-avro's generic path for other writer schemas.
//! - [`registry`]: the built-in Confluent-compatible schema registry, event-sourced on `_schemas`.
//! - [`log`]: the `Log` trait (the seam to Kafka) and the embedded segment log.
//! - [`ingest`]: validated mutations become events with sequences and previous state, appended
//!   durably before they are acknowledged.
//! - [`index`]: the materialized object index (redb) and the materializer that feeds it.
//! - [`rebuild`]: rebuilding an index from the log.
//! - [`rules`]: declarative rules that select events for subscriptions and watchers.
//! - [`time`]: timestamp parsing and formatting shared by every interface.

pub mod blobs;
pub mod blocking;
pub mod catalog;
pub mod codec;
pub mod content_store;
pub mod error;
pub mod event;
pub mod index;
pub mod ingest;
pub mod log;
pub mod multipart;
pub mod rebuild;
pub mod registry;
pub mod rules;
pub mod time;

pub use error::{Error, ErrorKind, Result};

/// Topic holding object events.
pub const OBJECTS_TOPIC: &str = "objects";
/// Topic holding configuration events (compacted by name in Kafka mode).
pub const CONFIG_TOPIC: &str = "_config";
/// Topic holding schema registrations (as Confluent's registry does).
pub const SCHEMAS_TOPIC: &str = "_schemas";
