//! Ingest: validated mutations become object events. Under one lock, each mutation is checked
//! against its key's head (current state and sequence), turned into an event with the next
//! sequence and the previous state, encoded, and queued to the log in order; the caller is
//! answered only once the log says the events are durable.
//!
//! The heads live in memory: the index's heads plus the log records the index has not applied
//! yet, so sequences continue correctly after a restart even when the index lags.
//!
//! A node writes only the partitions it owns (all of them on the embedded log; a share of
//! them when several nodes use one Kafka cluster, see `ownership.rs`), so every key has one
//! writer and its sequence one source.

pub mod dedup;
mod mutation;
pub mod ownership;
pub mod s3_events;
pub mod stats;
pub mod sync;
pub mod writer;

pub use mutation::{
    BatchLimits, MAX_KEY_BYTES, MAX_TAGS, Mutation, Op, parse_batch, validate_bucket, validate_key,
};
pub use stats::{IngestStats, Interface};
pub use writer::{Writer, Written};

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use uuid::Uuid;

use crate::codec::EventCodec;
use crate::event::{EventType, Head, HeadMap, ObjectEvent, ObjectState, log_key};
use crate::index::ObjectIndex;
use crate::log::{Log, NewRecord, Position, partition_for};
use crate::time::now_us;
use crate::{Error, OBJECTS_TOPIC, Result};

/// Who made a request and from where; copied into every event of the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestContext {
    pub requester: Option<String>,
    pub source_ip: Option<String>,
    pub request_id: Option<String>,
    /// Which interface the request came through (a label of the ingest metrics).
    pub interface: Interface,
}

/// Where this node is; copied into every event it accepts.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub node: Option<String>,
    pub region: Option<String>,
}

/// The outcome of one mutation: where its event landed, or why it was refused.
#[derive(Debug)]
pub struct Accepted {
    pub event_id: Uuid,
    pub position: Position,
}

pub struct Ingestor {
    log: Arc<dyn Log>,
    codec: Arc<EventCodec>,
    index: Arc<ObjectIndex>,
    origin: Origin,
    /// Partitions of `objects`.
    partitions: u32,
    /// Partitions this node writes now.
    owned: RwLock<BTreeSet<u32>>,
    heads: Mutex<HeadMap<Head>>,
    /// Set when an append failed: its events may or may not be in the log, so the heads may
    /// disagree with it until they are rebuilt from the index and the log.
    stale: AtomicBool,
    /// Every request holds this shared while its append is outstanding; a resync holds it
    /// exclusively, so no append is in flight while the heads are rebuilt.
    appends: tokio::sync::RwLock<()>,
    /// Accepted / refused counts and append latency, for `/metrics`.
    pub stats: IngestStats,
}

impl Ingestor {
    /// Heads from the index, then every record the index has not applied yet. The node starts
    /// out writing `owned` partitions.
    pub async fn recover(
        log: Arc<dyn Log>,
        codec: Arc<EventCodec>,
        index: Arc<ObjectIndex>,
        origin: Origin,
        owned: BTreeSet<u32>,
    ) -> Result<Ingestor> {
        let heads = load_heads(log.as_ref(), &codec, &index).await?;
        Ok(Ingestor {
            partitions: log.partitions(OBJECTS_TOPIC)?,
            owned: RwLock::new(owned),
            log,
            codec,
            index,
            origin,
            heads: Mutex::new(heads),
            stale: AtomicBool::new(false),
            appends: tokio::sync::RwLock::new(()),
            stats: IngestStats::default(),
        })
    }

    /// Apply a batch in order. The outer error is for the whole batch (log unavailable); the
    /// inner ones are per mutation (object missing, version precondition failed).
    pub async fn apply(
        &self,
        mutations: Vec<Mutation>,
        ctx: &RequestContext,
    ) -> Result<Vec<Result<Accepted>>> {
        let n = mutations.len() as u64;
        let outcomes = self.apply_counted(mutations, ctx).await;
        let accepted = match &outcomes {
            Ok(o) => o.iter().filter(|r| r.is_ok()).count() as u64,
            Err(_) => 0,
        };
        self.stats.count(ctx.interface, accepted, n - accepted);
        outcomes
    }

