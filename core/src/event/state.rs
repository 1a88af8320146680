//! The state of one object version: what the index stores and what `previous` carries.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::time::format_us;

/// User metadata and tags: sorted so encodings and comparisons are deterministic.
pub type StringMap = BTreeMap<String, String>;

/// An object as it exists after some event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectState {
    pub version_id: Option<String>,
    /// Sequence of the event that produced this state.
    pub sequence: i64,
    pub size: i64,
    pub etag: Option<String>,
    pub content_type: Option<String>,
    pub sha256: Option<String>,
    pub metadata: StringMap,
    pub tags: StringMap,
    pub storage_class: Option<String>,
    /// Event time of the change that last modified the object's content or attributes.
    pub last_modified: i64,
    /// Standard HTTP headers kept with the object, by lower-case name (`cache-control`,
    /// `content-disposition`, `content-encoding`, `content-language`, `expires`); schema v3.
    pub headers: StringMap,
    /// The checksum verified at upload, `ALGORITHM:base64`; schema v3.
    pub checksum: Option<String>,
    /// A multipart object's part sizes, in order; schema v3.
    pub part_sizes: Option<Vec<i64>>,
}

impl ObjectState {
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "version_id": self.version_id,
            "sequence": self.sequence,
            "size": self.size,
            "etag": self.etag,
            "content_type": self.content_type,
            "sha256": self.sha256,
            "metadata": self.metadata,
            "tags": self.tags,
            "storage_class": self.storage_class,
            "last_modified": format_us(self.last_modified),
        });
        add_v3(&mut v, &self.headers, &self.checksum, &self.part_sizes);
        v
    }
}

/// The latest known state of a key: its last sequence, and the object if it exists.
/// A deleted key keeps its sequence so the next event of that key continues from it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Head {
    pub sequence: i64,
    /// Id of the event that produced this head.
    pub event_id: Uuid,
    pub state: Option<ObjectState>,
}

/// Adds the schema v3 fields to a JSON view when they hold something (so views of objects
/// without them read as before).
pub(crate) fn add_v3(
    v: &mut serde_json::Value,
    headers: &StringMap,
    checksum: &Option<String>,
    part_sizes: &Option<Vec<i64>>,
) {
    if !headers.is_empty() {
        v["headers"] = serde_json::json!(headers);
    }
    if let Some(c) = checksum {
        v["checksum"] = c.clone().into();
    }
    if let Some(p) = part_sizes {
        v["part_sizes"] = serde_json::json!(p);
    }
}
