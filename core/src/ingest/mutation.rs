//! Mutations as clients send them (`POST /v1/mutations`), and their validation. Every error
//! names the field (`mutations[3].key`) and what is wrong with it.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;

use crate::event::{EventType, StringMap};
use crate::time::parse_rfc3339_us;
use crate::{Error, Result};

/// S3's limits, applied to every mutation so events stay valid S3 objects.
pub const MAX_KEY_BYTES: usize = 1024;
pub const MAX_OBJECT_SIZE: i64 = 5 << 40;
pub const MAX_METADATA_BYTES: usize = 2048;
pub const MAX_TAGS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Create or overwrite the object.
    Put,
    /// Remove the object.
    Delete,
    /// Replace the object's tag set.
    Tag,
    /// Remove all of the object's tags.
    Untag,
    /// Replace the object's user metadata (and optionally its content type).
    Metadata,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Delete => "delete",
            Op::Tag => "tag",
            Op::Untag => "untag",
            Op::Metadata => "metadata",
        }
    }

    /// The event type a mutation of this op appends unless it names a more precise one.
    pub fn event_type(self) -> EventType {
        match self {
            Op::Put => EventType::ObjectCreatedPut,
            Op::Delete => EventType::ObjectRemovedDelete,
            Op::Tag => EventType::ObjectTaggingPut,
            Op::Untag => EventType::ObjectTaggingDelete,
            Op::Metadata => EventType::ObjectMetadataUpdate,
        }
    }

    /// Whether an event of type `t` can record this op (S3 distinguishes how an object was
    /// created or removed; the state change is the same).
    pub fn admits(self, t: EventType) -> bool {
        use EventType::*;
        match self {
            Op::Put => matches!(
                t,
                ObjectCreatedPut | ObjectCreatedCopy | ObjectCreatedCompleteMultipartUpload
            ),
            Op::Delete => matches!(
                t,
                ObjectRemovedDelete | ObjectRemovedDeleteMarkerCreated | LifecycleExpirationDelete
            ),
            _ => t == self.event_type(),
        }
    }

    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "put" => Op::Put,
            "delete" => Op::Delete,
            "tag" => Op::Tag,
            "untag" => Op::Untag,
            "metadata" => Op::Metadata,
            _ => return None,
        })
    }
}

/// A condition the object must meet for a mutation to apply. It is checked with the write,
/// under the ingest lock of the key, so of two writers racing on one condition exactly one
/// passes (`If-None-Match: *` creates, `If-Match` compares and swaps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The key holds no object (`if_none_match: "*"`).
    Absent,
    /// The current object's ETag is this one (`if_match`).
    ETag(String),
    /// The key's last event has this sequence (`if_sequence`): nothing changed it since the
    /// caller read it.
    Sequence(i64),
}

/// A validated mutation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    pub op: Op,
    pub bucket: String,
    pub key: String,
    pub size: Option<i64>,
    pub etag: Option<String>,
    pub content_type: Option<String>,
    pub sha256: Option<String>,
    pub storage_class: Option<String>,
    pub metadata: Option<StringMap>,
    pub tags: Option<StringMap>,
    /// For `put`: the new version's id. Otherwise: a precondition on the current version.
    pub version_id: Option<String>,
    pub event_time: Option<i64>,
    /// The event type when more precise than the op's (`ObjectCreated:Copy` for a put, as S3
    /// notifications say); `None`: [`Op::event_type`].
    pub event_type: Option<EventType>,
    /// What the object must be for the mutation to apply; refused as a conflict otherwise.
    pub condition: Option<Condition>,
    /// For `put`: standard HTTP headers kept with the object ([`STORED_HEADERS`]).
    pub headers: Option<StringMap>,
    /// For `put`: the checksum verified at upload, `ALGORITHM:base64`.
    pub checksum: Option<String>,
    /// For `put`: a multipart object's part sizes, in order (they add up to `size`).
    pub part_sizes: Option<Vec<i64>>,
    /// For `delete` of one version of a versioned object (`remove_version`): the version or
    /// delete marker removed for good. The event is `ObjectRemoved:Delete` and the object
    /// after it is [`Mutation::after`].
    pub removed_version_id: Option<String>,
    /// With `removed_version_id`: the object after the removal (the current one unchanged, or
    /// an older version made current again), as the caller read it from the key's history;
    /// `None` when no object is left. Give it with [`Condition::Sequence`].
    pub after: Option<Box<crate::event::ObjectState>>,
}

