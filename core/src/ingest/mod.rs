//! Ingest: validated mutations become object events. Under one lock, each mutation is checked
//! against its key's head (current state and sequence), turned into an event with the next
//! sequence and the previous state, encoded, and queued to the log in order; the caller is
//! answered only once the log says the events are durable.
//!
//! Heads come from `heads.rs`: the ones the index has not applied yet, a bounded cache, and the
//! index itself, so memory is set by configuration, not by the number of keys. After a start
//! (or a failed append) ingest first waits until the index has applied the whole log, so the
//! index is the truth for every key it has no pending head for; nothing is read up front.
//!
//! A node writes only the partitions it owns (all of them on the embedded log; a share of
//! them when several nodes use one Kafka cluster, see `ownership.rs`), so every key has one
//! writer and its sequence one source.

pub mod dedup;
mod heads;
mod mutation;
pub mod ownership;
pub mod s3_events;
pub mod stats;
pub mod sync;
pub mod writer;

pub use mutation::{
    BatchLimits, Condition, MAX_KEY_BYTES, MAX_TAGS, Mutation, Op, parse_batch, validate_bucket,
    validate_key,
};
pub use stats::{IngestStats, Interface};
pub use writer::{Writer, Written};

use std::collections::{BTreeMap, BTreeSet};
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
    /// The client's User-Agent.
    pub user_agent: Option<String>,
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

/// Longest a write waits for the index (catching up after a start, or backpressure).
const CATCH_UP: Duration = Duration::from_secs(30);
/// Pending heads past which each batch first drops the ones the index applied.
const PRUNE_AT: usize = 4096;
/// Index look-ups of a batch done on the async thread itself, without `block_in_place`.
const INLINE_LOOK_UPS: usize = 8;

