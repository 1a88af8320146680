//! apache-avro's generic path: `ObjectEvent` to and from `apache_avro::types::Value`.
//! Used to decode data written with a schema version other than the direct codec's (with
//! schema resolution), and as the baseline the direct codec is measured against.

use std::collections::{BTreeMap, HashMap};

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;

use crate::event::{EventType, ObjectEvent, ObjectState, StringMap};
use crate::{Error, Result};

fn avro_err(e: apache_avro::Error) -> Error {
    Error::Avro(e.to_string())
}

fn opt_str(v: &Option<String>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(s) => Value::Union(1, Box::new(Value::String(s.clone()))),
    }
}

fn map(m: &StringMap) -> Value {
    Value::Map(
        m.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<HashMap<_, _>>(),
    )
}

pub fn state_to_value(s: &ObjectState) -> Value {
    Value::Record(vec![
        ("version_id".into(), opt_str(&s.version_id)),
        ("sequence".into(), Value::Long(s.sequence)),
        ("size".into(), Value::Long(s.size)),
        ("etag".into(), opt_str(&s.etag)),
        ("content_type".into(), opt_str(&s.content_type)),
        ("sha256".into(), opt_str(&s.sha256)),
        ("metadata".into(), map(&s.metadata)),
        ("tags".into(), map(&s.tags)),
        ("storage_class".into(), opt_str(&s.storage_class)),
        (
            "last_modified".into(),
            Value::TimestampMicros(s.last_modified),
        ),
        ("headers".into(), map(&s.headers)),
        ("checksum".into(), opt_str(&s.checksum)),
        ("part_sizes".into(), opt_longs(&s.part_sizes)),
    ])
}

fn opt_longs(v: &Option<Vec<i64>>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(items) => Value::Union(
            1,
            Box::new(Value::Array(
                items.iter().map(|n| Value::Long(*n)).collect(),
            )),
        ),
    }
}

pub fn to_value(e: &ObjectEvent) -> Value {
    let size = match e.size {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(n) => Value::Union(1, Box::new(Value::Long(n))),
    };
    let previous = match &e.previous {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(p) => Value::Union(1, Box::new(state_to_value(p))),
    };
    Value::Record(vec![
        ("event_id".into(), Value::Uuid(e.event_id)),
        (
            "event_type".into(),
            Value::String(e.event_type.as_str().into()),
        ),
        ("event_time".into(), Value::TimestampMicros(e.event_time)),
        ("bucket".into(), Value::String(e.bucket.clone())),
        ("key".into(), Value::String(e.key.clone())),
        ("version_id".into(), opt_str(&e.version_id)),
        ("sequence".into(), Value::Long(e.sequence)),
        ("size".into(), size),
        ("etag".into(), opt_str(&e.etag)),
        ("content_type".into(), opt_str(&e.content_type)),
        ("sha256".into(), opt_str(&e.sha256)),
        ("metadata".into(), map(&e.metadata)),
        ("tags".into(), map(&e.tags)),
        ("storage_class".into(), opt_str(&e.storage_class)),
        ("requester".into(), opt_str(&e.requester)),
        ("source_ip".into(), opt_str(&e.source_ip)),
        ("request_id".into(), opt_str(&e.request_id)),
        ("region".into(), opt_str(&e.region)),
        ("node".into(), opt_str(&e.node)),
        ("previous".into(), previous),
        ("user_agent".into(), opt_str(&e.user_agent)),
        ("headers".into(), map(&e.headers)),
        ("checksum".into(), opt_str(&e.checksum)),
        ("part_sizes".into(), opt_longs(&e.part_sizes)),
        ("removed_version_id".into(), opt_str(&e.removed_version_id)),
    ])
}

/// Field lookup on a decoded record, naming the missing field.
struct Fields(HashMap<String, Value>);

impl Fields {
    fn new(v: Value, what: &str) -> Result<Fields> {
        match v {
            Value::Record(fields) => Ok(Fields(fields.into_iter().collect())),
            other => Err(Error::Avro(format!(
                "expected a {what} record, got {other:?}"
            ))),
        }
    }

    fn take(&mut self, name: &str) -> Result<Value> {
        let v = self
            .0
            .remove(name)
            .ok_or_else(|| Error::Avro(format!("record has no field '{name}'")))?;
        Ok(match v {
            Value::Union(_, inner) => *inner,
            v => v,
        })
    }

    fn long(&mut self, name: &str) -> Result<i64> {
        match self.take(name)? {
            Value::Long(n) | Value::TimestampMicros(n) => Ok(n),
            Value::Int(n) => Ok(n.into()),
            other => Err(Error::Avro(format!(
                "field '{name}': expected long, got {other:?}"
            ))),
        }
    }

