//! Events from their JSON view (the shape `to_json` writes, `log tail --json` prints and
//! webhooks carry): for testing rules and filters against sample events. Only `event_type`,
//! `bucket` and `key` are required; everything else defaults.

use serde_json::Value;
use uuid::Uuid;

use super::{EventType, ObjectEvent, ObjectState, StringMap};
use crate::time::parse_rfc3339_us;
use crate::{Error, Result};

fn string(v: &Value, name: &str, at: &str) -> Result<Option<String>> {
    match &v[name] {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(Error::invalid(format!("{at}.{name}"), "must be a string")),
    }
}

fn long(v: &Value, name: &str, at: &str) -> Result<Option<i64>> {
    match &v[name] {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| Error::invalid(format!("{at}.{name}"), "must be an integer")),
        _ => Err(Error::invalid(format!("{at}.{name}"), "must be an integer")),
    }
}

fn map(v: &Value, name: &str, at: &str) -> Result<StringMap> {
    match &v[name] {
        Value::Null => Ok(StringMap::new()),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(Error::invalid(
                    format!("{at}.{name}.{k}"),
                    "must be a string",
                )),
            })
            .collect(),
        _ => Err(Error::invalid(
            format!("{at}.{name}"),
            "must be an object of strings",
        )),
    }
}

fn time(v: &Value, name: &str, at: &str) -> Result<Option<i64>> {
    string(v, name, at)?
        .map(|t| parse_rfc3339_us(&t).map_err(|m| Error::invalid(format!("{at}.{name}"), m)))
        .transpose()
}

/// An object state from its JSON view ([`ObjectState::to_json`]); errors name the field.
pub fn state_from_json(v: &Value, at: &str) -> Result<ObjectState> {
    if !v.is_object() {
        return Err(Error::invalid(at, "must be an object state"));
    }
    state(v, at)
}

fn state(v: &Value, at: &str) -> Result<ObjectState> {
    Ok(ObjectState {
        version_id: string(v, "version_id", at)?,
        sequence: long(v, "sequence", at)?.unwrap_or(0),
        size: long(v, "size", at)?.unwrap_or(0),
        etag: string(v, "etag", at)?,
        content_type: string(v, "content_type", at)?,
        sha256: string(v, "sha256", at)?,
        metadata: map(v, "metadata", at)?,
        tags: map(v, "tags", at)?,
        storage_class: string(v, "storage_class", at)?,
        last_modified: time(v, "last_modified", at)?.unwrap_or(0),
        headers: map(v, "headers", at)?,
        checksum: string(v, "checksum", at)?,
        part_sizes: longs(v, "part_sizes", at)?,
    })
}

fn longs(v: &Value, name: &str, at: &str) -> Result<Option<Vec<i64>>> {
    match &v[name] {
        Value::Null => Ok(None),
        Value::Array(items) => items
            .iter()
            .map(|n| {
                n.as_i64().ok_or_else(|| {
                    Error::invalid(format!("{at}.{name}"), "must be an array of integers")
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
        _ => Err(Error::invalid(
            format!("{at}.{name}"),
            "must be an array of integers",
        )),
    }
}

impl ObjectEvent {
    /// Parse an event from its JSON view; errors name the field under `at`.
    pub fn from_json(v: &Value, at: &str) -> Result<ObjectEvent> {
        if !v.is_object() {
            return Err(Error::invalid(at, "must be an event object"));
        }
        let required = |name: &str| {
            string(v, name, at)?
                .ok_or_else(|| Error::invalid(format!("{at}.{name}"), "is required"))
        };
        let type_name = required("event_type")?;
        let event_type = EventType::parse(&type_name).ok_or_else(|| {
            Error::invalid(
                format!("{at}.event_type"),
                format!("unknown event type '{type_name}'"),
            )
        })?;
        let event_id = match string(v, "event_id", at)? {
            None => Uuid::nil(),
            Some(s) => s
                .parse()
                .map_err(|_| Error::invalid(format!("{at}.event_id"), "is not a UUID"))?,
        };
        Ok(ObjectEvent {
            event_id,
            event_type,
            event_time: time(v, "event_time", at)?.unwrap_or(0),
            bucket: required("bucket")?,
            key: required("key")?,
            version_id: string(v, "version_id", at)?,
            sequence: long(v, "sequence", at)?.unwrap_or(1),
            size: long(v, "size", at)?,
            etag: string(v, "etag", at)?,
            content_type: string(v, "content_type", at)?,
            sha256: string(v, "sha256", at)?,
            metadata: map(v, "metadata", at)?,
            tags: map(v, "tags", at)?,
            storage_class: string(v, "storage_class", at)?,
            requester: string(v, "requester", at)?,
            source_ip: string(v, "source_ip", at)?,
            request_id: string(v, "request_id", at)?,
            region: string(v, "region", at)?,
            node: string(v, "node", at)?,
            previous: match &v["previous"] {
                Value::Null => None,
                p => Some(state(p, &format!("{at}.previous"))?),
            },
            user_agent: string(v, "user_agent", at)?,
            headers: map(v, "headers", at)?,
            checksum: string(v, "checksum", at)?,
            part_sizes: longs(v, "part_sizes", at)?,
            removed_version_id: string(v, "removed_version_id", at)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_json_view() {
        let e = crate::event::sample_event(7);
        assert_eq!(ObjectEvent::from_json(&e.to_json(), "e").unwrap(), e);
        let minimal =
            serde_json::json!({"event_type": "ObjectCreated:Put", "bucket": "b", "key": "k"});
        assert_eq!(ObjectEvent::from_json(&minimal, "e").unwrap().size, None);
        let err =
            ObjectEvent::from_json(&serde_json::json!({"bucket": "b"}), "events[3]").unwrap_err();
        assert_eq!(err.to_string(), "events[3].event_type: is required");
    }
}