pub struct Ingestor {
    log: Arc<dyn Log>,
    codec: Arc<EventCodec>,
    index: Arc<ObjectIndex>,
    origin: Origin,
    /// Partitions of `objects`.
    partitions: u32,
    /// Partitions this node writes now.
    owned: RwLock<BTreeSet<u32>>,
    heads: Mutex<heads::Heads>,
    /// Bytes of pending heads (events the index has not applied) past which writes wait for
    /// the index.
    pending_budget: usize,
    /// Log ends the index must reach before the next write (after a start or a failed
    /// append): until then the index may not know a key's newest event.
    catch_up: Mutex<Option<BTreeMap<u32, u64>>>,
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
    /// Open ingest over `index`; writes wait until it has applied the log's current end.
    /// `cache_bytes`: the budget of cached heads (pending heads get as much again).
    pub async fn recover(
        log: Arc<dyn Log>,
        codec: Arc<EventCodec>,
        index: Arc<ObjectIndex>,
        origin: Origin,
        owned: BTreeSet<u32>,
        cache_bytes: usize,
    ) -> Result<Ingestor> {
        let ends = log_ends(log.as_ref()).await?;
        Ok(Ingestor {
            partitions: log.partitions(OBJECTS_TOPIC)?,
            owned: RwLock::new(owned),
            log,
            codec,
            index,
            origin,
            heads: Mutex::new(heads::Heads::new(cache_bytes)),
            pending_budget: cache_bytes.max(1 << 20),
            catch_up: Mutex::new(Some(ends)),
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
        self.wait_for_index().await?;
        self.limit_pending().await?;
        let _outstanding = self.appends.read().await;
        let now = now_us();
        let mut outcomes = Vec::with_capacity(mutations.len());
        let mut records = Vec::with_capacity(mutations.len());
        // Per record: its key and sequence, to mark its pending head landed.
        let mut written: Vec<(String, i64)> = Vec::with_capacity(mutations.len());
        let append = {
            let owned = self.owned.read().unwrap();
            let mut heads = self.heads.lock().unwrap();
            let mut read = self.look_up(&mut heads, &mutations)?;
            for m in mutations {
                let key = log_key(&m.bucket, &m.key);
                let partition = partition_for(key.as_bytes(), self.partitions);
                if !owned.contains(&partition) {
                    outcomes.push(Err(Error::NotOwner(partition)));
                    continue;
                }
                let head = heads
                    .get(&key)
                    .or_else(|| read.get(&key).and_then(Option::as_ref));
                match self.event_for(m, head, ctx, now) {
                    Ok(mut event) => {
                        // The replaced head (moved, not cloned) gives `previous`; a key read
                        // from the index is in the map from its first write of the batch on.
                        let old = heads
                            .written(key.clone(), partition, event.head())
                            .or_else(|| read.remove(&key).flatten());
                        event.previous = old.and_then(|h| h.state);
                        let mut value = Vec::with_capacity(256);
                        self.codec.encode(&event, &mut value);
                        outcomes.push(Ok((event.event_id, records.len())));
                        written.push((key.clone(), event.sequence));
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
                    let mut heads = self.heads.lock().unwrap();
                    for ((key, sequence), at) in written.into_iter().zip(&p) {
                        heads.landed(key, sequence, at.offset);
                    }
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

    /// After a failed append (its events may or may not be in the log): forget every head
    /// and let the index apply the whole log before the next write. Waits until no append
    /// is outstanding; fails (and stays stale) while the log cannot be read.
    async fn resync(&self) -> Result<()> {
        let _exclusive = self.appends.write().await;
        if !self.stale.load(Ordering::Acquire) {
            return Ok(()); // another request resynced while this one waited
        }
        let ends = log_ends(self.log.as_ref()).await.map_err(|e| {
            Error::Unavailable(format!("the log is unavailable ({e}); retry later"))
        })?;
        self.heads.lock().unwrap().clear();
        *self.catch_up.lock().unwrap() = Some(ends);
        self.stale.store(false, Ordering::Release);
        tracing::info!("ingest resyncs: the index applies the log before the next write");
        Ok(())
    }

    /// Wait (up to [`CATCH_UP`]) until the index has applied the log ends recorded at the
    /// start or the last resync.
    async fn wait_for_index(&self) -> Result<()> {
        let Some(ends) = self.catch_up.lock().unwrap().clone() else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        loop {
            let applied = self.index.applied()?;
            let behind: u64 = ends
                .iter()
                .map(|(p, end)| end.saturating_sub(applied.get(p).copied().unwrap_or(0)))
                .sum();
            if behind == 0 {
                *self.catch_up.lock().unwrap() = None;
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "the index is catching up with the log ({behind} records behind) before \
                     writes resume; retry"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Backpressure: while the heads of events the index has not applied take more than their
    /// budget, wait for the index (up to [`CATCH_UP`]).
    async fn limit_pending(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        loop {
            if self.heads.lock().unwrap().pending_bytes() <= self.pending_budget {
                return Ok(());
            }
            let applied = self.index.applied()?;
            let within = {
                let mut heads = self.heads.lock().unwrap();
                heads.prune(&applied);
                heads.pending_bytes() <= self.pending_budget
            };
            if within {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Unavailable(
                    "the index is far behind the log; writes wait for it (retry)".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The heads of the keys of `mutations` that are neither pending nor cached, read from the
    /// index in one transaction. They are not cached here: a put replaces its key's head at
    /// once, so caching the old one would only cost an insert and an eviction. Also drops
    /// pending heads the index has applied, when there are many.
    fn look_up(
        &self,
        heads: &mut heads::Heads,
        mutations: &[Mutation],
    ) -> Result<HeadMap<Option<Head>>> {
        if heads.pending_len() > PRUNE_AT {
            heads.prune(&self.index.applied()?);
        }
        // One buffer for the look-ups: most keys are known, and need no string of their own.
        let mut key = String::new();
        let mut missing: Vec<String> = Vec::new();
        for m in mutations {
            key.clear();
            key.push_str(&m.bucket);
            key.push('/');
            key.push_str(&m.key);
            if !heads.knows(&key) {
                missing.push(key.clone());
            }
        }
        if missing.is_empty() {
            return Ok(HeadMap::default());
        }
        // In key order, the look-ups walk the index's pages in order.
        missing.sort_unstable();
        missing.dedup();
        // A batch's look-ups block this thread: for many keys, let the runtime move other
        // tasks off it meanwhile. A few (one S3 PUT's key) take microseconds, less than
        // handing the worker's place to another thread would.
        let found = if missing.len() <= INLINE_LOOK_UPS {
            self.index.heads_of(&missing)?
        } else {
            tokio::task::block_in_place(|| self.index.heads_of(&missing))?
        };
        Ok(missing.into_iter().zip(found).collect())
    }

    fn event_for(
        &self,
        mut m: Mutation,
        head: Option<&Head>,
        ctx: &RequestContext,
        now: i64,
    ) -> Result<ObjectEvent> {
        let current = head.and_then(|h| h.state.as_ref());
        let sequence = head.map_or(0, |h| h.sequence) + 1;
        let event_time = m.event_time.unwrap_or(now);
        let path = format!("{}/{}", m.bucket, m.key);
        if let Some(Condition::Sequence(want)) = &m.condition {
            let at = head.map_or(0, |h| h.sequence);
            if at != *want {
                return Err(Error::Conflict(format!(
                    "{path} changed meanwhile (its last event is number {at}, not {want}); \
                     read it again and retry"
                )));
            }
        }
        match (&m.condition, current) {
            (Some(Condition::Absent), Some(_)) => {
                return Err(Error::Conflict(format!(
                    "{path} exists already (the write was conditional on no object being there)"
                )));
            }
            (Some(Condition::ETag(_)), None) => {
                return Err(Error::NotFound(format!(
                    "object {path} does not exist (the write was conditional on its ETag)"
                )));
            }
            (Some(Condition::ETag(want)), Some(cur))
                if cur.etag.as_deref().map(|e| e.trim_matches('"')) != Some(want.as_str()) =>
            {
                return Err(Error::Conflict(format!(
                    "the ETag of {path} is not '{want}' (the write was conditional on it)"
                )));
            }
            _ => {}
        }
        // A delete marker stacks on a key whose latest version is a marker, or that never had
        // an object, as S3 versioning does; every other change needs the object.
        let marker = m.event_type == Some(EventType::ObjectRemovedDeleteMarkerCreated);
        // A marker's `version_id` is its own (`null` in a suspended bucket), not a condition.
        let marker_version = if marker { m.version_id.take() } else { None };
        // Removing one version needs no current object (it may sit behind a marker).
        let removes_version = m.removed_version_id.is_some();
        if m.op != Op::Put && !(marker && current.is_none()) && !removes_version {
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
                headers: m.headers.unwrap_or_default(),
                checksum: m.checksum,
                part_sizes: m.part_sizes,
            }),
            Op::Delete if removes_version => m.after.take().map(|a| *a),
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
        event.user_agent = ctx.user_agent.clone();
        event.region = self.origin.region.clone();
        event.node = self.origin.node.clone();
        if marker_version.is_some() {
            event.version_id = marker_version;
        }
        event.removed_version_id = m.removed_version_id;
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
        event.user_agent = ctx.user_agent.clone();
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

    /// Start writing `partition`: the caller made sure the index has applied the partition to
    /// its end, and that no other node writes it any more. Heads this node kept of its keys
    /// from an earlier time it wrote them are stale: the index has them right.
    pub fn acquire(&self, partition: u32) {
        self.heads
            .lock()
            .unwrap()
            .forget_partitions(&BTreeSet::from([partition]));
        self.owned.write().unwrap().insert(partition);
    }

    /// Stop writing `partitions`; returns once no append is in flight any more.
    pub async fn release(&self, partitions: &BTreeSet<u32>) {
        self.owned
            .write()
            .unwrap()
            .retain(|p| !partitions.contains(p));
        drop(self.appends.write().await);
        self.heads.lock().unwrap().forget_partitions(partitions);
    }

    /// Whether a failed append left the heads to be resynced before the next mutation.
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Acquire)
    }

    /// Heads held now: (pending for the index, cached), and the bytes they take.
    pub fn heads_held(&self) -> (usize, usize, usize) {
        let h = self.heads.lock().unwrap();
        (
            h.pending_len(),
            h.cached_len(),
            h.pending_bytes() + h.cache_bytes(),
        )
    }

    /// A key's current state as this node knows it: ingest's own head for a partition it
    /// writes (ahead of the index), else the index's (which follows the log other nodes
    /// write). `None` when the object does not exist.
    pub fn known_state(&self, bucket: &str, key: &str) -> Result<Option<ObjectState>> {
        if self.owns(self.partition_of(bucket, key)) {
            return Ok(self.head(bucket, key)?.and_then(|h| h.state));
        }
        Ok(self.index.get(bucket, key)?.and_then(|h| h.state))
    }

    /// A key's head as ingest knows it this moment (ahead of the index, which may lag);
    /// `None` for a key never written.
    pub fn head(&self, bucket: &str, key: &str) -> Result<Option<Head>> {
        let key = log_key(bucket, key);
        if let Some(h) = self.heads.lock().unwrap().get(&key) {
            return Ok(Some(h.clone()));
        }
        let (b, k) = key.split_once('/').unwrap_or((&key, ""));
        self.index.get(b, k)
    }
}

/// Every partition's end (the next offset).
async fn log_ends(log: &dyn Log) -> Result<BTreeMap<u32, u64>> {
    let mut ends = BTreeMap::new();
    for p in 0..log.partitions(OBJECTS_TOPIC)? {
        ends.insert(p, log.offsets(OBJECTS_TOPIC, p).await?.end);
    }
    Ok(ends)
}