/// The standard HTTP headers an object keeps and returns on reads, as S3 does.
pub const STORED_HEADERS: [&str; 5] = [
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
];

/// The checksum algorithms of `ALGORITHM:base64` checksums.
pub const CHECKSUM_ALGORITHMS: [&str; 5] = ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"];

impl Mutation {
    /// A mutation of `op` with no optional field set (callers other than the JSON API build
    /// theirs from it); it still has to pass the op's rules, e.g. a put needs a size.
    pub fn new(op: Op, bucket: impl Into<String>, key: impl Into<String>) -> Mutation {
        Mutation {
            op,
            bucket: bucket.into(),
            key: key.into(),
            size: None,
            etag: None,
            content_type: None,
            sha256: None,
            storage_class: None,
            metadata: None,
            tags: None,
            version_id: None,
            event_time: None,
            event_type: None,
            condition: None,
            headers: None,
            checksum: None,
            part_sizes: None,
            removed_version_id: None,
            after: None,
        }
    }

    /// The mutation as a client sends it (to forward it to the node that writes its key).
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("op".into(), self.op.as_str().into());
        m.insert("bucket".into(), self.bucket.clone().into());
        m.insert("key".into(), self.key.clone().into());
        let mut opt = |name: &str, v: Option<serde_json::Value>| {
            if let Some(v) = v {
                m.insert(name.into(), v);
            }
        };
        opt("size", self.size.map(Into::into));
        opt("etag", self.etag.clone().map(Into::into));
        opt("content_type", self.content_type.clone().map(Into::into));
        opt("sha256", self.sha256.clone().map(Into::into));
        opt("storage_class", self.storage_class.clone().map(Into::into));
        opt(
            "metadata",
            self.metadata.as_ref().map(|x| serde_json::json!(x)),
        );
        opt("tags", self.tags.as_ref().map(|x| serde_json::json!(x)));
        opt("version_id", self.version_id.clone().map(Into::into));
        opt(
            "event_time",
            self.event_time.map(|t| crate::time::format_us(t).into()),
        );
        opt("event_type", self.event_type.map(|t| t.as_str().into()));
        opt(
            "headers",
            self.headers.as_ref().map(|x| serde_json::json!(x)),
        );
        opt("checksum", self.checksum.clone().map(Into::into));
        opt(
            "part_sizes",
            self.part_sizes.as_ref().map(|x| serde_json::json!(x)),
        );
        opt(
            "remove_version",
            self.removed_version_id.clone().map(Into::into),
        );
        opt("after", self.after.as_ref().map(|a| a.to_json()));
        match &self.condition {
            Some(Condition::Absent) => opt("if_none_match", Some("*".into())),
            Some(Condition::ETag(e)) => opt("if_match", Some(e.clone().into())),
            Some(Condition::Sequence(n)) => opt("if_sequence", Some((*n).into())),
            None => {}
        }
        serde_json::Value::Object(m)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch<'a> {
    #[serde(borrow)]
    mutations: Vec<RawMutation<'a>>,
}

/// As sent. Fields only read during validation borrow from the body when they can.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMutation<'a> {
    #[serde(borrow)]
    op: Option<Cow<'a, str>>,
    bucket: Option<String>,
    key: Option<String>,
    size: Option<i64>,
    etag: Option<String>,
    content_type: Option<String>,
    sha256: Option<String>,
    storage_class: Option<String>,
    metadata: Option<BTreeMap<String, String>>,
    tags: Option<BTreeMap<String, String>>,
    version_id: Option<String>,
    #[serde(borrow)]
    event_time: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event_type: Option<Cow<'a, str>>,
    if_match: Option<String>,
    if_none_match: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    checksum: Option<String>,
    part_sizes: Option<Vec<i64>>,
    remove_version: Option<String>,
    after: Option<serde_json::Value>,
    if_sequence: Option<i64>,
}

