//! Object events: the one record type written to the `objects` topic.

mod json;
mod sample;
mod state;
mod types;

pub use json::state_from_json;
pub use sample::sample_event;
use state::add_v3;
pub use state::{Head, ObjectState, StringMap};
pub use types::EventType;

use uuid::Uuid;

use crate::time::format_us;

/// One change to one object. The top-level fields hold the object AFTER the change; `previous`
/// holds it BEFORE (absent when the object did not exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    /// UUIDv7, the idempotency key for every consumer.
    pub event_id: Uuid,
    pub event_type: EventType,
    /// Microseconds since the epoch, UTC.
    pub event_time: i64,
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
    /// Strictly increasing per bucket/key.
    pub sequence: i64,
    /// `None` when the object no longer exists after this event.
    pub size: Option<i64>,
    pub etag: Option<String>,
    pub content_type: Option<String>,
    pub sha256: Option<String>,
    pub metadata: StringMap,
    pub tags: StringMap,
    pub storage_class: Option<String>,
    pub requester: Option<String>,
    pub source_ip: Option<String>,
    pub request_id: Option<String>,
    pub region: Option<String>,
    pub node: Option<String>,
    pub previous: Option<ObjectState>,
    /// The User-Agent of the request that made the change, when known (schema version 2).
    pub user_agent: Option<String>,
    /// Standard HTTP headers kept with the object (schema version 3); see [`ObjectState`].
    pub headers: StringMap,
    /// The checksum verified at upload, `ALGORITHM:base64` (schema version 3).
    pub checksum: Option<String>,
    /// A multipart object's part sizes, in order (schema version 3).
    pub part_sizes: Option<Vec<i64>>,
    /// For `ObjectRemoved:Delete` of one version: the version or delete marker removed; the
    /// object fields then hold the object after (schema version 3).
    pub removed_version_id: Option<String>,
}

impl ObjectEvent {
    /// An event whose object fields come from `after` (absent after a removal); request
    /// context and `previous` start empty.
    pub fn new(
        event_id: Uuid,
        event_type: EventType,
        event_time: i64,
        bucket: String,
        key: String,
        sequence: i64,
        after: Option<ObjectState>,
    ) -> ObjectEvent {
        let mut e = ObjectEvent {
            event_id,
            event_type,
            event_time,
            bucket,
            key,
            version_id: None,
            sequence,
            size: None,
            etag: None,
            content_type: None,
            sha256: None,
            metadata: StringMap::new(),
            tags: StringMap::new(),
            storage_class: None,
            requester: None,
            source_ip: None,
            request_id: None,
            region: None,
            node: None,
            previous: None,
            user_agent: None,
            headers: StringMap::new(),
            checksum: None,
            part_sizes: None,
            removed_version_id: None,
        };
        if let Some(a) = after {
            e.version_id = a.version_id;
            e.size = Some(a.size);
            e.etag = a.etag;
            e.content_type = a.content_type;
            e.sha256 = a.sha256;
            e.metadata = a.metadata;
            e.tags = a.tags;
            e.storage_class = a.storage_class;
            e.headers = a.headers;
            e.checksum = a.checksum;
            e.part_sizes = a.part_sizes;
        }
        e
    }

    /// The log key: `bucket/key`, so one object's events share a partition and keep their order.
    pub fn log_key(&self) -> String {
        log_key(&self.bucket, &self.key)
    }

    /// The object as it exists after this event (`None` after a removal).
    pub fn after_state(&self) -> Option<ObjectState> {
        let size = self.size?;
        Some(ObjectState {
            version_id: self.version_id.clone(),
            sequence: self.sequence,
            size,
            etag: self.etag.clone(),
            content_type: self.content_type.clone(),
            sha256: self.sha256.clone(),
            metadata: self.metadata.clone(),
            tags: self.tags.clone(),
            storage_class: self.storage_class.clone(),
            last_modified: self.event_time,
            headers: self.headers.clone(),
            checksum: self.checksum.clone(),
            part_sizes: self.part_sizes.clone(),
        })
    }