    fn opt_long(&mut self, name: &str) -> Result<Option<i64>> {
        match self.take(name)? {
            Value::Null => Ok(None),
            Value::Long(n) => Ok(Some(n)),
            other => Err(Error::Avro(format!(
                "field '{name}': expected long, got {other:?}"
            ))),
        }
    }

    fn string(&mut self, name: &str) -> Result<String> {
        match self.take(name)? {
            Value::String(s) | Value::Enum(_, s) => Ok(s),
            Value::Uuid(u) => Ok(u.to_string()),
            other => Err(Error::Avro(format!(
                "field '{name}': expected string, got {other:?}"
            ))),
        }
    }

    fn opt_string(&mut self, name: &str) -> Result<Option<String>> {
        match self.take(name)? {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            other => Err(Error::Avro(format!(
                "field '{name}': expected string, got {other:?}"
            ))),
        }
    }

    fn opt_longs(&mut self, name: &str) -> Result<Option<Vec<i64>>> {
        match self.take(name)? {
            Value::Null => Ok(None),
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::Long(n) => Ok(n),
                    Value::Int(n) => Ok(n.into()),
                    other => Err(Error::Avro(format!(
                        "field '{name}': expected long items, got {other:?}"
                    ))),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            other => Err(Error::Avro(format!(
                "field '{name}': expected an array, got {other:?}"
            ))),
        }
    }

    fn map(&mut self, name: &str) -> Result<StringMap> {
        match self.take(name)? {
            Value::Map(m) => m
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    other => Err(Error::Avro(format!(
                        "field '{name}': non-string value {other:?}"
                    ))),
                })
                .collect::<Result<BTreeMap<_, _>>>(),
            other => Err(Error::Avro(format!(
                "field '{name}': expected map, got {other:?}"
            ))),
        }
    }
}

pub fn state_from_value(v: Value) -> Result<ObjectState> {
    let mut f = Fields::new(v, "ObjectState")?;
    Ok(ObjectState {
        version_id: f.opt_string("version_id")?,
        sequence: f.long("sequence")?,
        size: f.long("size")?,
        etag: f.opt_string("etag")?,
        content_type: f.opt_string("content_type")?,
        sha256: f.opt_string("sha256")?,
        metadata: f.map("metadata")?,
        tags: f.map("tags")?,
        storage_class: f.opt_string("storage_class")?,
        last_modified: f.long("last_modified")?,
        headers: f.map("headers")?,
        checksum: f.opt_string("checksum")?,
        part_sizes: f.opt_longs("part_sizes")?,
    })
}

pub fn from_value(v: Value) -> Result<ObjectEvent> {
    let mut f = Fields::new(v, "ObjectEvent")?;
    let event_id = f.string("event_id")?;
    let event_type = f.string("event_type")?;
    Ok(ObjectEvent {
        event_id: event_id
            .parse()
            .map_err(|_| Error::Avro(format!("event_id '{event_id}' is not a UUID")))?,
        event_type: EventType::parse(&event_type)
            .ok_or_else(|| Error::Avro(format!("unknown event type '{event_type}'")))?,
        event_time: f.long("event_time")?,
        bucket: f.string("bucket")?,
        key: f.string("key")?,
        version_id: f.opt_string("version_id")?,
        sequence: f.long("sequence")?,
        size: f.opt_long("size")?,
        etag: f.opt_string("etag")?,
        content_type: f.opt_string("content_type")?,
        sha256: f.opt_string("sha256")?,
        metadata: f.map("metadata")?,
        tags: f.map("tags")?,
        storage_class: f.opt_string("storage_class")?,
        requester: f.opt_string("requester")?,
        source_ip: f.opt_string("source_ip")?,
        request_id: f.opt_string("request_id")?,
        region: f.opt_string("region")?,
        node: f.opt_string("node")?,
        previous: match f.take("previous")? {
            Value::Null => None,
            v => Some(state_from_value(v)?),
        },
        user_agent: f.opt_string("user_agent")?,
        headers: f.map("headers")?,
        checksum: f.opt_string("checksum")?,
        part_sizes: f.opt_longs("part_sizes")?,
        removed_version_id: f.opt_string("removed_version_id")?,
    })
}

/// Decode a datum written with `writer`, resolved to `reader` (schema evolution).
pub fn decode_resolved(writer: &Schema, reader: &Schema, payload: &[u8]) -> Result<ObjectEvent> {
    let datum = GenericDatumReader::builder(writer)
        .reader_schema(reader)
        .build()
        .map_err(avro_err)?;
    let mut input = payload;
    let value = datum.read_value(&mut input).map_err(avro_err)?;
    from_value(value)
}