/// Limits on one request.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_mutations: usize,
}

/// Parse and validate a request body. All-or-nothing: one bad mutation rejects the batch.
pub fn parse_batch(body: &[u8], limits: BatchLimits) -> Result<Vec<Mutation>> {
    // serde would also take a struct written as an array; only the object form is the API.
    if let Some(&first) = body.iter().find(|b| !b.is_ascii_whitespace())
        && first != b'{'
    {
        return Err(Error::invalid(
            "body",
            "must be a JSON object: {\"mutations\": [...]}",
        ));
    }
    // Parse without path tracking first (the common, valid case); only a body that fails is
    // parsed again to find the path of the offending field.
    let raw: RawBatch = match serde_json::from_slice(body) {
        Ok(raw) => raw,
        Err(_) => return Err(parse_error(body)),
    };
    if raw.mutations.is_empty() {
        return Err(Error::invalid(
            "mutations",
            "must contain at least one mutation",
        ));
    }
    if raw.mutations.len() > limits.max_mutations {
        return Err(Error::invalid(
            "mutations",
            format!(
                "{} mutations exceed the limit of {} per request; split the batch",
                raw.mutations.len(),
                limits.max_mutations
            ),
        ));
    }
    raw.mutations
        .into_iter()
        .enumerate()
        .map(|(i, m)| validate(m, i))
        .collect()
}

/// The error for a body that does not parse, naming the path of the offending field.
fn parse_error(body: &[u8]) -> Error {
    match crate::error::parse_json::<RawBatch>(body) {
        Err(e) => e,
        Ok(_) => Error::invalid("body", "could not be parsed"),
    }
}

