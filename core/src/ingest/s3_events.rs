//! S3 and MinIO event notifications (`{"Records": [...]}`) as mutations, so a bucket
//! notification target (a MinIO webhook, an S3 notification relayed over HTTP) can feed the log.
//!
//! Parsing is lenient about what Tidemark does not use (notifications carry many fields and
//! grow new ones) and strict about what it does: every refusal names the field
//! (`Records[2].s3.object.key`). Each record also gets a source identity, so a redelivered
//! record can be recognised (see `dedup.rs`).

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Mutation, Op, RequestContext, validate_bucket, validate_key};
use crate::event::{EventType, StringMap};
use crate::time::parse_rfc3339_us;
use crate::{Error, Result};

/// What one notification record asks for.
#[derive(Debug)]
pub enum Record {
    /// A change to append, unless a record with the same `source_id` was accepted before.
    Change {
        mutation: Box<Mutation>,
        /// Who made the change in the store, from where, under which request id.
        ctx: RequestContext,
        /// Hex SHA-256 of (bucket, key, sequencer or else ETag + version id, event name).
        source_id: String,
    },
    /// Acknowledged, nothing to append (test events, reads): why.
    Ignored(String),
    /// Not a valid record; the error names the field.
    Refused(Error),
}

/// Parse a notification body. The outer error is for the whole body (not JSON, no
/// `Records`); the records are answered one by one, in order.
pub fn parse_notification(body: &[u8]) -> Result<Vec<Record>> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| Error::invalid("body", format!("malformed JSON: {e}")))?;
    let Some(obj) = doc.as_object() else {
        return Err(Error::invalid(
            "body",
            "must be a JSON object: {\"Records\": [...]}",
        ));
    };
    // S3 sends one test message when a notification configuration is saved: no Records.
    if is_test_event(obj.get("Event")) && !obj.contains_key("Records") {
        return Ok(vec![Record::Ignored("s3:TestEvent".into())]);
    }
    let records = match obj.get("Records") {
        Some(Value::Array(records)) => records,
        Some(_) => return Err(Error::invalid("Records", "must be an array of records")),
        None => {
            return Err(Error::invalid(
                "Records",
                "is required: an S3 or MinIO event notification ({\"Records\": [...]})",
            ));
        }
    };
    Ok(records
        .iter()
        .enumerate()
        .map(|(i, r)| match parse_record(r, &format!("Records[{i}]")) {
            Ok(record) => record,
            Err(e) => Record::Refused(e),
        })
        .collect())
}

fn is_test_event(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str)
        .is_some_and(|e| e.trim_start_matches("s3:") == "TestEvent")
}

/// How an event name is recorded: the op, and the precise event type.
fn op_of(name: &str) -> Option<(Op, EventType)> {
    use EventType::*;
    Some(match name {
        "ObjectCreated:Put" | "ObjectCreated:Post" => (Op::Put, ObjectCreatedPut),
        "ObjectCreated:Copy" => (Op::Put, ObjectCreatedCopy),
        "ObjectCreated:CompleteMultipartUpload" => (Op::Put, ObjectCreatedCompleteMultipartUpload),
        "ObjectRemoved:Delete" => (Op::Delete, ObjectRemovedDelete),
        "ObjectRemoved:DeleteMarkerCreated" => (Op::Delete, ObjectRemovedDeleteMarkerCreated),
        "LifecycleExpiration:Delete" => (Op::Delete, LifecycleExpirationDelete),
        // MinIO names tagging changes ObjectCreated:PutTagging / DeleteTagging.
        "ObjectTagging:Put" | "ObjectCreated:PutTagging" => (Op::Tag, ObjectTaggingPut),
        "ObjectTagging:Delete" | "ObjectCreated:DeleteTagging" => (Op::Untag, ObjectTaggingDelete),
        _ => return None,
    })
}

