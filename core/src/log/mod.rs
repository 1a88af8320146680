//! The log: the source of truth. The [`Log`] trait is the seam between Tidemark and its log
//! backends (the embedded segment log, `embedded/`; Kafka, `kafka/`, behind the `kafka`
//! feature); everything above it (ingest, materializer, registry, subscriptions) is written
//! against the trait.
//!
//! Contract every backend keeps:
//! - `append` takes its place in the log when it is *called* (records of one call, and calls
//!   made one after another, keep that order within a partition) and its future resolves only
//!   when the records are durable;
//! - `read` never returns a record that could still be lost by a crash;
//! - the partition of a record is `partition_for(key)` unless the caller picks one.

pub mod embedded;
mod group;
#[cfg(feature = "kafka")]
pub mod kafka;
mod partitioner;

pub use group::{Membership, REVOKE_TIMEOUT, Revocation};
pub use partitioner::partition_for;

/// Work a log runs before each fsync of its group commit: the content store fsyncs content
/// written for the events of that group, so no durable event names content a crash lost.
pub type BeforeSync = std::sync::Arc<dyn Fn() -> crate::Result<()> + Send + Sync>;

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::Result;

/// A record header (replay markers, trace context, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Bytes,
}

/// A record to append.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub key: Bytes,
    pub value: Bytes,
    pub headers: Vec<Header>,
    /// `None`: chosen from the key with [`partition_for`].
    pub partition: Option<u32>,
}

impl NewRecord {
    pub fn new(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        NewRecord {
            key: key.into(),
            value: value.into(),
            headers: Vec::new(),
            partition: None,
        }
    }
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: u32,
    pub offset: u64,
    /// Append time, microseconds since the epoch; never decreases within a partition.
    pub timestamp: i64,
    pub key: Bytes,
    pub value: Bytes,
    pub headers: Vec<Header>,
}

/// Where an appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Position {
    pub partition: u32,
    pub offset: u64,
}

/// Offsets present in a partition: `start..end`, `end` being the next offset to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct OffsetRange {
    pub start: u64,
    pub end: u64,
}

impl OffsetRange {
    /// A read may start anywhere from `start` to `end` (inclusive: reading at the end waits).
    pub fn check(&self, partition: u32, from: u64) -> Result<()> {
        if from < self.start {
            return Err(crate::Error::BadInput(format!(
                "offset {from} of partition {partition} is before the log start {} (removed by retention)",
                self.start
            )));
        }
        if from > self.end {
            return Err(crate::Error::BadInput(format!(
                "offset {from} of partition {partition} is past the end {}",
                self.end
            )));
        }
        Ok(())
    }
}

/// How a topic is created.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopicSpec {
    pub partitions: u32,
    /// Delete whole segments whose newest record is older than this. `None`: keep forever.
    pub retention_ms: Option<u64>,
    /// Delete the oldest segments while a partition is larger than this. `None`: no limit.
    pub retention_bytes: Option<u64>,
    /// Keep only the newest record per key (Kafka `cleanup.policy=compact`). The embedded log
    /// keeps everything, which is a superset of what compaction keeps.
    pub compacted: bool,
}

impl TopicSpec {
    pub fn new(partitions: u32) -> Self {
        TopicSpec {
            partitions,
            retention_ms: None,
            retention_bytes: None,
            compacted: false,
        }
    }
}

/// Resolves when the appended records are durable.
pub type AppendFuture = BoxFuture<'static, Result<Vec<Position>>>;

/// A log backend.
pub trait Log: Send + Sync + 'static {
    /// Create `topic` if it does not exist; return its partition count either way.
    fn ensure_topic<'a>(
        &'a self,
        topic: &'a str,
        spec: &'a TopicSpec,
    ) -> BoxFuture<'a, Result<u32>>;

    /// Partition count of an existing topic.
    fn partitions(&self, topic: &str) -> Result<u32>;

    /// Enqueue records now, in call order; the future resolves when they are durable.
    fn append(&self, topic: &str, records: Vec<NewRecord>) -> AppendFuture;

    /// Up to `max` durable records from `from` on. At the end of the partition, waits up to
    /// `wait` for new ones and returns an empty batch if none arrive.
    fn read<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<Record>>>;

    /// First and next offsets of a partition.
    fn offsets<'a>(&'a self, topic: &'a str, partition: u32) -> BoxFuture<'a, Result<OffsetRange>>;

    /// First offset whose append time is at or after `ts_us`; the end offset if none is.
    fn offset_for_time<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        ts_us: i64,
    ) -> BoxFuture<'a, Result<u64>>;

    /// Durably record that `consumer` has finished everything before `next_offset`.
    fn commit<'a>(
        &'a self,
        consumer: &'a str,
        topic: &'a str,
        partition: u32,
        next_offset: u64,
    ) -> BoxFuture<'a, Result<()>>;

    /// Join consumer group `group` on `topic`: several processes in one group split the
    /// topic's partitions between them, and each partition moves between members only after
    /// its owner acknowledged the revocation.
    fn join_group<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<Membership>>;

    /// The last offset `consumer` committed, if any.
    fn committed<'a>(
        &'a self,
        consumer: &'a str,
        topic: &'a str,
        partition: u32,
    ) -> BoxFuture<'a, Result<Option<u64>>>;
}

/// Names of topics and consumers: they become directory and file names.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(crate::Error::BadInput(format!(
            "{what} name '{name}' is invalid: use 1-249 characters from [A-Za-z0-9._-]"
        )))
    }
}

/// Shared behaviour tests, run against every backend.
#[cfg(any(test, feature = "test-broker"))]
pub mod contract_tests;