/// Validate mutation number `i`; field names (`mutations[i].key`) are built only for errors.
fn validate(m: RawMutation<'_>, i: usize) -> Result<Mutation> {
    let field = |name: &str| format!("mutations[{i}].{name}");
    let op_text = m.op.ok_or_else(|| {
        Error::invalid(
            field("op"),
            "is required (put, delete, tag, untag or metadata)",
        )
    })?;
    let op = Op::parse(&op_text).ok_or_else(|| {
        Error::invalid(
            field("op"),
            format!("unknown op '{op_text}'; expected put, delete, tag, untag or metadata"),
        )
    })?;
    let bucket = m
        .bucket
        .ok_or_else(|| Error::invalid(field("bucket"), "is required"))?;
    validate_bucket(&bucket).map_err(|msg| Error::invalid(field("bucket"), msg))?;
    let key = m
        .key
        .ok_or_else(|| Error::invalid(field("key"), "is required"))?;
    validate_key(&key).map_err(|msg| Error::invalid(field("key"), msg))?;

    // Which optional fields each op accepts; anything else is a mistake worth reporting.
    let allowed: &[&str] = match op {
        Op::Put => &[
            "size",
            "etag",
            "content_type",
            "sha256",
            "storage_class",
            "metadata",
            "tags",
            "headers",
            "checksum",
            "part_sizes",
        ],
        Op::Delete | Op::Untag => &[],
        Op::Tag => &["tags"],
        Op::Metadata => &["metadata", "content_type"],
    };
    let present = [
        ("size", m.size.is_some()),
        ("etag", m.etag.is_some()),
        ("content_type", m.content_type.is_some()),
        ("sha256", m.sha256.is_some()),
        ("storage_class", m.storage_class.is_some()),
        ("metadata", m.metadata.is_some()),
        ("tags", m.tags.is_some()),
        ("headers", m.headers.is_some()),
        ("checksum", m.checksum.is_some()),
        ("part_sizes", m.part_sizes.is_some()),
    ];
    for (name, is_set) in present {
        if is_set && !allowed.contains(&name) {
            return Err(Error::invalid(
                field(name),
                format!("is not allowed for op '{op_text}'"),
            ));
        }
    }
    match op {
        Op::Put if m.size.is_none() => {
            return Err(Error::invalid(field("size"), "is required for op 'put'"));
        }
        Op::Tag if m.tags.is_none() => {
            return Err(Error::invalid(field("tags"), "is required for op 'tag'"));
        }
        Op::Metadata if m.metadata.is_none() => {
            return Err(Error::invalid(
                field("metadata"),
                "is required for op 'metadata'",
            ));
        }
        _ => {}
    }
    if let Some(size) = m.size
        && !(0..=MAX_OBJECT_SIZE).contains(&size)
    {
        return Err(Error::invalid(
            field("size"),
            format!("must be between 0 and {MAX_OBJECT_SIZE} (5 TiB), got {size}"),
        ));
    }
    if let Some(sha) = &m.sha256
        && !(sha.len() == 64
            && sha
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    {
        return Err(Error::invalid(
            field("sha256"),
            "must be 64 lower-case hex characters",
        ));
    }
    for (name, value) in [
        ("etag", &m.etag),
        ("content_type", &m.content_type),
        ("storage_class", &m.storage_class),
        ("version_id", &m.version_id),
    ] {
        if let Some(v) = value
            && (v.is_empty() || v.len() > 1024)
        {
            return Err(Error::invalid(field(name), "must be 1-1024 bytes"));
        }
    }
    if let Some(meta) = &m.metadata {
        validate_metadata(meta).map_err(|msg| Error::invalid(field("metadata"), msg))?;
    }
    if let Some(tags) = &m.tags {
        validate_tags(tags).map_err(|msg| Error::invalid(field("tags"), msg))?;
    }
    let event_time = m
        .event_time
        .as_deref()
        .map(parse_rfc3339_us)
        .transpose()
        .map_err(|msg| Error::invalid(field("event_time"), msg))?;
    let event_type = match m.event_type.as_deref() {
        None => None,
        Some(name) => match EventType::parse(name) {
            Some(t) if op.admits(t) => Some(t),
            _ => {
                return Err(Error::invalid(
                    field("event_type"),
                    format!("'{name}' does not record op '{op_text}'"),
                ));
            }
        },
    };
    let headers = m
        .headers
        .map(|h| validate_headers(h).map_err(|msg| Error::invalid(field("headers"), msg)))
        .transpose()?;
    if let Some(c) = &m.checksum {
        validate_checksum(c).map_err(|msg| Error::invalid(field("checksum"), msg))?;
    }
    if let (Some(parts), Some(size)) = (&m.part_sizes, m.size)
        && (parts.iter().any(|p| *p < 0) || parts.iter().sum::<i64>() != size || parts.is_empty())
    {
        return Err(Error::invalid(
            field("part_sizes"),
            format!("must be non-negative part sizes that add up to size ({size})"),
        ));
    }
    let removed_version_id = match (m.remove_version, op) {
        (None, _) => None,
        (Some(v), Op::Delete) if !v.is_empty() && v.len() <= 1024 => Some(v),
        (Some(_), Op::Delete) => {
            return Err(Error::invalid(
                field("remove_version"),
                "must be 1-1024 bytes",
            ));
        }
        (Some(_), _) => {
            return Err(Error::invalid(
                field("remove_version"),
                format!("is only for op 'delete', not '{op_text}'"),
            ));
        }
    };
    let after = match (m.after, &removed_version_id) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(Error::invalid(
                field("after"),
                "is only given with remove_version",
            ));
        }
        (Some(v), Some(_)) => Some(Box::new(crate::event::state_from_json(
            &v,
            &field("after"),
        )?)),
    };
    if removed_version_id.is_some() && m.if_sequence.is_none() {
        return Err(Error::invalid(
            field("if_sequence"),
            "is required with remove_version (the key's history was read at that sequence)",
        ));
    }
    if m.if_sequence.is_some() && (m.if_match.is_some() || m.if_none_match.is_some()) {
        return Err(Error::invalid(
            field("if_sequence"),
            "cannot be given with if_match or if_none_match",
        ));
    }
    let condition = match (m.if_match, m.if_none_match.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                field("if_match"),
                "cannot be given with if_none_match",
            ));
        }
        (Some(etag), None) if !etag.is_empty() && etag.len() <= 1024 => {
            Some(Condition::ETag(etag.trim_matches('"').to_string()))
        }
        (Some(_), None) => return Err(Error::invalid(field("if_match"), "must be 1-1024 bytes")),
        (None, Some("*")) if op == Op::Put => Some(Condition::Absent),
        (None, Some("*")) => {
            return Err(Error::invalid(
                field("if_none_match"),
                format!("is only for op 'put', not '{op_text}'"),
            ));
        }
        (None, Some(other)) => {
            return Err(Error::invalid(
                field("if_none_match"),
                format!("must be \"*\" (create only if the key holds no object), got '{other}'"),
            ));
        }
        (None, None) => m.if_sequence.map(Condition::Sequence),
    };
    Ok(Mutation {
        op,
        bucket,
        key,
        size: m.size,
        etag: m.etag,
        content_type: m.content_type,
        sha256: m.sha256,
        storage_class: m.storage_class,
        metadata: m.metadata,
        tags: m.tags,
        version_id: m.version_id,
        event_time,
        event_type,
        condition,
        headers,
        checksum: m.checksum,
        part_sizes: m.part_sizes,
        removed_version_id,
        after,
    })
}

