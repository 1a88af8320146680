//! Settings of the embedded log.

use std::time::Duration;

/// When appended records are fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every group of appends is fsynced before any of them is acknowledged (the default):
    /// an acknowledged record survives power loss.
    Always,
    /// Appends are acknowledged once written to the OS; fsync runs on this interval. An
    /// acknowledged record survives a process crash but not a power loss within the interval.
    Interval(Duration),
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub fsync: FsyncPolicy,
    /// Roll to a new segment when the active one would exceed this size.
    pub segment_bytes: u64,
    /// Roll to a new segment when the active one's first record is this old (lets age-based
    /// retention delete data from quiet partitions).
    pub segment_ms: Option<u64>,
    /// One sparse index entry per this many bytes of records.
    pub index_interval_bytes: u64,
    /// How often the writer applies retention.
    pub retention_check: Duration,
    /// How often compacted topics are compacted.
    pub compaction_check: Duration,
    /// How long a tombstone (an empty value) stays in a compacted topic, so a reader that was
    /// behind still sees its key go (Kafka's `delete.retention.ms`).
    pub tombstone_retention: Duration,
}

/// Largest segment: index positions are 32-bit.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            fsync: FsyncPolicy::Always,
            segment_bytes: 128 << 20,
            segment_ms: Some(7 * 24 * 3600 * 1000),
            index_interval_bytes: 4096,
            retention_check: Duration::from_secs(60),
            compaction_check: Duration::from_secs(600),
            tombstone_retention: Duration::from_secs(24 * 3600),
        }
    }
}