    /// The head this event leaves behind for its key, taking the event apart (no copies).
    pub fn into_head(self) -> Head {
        let state = self.size.map(|size| ObjectState {
            version_id: self.version_id,
            sequence: self.sequence,
            size,
            etag: self.etag,
            content_type: self.content_type,
            sha256: self.sha256,
            metadata: self.metadata,
            tags: self.tags,
            storage_class: self.storage_class,
            last_modified: self.event_time,
            headers: self.headers,
            checksum: self.checksum,
            part_sizes: self.part_sizes,
        });
        Head {
            sequence: self.sequence,
            event_id: self.event_id,
            state,
        }
    }

    /// The head this event leaves behind for its key.
    pub fn head(&self) -> Head {
        Head {
            sequence: self.sequence,
            event_id: self.event_id,
            state: self.after_state(),
        }
    }

    /// JSON view used by `log tail --json`, the HTTP API and the webhook payloads.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "event_id": self.event_id.to_string(),
            "event_type": self.event_type.as_str(),
            "event_time": format_us(self.event_time),
            "bucket": self.bucket,
            "key": self.key,
            "version_id": self.version_id,
            "sequence": self.sequence,
            "size": self.size,
            "etag": self.etag,
            "content_type": self.content_type,
            "sha256": self.sha256,
            "metadata": self.metadata,
            "tags": self.tags,
            "storage_class": self.storage_class,
            "requester": self.requester,
            "source_ip": self.source_ip,
            "request_id": self.request_id,
            "region": self.region,
            "node": self.node,
            "previous": self.previous.as_ref().map(ObjectState::to_json),
            "user_agent": self.user_agent,
        });
        add_v3(&mut v, &self.headers, &self.checksum, &self.part_sizes);
        if let Some(r) = &self.removed_version_id {
            v["removed_version_id"] = r.clone().into();
        }
        v
    }
}

/// The leading fields of an event, borrowed: what the index's history and keys need, and all a
/// rebuild reads of most events.
#[derive(Debug, Clone, Copy)]
pub struct EventSummary<'a> {
    pub event_id: Uuid,
    pub event_type: EventType,
    pub event_time: i64,
    pub bucket: &'a str,
    pub key: &'a str,
    pub version_id: Option<&'a str>,
    pub sequence: i64,
    pub size: Option<i64>,
    pub etag: Option<&'a str>,
    /// Not among the leading fields: set from a full decode (a scan leaves it `None`; see
    /// [`EventSummary::needs_full_decode`]).
    pub removed_version_id: Option<&'a str>,
}

impl EventSummary<'_> {
    /// Whether a summary scanned from the leading fields misses something the index keeps:
    /// an `ObjectRemoved:Delete` may have removed one version.
    pub fn needs_full_decode(&self) -> bool {
        self.event_type == EventType::ObjectRemovedDelete
    }
}

impl ObjectEvent {
    pub fn summary(&self) -> EventSummary<'_> {
        EventSummary {
            event_id: self.event_id,
            event_type: self.event_type,
            event_time: self.event_time,
            bucket: &self.bucket,
            key: &self.key,
            version_id: self.version_id.as_deref(),
            sequence: self.sequence,
            size: self.size,
            etag: self.etag.as_deref(),
            removed_version_id: self.removed_version_id.as_deref(),
        }
    }
}

/// Maps keyed by `bucket/key`, hashed with foldhash: several times faster than SipHash on
/// these keys (SipHash was a tenth of a rebuild) and still seeded per process, so clients
/// cannot pick keys that collide.
pub type HeadMap<V> = std::collections::HashMap<String, V, foldhash::fast::RandomState>;

/// `bucket/key`. Bucket names cannot contain `/`, so the first `/` splits the two again.
pub fn log_key(bucket: &str, key: &str) -> String {
    let mut s = String::with_capacity(bucket.len() + 1 + key.len());
    s.push_str(bucket);
    s.push('/');
    s.push_str(key);
    s
}