/// Header names lower-cased; only [`STORED_HEADERS`], values 1-1024 bytes.
fn validate_headers(headers: BTreeMap<String, String>) -> std::result::Result<StringMap, String> {
    headers
        .into_iter()
        .map(|(k, v)| {
            let name = k.to_ascii_lowercase();
            if !STORED_HEADERS.contains(&name.as_str()) {
                return Err(format!(
                    "'{k}' is not a header objects keep; they are {}",
                    STORED_HEADERS.join(", ")
                ));
            }
            if v.is_empty() || v.len() > 1024 {
                return Err(format!("the value of '{k}' must be 1-1024 bytes"));
            }
            Ok((name, v))
        })
        .collect()
}

/// `ALGORITHM:base64` with a known algorithm.
pub fn validate_checksum(c: &str) -> std::result::Result<(), String> {
    match c.split_once(':') {
        Some((algorithm, value))
            if CHECKSUM_ALGORITHMS.contains(&algorithm)
                && !value.is_empty()
                && value.len() <= 88
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "'{c}' is not ALGORITHM:base64 with ALGORITHM one of {}",
            CHECKSUM_ALGORITHMS.join(", ")
        )),
    }
}

/// S3 bucket naming rules.
pub fn validate_bucket(b: &str) -> std::result::Result<(), String> {
    let ok_chars = b
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-');
    let ok_ends = b.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.bytes().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if (3..=63).contains(&b.len()) && ok_chars && ok_ends && !b.contains("..") {
        Ok(())
    } else {
        Err(format!(
            "'{b}' is not a valid bucket name: use 3-63 lower-case letters, digits, '.' and '-', \
             starting and ending with a letter or digit"
        ))
    }
}

pub fn validate_key(k: &str) -> std::result::Result<(), String> {
    if k.is_empty() {
        return Err("must not be empty".into());
    }
    if k.len() > MAX_KEY_BYTES {
        return Err(format!(
            "is {} bytes long; the limit is {MAX_KEY_BYTES} bytes (UTF-8)",
            k.len()
        ));
    }
    if k.contains('\0') {
        return Err("must not contain NUL characters".into());
    }
    Ok(())
}

fn validate_metadata(meta: &StringMap) -> std::result::Result<(), String> {
    let total: usize = meta.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_METADATA_BYTES {
        return Err(format!(
            "is {total} bytes; user metadata is limited to {MAX_METADATA_BYTES} bytes"
        ));
    }
    for name in meta.keys() {
        if name.is_empty() || !name.bytes().all(|c| c.is_ascii_graphic() && c != b':') {
            return Err(format!(
                "name '{name}' must be non-empty printable ASCII without ':'"
            ));
        }
    }
    Ok(())
}