    async fn apply_counted(
        &self,
        mutations: Vec<Mutation>,
        ctx: &RequestContext,
    ) -> Result<Vec<Result<Accepted>>> {
        if self.stale.load(Ordering::Acquire) {
            self.resync().await?;
        }
        let _outstanding = self.appends.read().await;
        let now = now_us();
        let mut outcomes = Vec::with_capacity(mutations.len());
        let mut records = Vec::with_capacity(mutations.len());
        let append = {
            let owned = self.owned.read().unwrap();
            let mut heads = self.heads.lock().unwrap();
            for m in mutations {
                let key = log_key(&m.bucket, &m.key);
                let partition = partition_for(key.as_bytes(), self.partitions);
                if !owned.contains(&partition) {
                    outcomes.push(Err(Error::NotOwner(partition)));
                    continue;
                }
                match self.event_for(m, heads.get(&key), ctx, now) {
                    Ok(mut event) => {
                        // The replaced head's state becomes `previous`: moved, not copied.
                        event.previous = heads
                            .insert(key.clone(), event.head())
                            .and_then(|h| h.state);
                        let mut value = Vec::with_capacity(256);
                        self.codec.encode(&event, &mut value);
                        outcomes.push(Ok((event.event_id, records.len())));
                        let mut record = NewRecord::new(Bytes::from(key), value);
                        record.partition = Some(partition);
                        records.push(record);
                    }
                    Err(e) => outcomes.push(Err(e)),
                }
            }
            // Queued while the lock is held, so log order per key follows sequence order.
            (!records.is_empty()).then(|| self.log.append(OBJECTS_TOPIC, records))
        };
        let started = std::time::Instant::now();
        let positions = match append {
            Some(fut) => match fut.await {
                Ok(p) => {
                    self.stats.observe_append(started.elapsed());
                    p
                }
                Err(e) => {
                    self.stale.store(true, Ordering::Release);
                    tracing::warn!(
                        "log append failed: {e}; the next mutation resyncs from the log first"
                    );
                    return Err(e);
                }
            },
            None => Vec::new(),
        };
        Ok(outcomes
            .into_iter()
            .map(|o| {
                o.map(|(event_id, i)| Accepted {
                    event_id,
                    position: positions[i],
                })
            })
            .collect())
    }

    /// Rebuild the heads from the index and the log after a failed append. Waits until no
    /// append is outstanding; fails (and stays stale) while the log cannot be read.
    async fn resync(&self) -> Result<()> {
        let _exclusive = self.appends.write().await;
        if !self.stale.load(Ordering::Acquire) {
            return Ok(()); // another request resynced while this one waited
        }
        let heads = load_heads(self.log.as_ref(), &self.codec, &self.index)
            .await
            .map_err(|e| {
                Error::Unavailable(format!("the log is unavailable ({e}); retry later"))
            })?;
        *self.heads.lock().unwrap() = heads;
        self.stale.store(false, Ordering::Release);
        tracing::info!("ingest state resynced from the index and the log");
        Ok(())
    }

    fn event_for(
        &self,
        m: Mutation,
        head: Option<&Head>,
        ctx: &RequestContext,
        now: i64,
    ) -> Result<ObjectEvent> {
        let current = head.and_then(|h| h.state.as_ref());
        let sequence = head.map_or(0, |h| h.sequence) + 1;
        let event_time = m.event_time.unwrap_or(now);
        let path = format!("{}/{}", m.bucket, m.key);
        if m.op != Op::Put {
            let Some(cur) = current else {
                return Err(Error::NotFound(format!("object {path} does not exist")));
            };
            if let Some(expected) = &m.version_id
                && cur.version_id.as_ref() != Some(expected)
            {
                return Err(Error::Conflict(format!(
                    "version_id '{expected}' is not the current version of {path} (current: {})",
                    cur.version_id.as_deref().unwrap_or("null")
                )));
            }
        }
        let event_type = m.event_type.unwrap_or(m.op.event_type());
        let after = match m.op {
            Op::Put => Some(ObjectState {
                version_id: m.version_id,
                sequence,
                size: m.size.expect("validated: put has a size"),
                etag: m.etag,
                content_type: m.content_type,
                sha256: m.sha256,
                metadata: m.metadata.unwrap_or_default(),
                tags: m.tags.unwrap_or_default(),
                storage_class: m.storage_class,
                last_modified: event_time,
            }),
            Op::Delete => None,
            // Attribute changes keep the version and content; `current` exists (checked above).
            Op::Tag | Op::Untag | Op::Metadata => current.cloned().map(|mut s| {
                match m.op {
                    // No tag set: an S3 `ObjectTagging:Put` notification says tags changed
                    // but not to what; the event records the change, the tags stay known.
                    Op::Tag => {
                        if let Some(tags) = m.tags {
                            s.tags = tags;
                        }
                    }
                    Op::Untag => s.tags.clear(),
                    _ => {
                        s.metadata = m.metadata.unwrap_or_default();
                        if m.content_type.is_some() {
                            s.content_type = m.content_type;
                        }
                    }
                }
                s
            }),
        };
        // `previous` is filled in by the caller, from the head this event replaces.
        let mut event = ObjectEvent::new(
            Uuid::now_v7(),
            event_type,
            event_time,
            m.bucket,
            m.key,
            sequence,
            after,
        );
        event.requester = ctx.requester.clone();
        event.source_ip = ctx.source_ip.clone();
        event.request_id = ctx.request_id.clone();
        event.region = self.origin.region.clone();
        event.node = self.origin.node.clone();
        Ok(event)
    }

    /// Append a `BucketCreated` / `BucketRemoved` / `BucketConfig:Changed` event for
    /// `bucket` (key empty); returns once it is durable.
    pub async fn append_bucket_event(
        &self,
        bucket: &str,
        event_type: EventType,
        ctx: &RequestContext,
    ) -> Result<Accepted> {
        self.append_notice(bucket, "", event_type, ctx, None).await
    }