fn parse_record(r: &Value, at: &str) -> Result<Record> {
    let field = |path: &str| format!("{at}.{path}");
    if !r.is_object() {
        return Err(Error::invalid(at, "must be a JSON object"));
    }
    let name = str_at(r, &["eventName"], &field("eventName"))?
        .ok_or_else(|| Error::invalid(field("eventName"), "is required"))?;
    let short = name.strip_prefix("s3:").unwrap_or(name);
    if short == "TestEvent" {
        return Ok(Record::Ignored("s3:TestEvent".into()));
    }
    let Some((op, event_type)) = op_of(short) else {
        if short.starts_with("ObjectAccessed:") || short.starts_with("ObjectRestore:") {
            return Ok(Record::Ignored(format!(
                "{name} does not change the object"
            )));
        }
        return Err(Error::invalid(
            field("eventName"),
            format!(
                "'{name}' is not an object change Tidemark records; it takes ObjectCreated:*, \
                 ObjectRemoved:*, ObjectTagging:* and LifecycleExpiration:Delete"
            ),
        ));
    };
    let bucket = str_at(r, &["s3", "bucket", "name"], &field("s3.bucket.name"))?
        .ok_or_else(|| Error::invalid(field("s3.bucket.name"), "is required"))?;
    validate_bucket(bucket).map_err(|m| Error::invalid(field("s3.bucket.name"), m))?;
    let raw_key = str_at(r, &["s3", "object", "key"], &field("s3.object.key"))?
        .ok_or_else(|| Error::invalid(field("s3.object.key"), "is required"))?;
    let key = decode_key(raw_key).map_err(|m| Error::invalid(field("s3.object.key"), m))?;
    validate_key(&key).map_err(|m| Error::invalid(field("s3.object.key"), m))?;

    let object = &r["s3"]["object"];
    let opt = |name: &str| str_at(object, &[name], &field(&format!("s3.object.{name}")));
    let etag = opt("eTag")?.map(|e| e.trim_matches('"').to_string());
    let version_id = opt("versionId")?.map(str::to_string);
    let sequencer = opt("sequencer")?.map(str::to_string);
    let mut mutation = Mutation::new(op, bucket, key.clone());
    mutation.event_type = Some(event_type);
    mutation.event_time = str_at(r, &["eventTime"], &field("eventTime"))?
        .map(parse_rfc3339_us)
        .transpose()
        .map_err(|m| Error::invalid(field("eventTime"), m))?;
    if op == Op::Put {
        let size = object.get("size").and_then(Value::as_i64);
        let size = size.filter(|s| *s >= 0).ok_or_else(|| {
            Error::invalid(field("s3.object.size"), "is required: a byte count ≥ 0")
        })?;
        mutation.size = Some(size);
        mutation.etag = etag.clone().filter(|e| !e.is_empty());
        mutation.version_id = version_id.clone().filter(|v| !v.is_empty() && v != "null");
        let (content_type, metadata) = user_metadata(object, &field("s3.object.userMetadata"))?;
        mutation.content_type = opt("contentType")?.map(str::to_string).or(content_type);
        mutation.metadata = Some(metadata);
    }
    // Removals and tag changes carry no version precondition: the notification reports what
    // the store did, it does not ask for it (a delete marker's version id is its own).
    let ctx = RequestContext {
        requester: str_at(r, &["userIdentity", "principalId"], &field("userIdentity"))?
            .map(str::to_string),
        source_ip: str_at(
            r,
            &["requestParameters", "sourceIPAddress"],
            &field("requestParameters.sourceIPAddress"),
        )?
        .map(str::to_string),
        request_id: str_at(
            r,
            &["responseElements", "x-amz-request-id"],
            &field("responseElements"),
        )?
        .map(str::to_string),
        // The notification does not carry the original request's User-Agent.
        user_agent: None,
        interface: super::Interface::S3Events,
    };
    let origin = match (&sequencer, &etag, &version_id) {
        (Some(s), _, _) => format!("seq:{s}"),
        (None, None, None) => format!("time:{}", mutation.event_time.unwrap_or_default()),
        (None, e, v) => format!(
            "etag:{}:{}",
            e.as_deref().unwrap_or(""),
            v.as_deref().unwrap_or("")
        ),
    };
    let source_id = source_identity(bucket, &key, &origin, short);
    Ok(Record::Change {
        mutation: Box::new(mutation),
        ctx,
        source_id,
    })
}

/// A string at `path`; `None` when absent or null, an error naming `field` when not a string.
fn str_at<'a>(v: &'a Value, path: &[&str], field: &str) -> Result<Option<&'a str>> {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(next) => cur = next,
            None => return Ok(None),
        }
    }
    match cur {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        other => Err(Error::invalid(
            field,
            format!("must be a string, got {other}"),
        )),
    }
}

/// MinIO's `userMetadata`: `X-Amz-Meta-*` entries are the user metadata (names lower-cased, as
/// S3 treats them); `content-type` is the content type. Other entries are system headers.
fn user_metadata(object: &Value, field: &str) -> Result<(Option<String>, StringMap)> {
    let mut content_type = None;
    let mut metadata = StringMap::new();
    let Some(entries) = object.get("userMetadata").filter(|v| !v.is_null()) else {
        return Ok((None, metadata));
    };
    let entries = entries
        .as_object()
        .ok_or_else(|| Error::invalid(field, "must be an object of strings"))?;
    for (name, value) in entries {
        let value = value
            .as_str()
            .ok_or_else(|| Error::invalid(format!("{field}.{name}"), "must be a string"))?;
        let lower = name.to_ascii_lowercase();
        if let Some(meta) = lower.strip_prefix("x-amz-meta-") {
            metadata.insert(meta.to_string(), value.to_string());
        } else if lower == "content-type" {
            content_type = Some(value.to_string());
        }
    }
    Ok((content_type, metadata))
}

/// Notification keys are URL-encoded as in a query string: `+` is a space, `%XX` a byte.
pub fn decode_key(raw: &str) -> std::result::Result<String, String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        format!("'{raw}' has a bad escape at byte {i}: '%' must be followed by two hex digits")
                    })?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("'{raw}' does not decode to UTF-8"))
}

fn source_identity(bucket: &str, key: &str, origin: &str, event_name: &str) -> String {
    let mut h = Sha256::new();
    for part in [bucket, key, origin, event_name] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