fn validate_tags(tags: &StringMap) -> std::result::Result<(), String> {
    if tags.len() > MAX_TAGS {
        return Err(format!("has {} tags; the limit is {MAX_TAGS}", tags.len()));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 {
            return Err(format!("tag key '{k}' must be 1-128 characters"));
        }
        if v.chars().count() > 256 {
            return Err(format!("value of tag '{k}' is longer than 256 characters"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BatchLimits = BatchLimits { max_mutations: 3 };

    fn err(body: &str) -> (String, String) {
        match parse_batch(body.as_bytes(), LIMITS).unwrap_err() {
            Error::Invalid { field, message } => (field, message),
            other => panic!("unexpected {other}"),
        }
    }

    fn one(m: &str) -> String {
        format!(r#"{{"mutations":[{m}]}}"#)
    }

    #[test]
    fn mutations_survive_a_trip_through_json() {
        let body = r#"{"mutations":[
            {"op":"put","bucket":"photos","key":"a.jpg","size":10,"etag":"e","content_type":"image/jpeg","sha256":"0000000000000000000000000000000000000000000000000000000000000000","storage_class":"STANDARD","metadata":{"team":"ml"},"tags":{"a":"b"},"version_id":"v1","event_time":"2026-11-22T14:00:00.000123Z","event_type":"ObjectCreated:Copy"},
            {"op":"untag","bucket":"photos","key":"a.jpg"}]}"#;
        let muts = parse_batch(body.as_bytes(), LIMITS).unwrap();
        let again = serde_json::json!({"mutations": muts.iter().map(Mutation::to_json).collect::<Vec<_>>()}).to_string();
        assert_eq!(parse_batch(again.as_bytes(), LIMITS).unwrap(), muts);
    }

    /// What a node forwards to the one that writes the key: conditions, version removals
    /// with the object after them, and the schema v3 fields, all kept.
    #[test]
    fn conditions_and_version_removals_survive_a_trip_through_json() {
        let body = r#"{"mutations":[
            {"op":"put","bucket":"photos","key":"a.jpg","size":10,"if_none_match":"*","headers":{"Cache-Control":"max-age=5"},"checksum":"CRC32:NhCmhg==","part_sizes":[6,4]},
            {"op":"put","bucket":"photos","key":"b.jpg","size":1,"if_match":"e1"},
            {"op":"delete","bucket":"photos","key":"a.jpg","event_type":"ObjectRemoved:Delete","remove_version":"v2","if_sequence":7,"after":{"version_id":"v1","size":3,"etag":"e","last_modified":"2026-11-22T14:00:00Z"}}]}"#;
        let muts = parse_batch(body.as_bytes(), LIMITS).unwrap();
        assert_eq!(muts[0].condition, Some(Condition::Absent));
        assert_eq!(
            muts[0].headers.as_ref().unwrap()["cache-control"],
            "max-age=5"
        );
        assert_eq!(muts[2].condition, Some(Condition::Sequence(7)));
        assert_eq!(
            muts[2].after.as_ref().unwrap().version_id.as_deref(),
            Some("v1")
        );
        let again = serde_json::json!({"mutations": muts.iter().map(Mutation::to_json).collect::<Vec<_>>()}).to_string();
        assert_eq!(parse_batch(again.as_bytes(), LIMITS).unwrap(), muts);
        for (m, field, why) in [
            (
                r#"{"op":"put","bucket":"b1b","key":"k","size":1,"remove_version":"v"}"#,
                "remove_version",
                "only for op 'delete'",
            ),
            (
                r#"{"op":"delete","bucket":"b1b","key":"k","remove_version":"v"}"#,
                "if_sequence",
                "required",
            ),
            (
                r#"{"op":"put","bucket":"b1b","key":"k","size":1,"headers":{"x-custom":"1"}}"#,
                "headers",
                "not a header",
            ),
            (
                r#"{"op":"put","bucket":"b1b","key":"k","size":1,"checksum":"MD5:abc"}"#,
                "checksum",
                "ALGORITHM:base64",
            ),
            (
                r#"{"op":"put","bucket":"b1b","key":"k","size":5,"part_sizes":[1,2]}"#,
                "part_sizes",
                "add up",
            ),
        ] {
            let (f, message) = err(&one(m));
            assert_eq!(f, format!("mutations[0].{field}"), "{m}");
            assert!(message.contains(why), "{m}: {message}");
        }
    }

    #[test]
    fn accepts_each_op() {
        let body = r#"{"mutations":[
            {"op":"put","bucket":"photos","key":"a.jpg","size":10,"metadata":{"team":"ml"},"event_time":"2026-11-22T14:00:00Z"},
            {"op":"tag","bucket":"photos","key":"a.jpg","tags":{"x":"y"}},
            {"op":"delete","bucket":"photos","key":"a.jpg","version_id":"v1"}]}"#;
        let muts = parse_batch(body.as_bytes(), LIMITS).unwrap();
        assert_eq!(muts.len(), 3);
        assert_eq!(muts[0].op, Op::Put);
        assert_eq!(muts[0].event_time, Some(1_795_356_000_000_000));
    }

    #[test]
    fn names_the_field_of_every_problem() {
        let cases = [
            ("{", "body", "malformed JSON"),
            (r#"{"mutations":[]}"#, "mutations", "at least one"),
            (r#"{"mutations":[], "x":1}"#, "x", "unknown field `x`"),
            (
                &one(r#"{"op":"frob","bucket":"b12","key":"k"}"#),
                "mutations[0].op",
                "unknown op 'frob'",
            ),
            (
                &one(r#"{"op":"put","key":"k","size":1}"#),
                "mutations[0].bucket",
                "required",
            ),
            (
                &one(r#"{"op":"put","bucket":"B!","key":"k","size":1}"#),
                "mutations[0].bucket",
                "not a valid bucket name",
            ),
            (
                &one(r#"{"op":"put","bucket":"b12","key":"","size":1}"#),
                "mutations[0].key",
                "must not be empty",
            ),
            (
                &one(&format!(
                    r#"{{"op":"put","bucket":"b12","key":"{}","size":1}}"#,
                    "k".repeat(1025)
                )),
                "mutations[0].key",
                "1025 bytes",
            ),
            (
                &one(r#"{"op":"put","bucket":"b12","key":"k","size":-5}"#),
                "mutations[0].size",
                "got -5",
            ),
            (
                &one(r#"{"op":"put","bucket":"b12","key":"k","size":"big"}"#),
                "mutations[0].size",
                "invalid type",
            ),
            (
                &one(r#"{"op":"put","bucket":"b12","key":"k","size":1,"event_time":"noon"}"#),
                "mutations[0].event_time",
                "RFC 3339",
            ),
            (
                &one(r#"{"op":"put","bucket":"b12","key":"k","size":1,"colour":"red"}"#),
                "mutations[0].colour",
                "unknown field `colour`",
            ),
            (
                &one(r#"{"op":"delete","bucket":"b12","key":"k","size":1}"#),
                "mutations[0].size",
                "not allowed for op 'delete'",
            ),
            (
                &one(r#"{"op":"put","bucket":"b12","key":"k"}"#),
                "mutations[0].size",
                "required for op 'put'",
            ),
            (
                &one(
                    r#"{"op":"put","bucket":"b12","key":"k","size":1,"event_type":"ObjectRemoved:Delete"}"#,
                ),
                "mutations[0].event_type",
                "does not record op 'put'",
            ),
            (
                &one(r#"{"op":"put","bucket":"b12","key":"k","size":1,"sha256":"xyz"}"#),
                "mutations[0].sha256",
                "hex",
            ),
            (
                r#"{"mutations":[{"op":"untag","bucket":"b12","key":"k"},{"op":"untag","bucket":"b12","key":"k"},{"op":"untag","bucket":"b12","key":"k"},{"op":"untag","bucket":"b12","key":"k"}]}"#,
                "mutations",
                "exceed the limit of 3",
            ),
        ];
        for (body, field, needle) in cases {
            let (f, m) = err(body);
            assert_eq!(f, field, "{body}: {m}");
            assert!(m.contains(needle), "{body}: '{m}' lacks '{needle}'");
        }
    }
}