    /// Append an event that changes no object (bucket events, `ObjectAccessed:*`,
    /// `ObjectAccess:Denied`); `seen` is the object state an access read, if any. Returns
    /// once it is durable. It goes to the partition of `bucket/key` when this node writes it,
    /// else to the first partition it writes: no key's state depends on these events, so no
    /// order is broken. Their sequence is 0: per-key sequences count changes only.
    pub async fn append_notice(
        &self,
        bucket: &str,
        key: &str,
        event_type: EventType,
        ctx: &RequestContext,
        seen: Option<ObjectState>,
    ) -> Result<Accepted> {
        debug_assert!(!event_type.mutates_object());
        let _outstanding = self.appends.read().await;
        let partition = {
            let owned = self.owned.read().unwrap();
            let home = partition_for(log_key(bucket, key).as_bytes(), self.partitions);
            match owned.contains(&home) {
                true => home,
                false => *owned.first().ok_or_else(|| {
                    Error::Unavailable("this node writes no partition yet; retry".into())
                })?,
            }
        };
        let mut event = ObjectEvent::new(
            Uuid::now_v7(),
            event_type,
            now_us(),
            bucket.to_string(),
            key.to_string(),
            0,
            seen,
        );
        event.requester = ctx.requester.clone();
        event.source_ip = ctx.source_ip.clone();
        event.request_id = ctx.request_id.clone();
        event.region = self.origin.region.clone();
        event.node = self.origin.node.clone();
        let mut value = Vec::with_capacity(128);
        self.codec.encode(&event, &mut value);
        let mut record = NewRecord::new(Bytes::from(log_key(bucket, key)), value);
        record.partition = Some(partition);
        let positions = self.log.append(OBJECTS_TOPIC, vec![record]).await?;
        Ok(Accepted {
            event_id: event.event_id,
            position: positions[0],
        })
    }

    /// The partition a key's events go to.
    pub fn partition_of(&self, bucket: &str, key: &str) -> u32 {
        partition_for(log_key(bucket, key).as_bytes(), self.partitions)
    }

    pub fn owns(&self, partition: u32) -> bool {
        self.owned.read().unwrap().contains(&partition)
    }

    pub fn owned(&self) -> BTreeSet<u32> {
        self.owned.read().unwrap().clone()
    }

    /// Start writing `partition`, with `heads` for its keys: the caller made sure the index has
    /// applied the partition to its end, and that no other node writes it any more.
    pub fn acquire(&self, partition: u32, heads: HeadMap<Head>) {
        self.heads.lock().unwrap().extend(heads);
        self.owned.write().unwrap().insert(partition);
    }

    /// Stop writing `partitions`; returns once no append is in flight any more.
    pub async fn release(&self, partitions: &BTreeSet<u32>) {
        self.owned
            .write()
            .unwrap()
            .retain(|p| !partitions.contains(p));
        drop(self.appends.write().await);
    }

    /// Whether a failed append left the heads to be resynced before the next mutation.
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Acquire)
    }

    /// Number of keys with a head (including deleted keys).
    pub fn key_count(&self) -> usize {
        self.heads.lock().unwrap().len()
    }

    /// A key's current state as this node knows it: ingest's own head for a partition it
    /// writes (ahead of the index), else the index's (which follows the log other nodes
    /// write). `None` when the object does not exist.
    pub fn known_state(&self, bucket: &str, key: &str) -> Result<Option<ObjectState>> {
        if self.owns(self.partition_of(bucket, key)) {
            return Ok(self.head(bucket, key).and_then(|h| h.state));
        }
        Ok(self.index.get(bucket, key)?.and_then(|h| h.state))
    }

    /// A key's head as ingest knows it this moment (ahead of the index, which may lag);
    /// `None` for a key never written.
    pub fn head(&self, bucket: &str, key: &str) -> Option<Head> {
        self.heads
            .lock()
            .unwrap()
            .get(&log_key(bucket, key))
            .cloned()
    }
}

/// Every key's head: the index's (heads and applied offsets read in one transaction), then
/// every record the index has not applied yet.
async fn load_heads(
    log: &dyn Log,
    codec: &EventCodec,
    index: &ObjectIndex,
) -> Result<HeadMap<Head>> {
    let (mut heads, applied) = index.heads_and_applied()?;
    for p in 0..log.partitions(OBJECTS_TOPIC)? {
        let range = log.offsets(OBJECTS_TOPIC, p).await?;
        let mut next = applied
            .get(&p)
            .copied()
            .unwrap_or(range.start)
            .max(range.start);
        while next < range.end {
            let records = log
                .read(OBJECTS_TOPIC, p, next, 50_000, Duration::ZERO)
                .await?;
            let Some(last) = records.last() else { break };
            next = last.offset + 1;
            for rec in records {
                let event = codec.decode_for_index(&rec.value)?;
                if event.event_type.mutates_object() {
                    heads.insert(event.log_key(), event.into_head());
                }
            }
        }
    }
    Ok(heads)
}
