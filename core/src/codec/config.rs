//! Configuration events on the `_config` topic: the `ConfigEvent` Avro record in the
//! Confluent wire format. Low volume, so apache-avro's generic path is all it needs.

use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use uuid::Uuid;

use super::{SchemaSource, wire};
use crate::{Error, Result};

/// One configuration change (see `schemas/config_event.v1.avsc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEvent {
    pub event_id: Uuid,
    pub event_time: i64,
    /// What changed: `ingest-owner`, and later buckets, subscriptions, filters, tokens.
    pub kind: String,
    pub name: String,
    /// `created`, `updated` or `deleted`.
    pub action: String,
    /// The entity after the change, as JSON.
    pub spec: Option<String>,
    pub actor: Option<String>,
    pub node: Option<String>,
}

pub struct ConfigCodec {
    write_id: u32,
    current: Arc<Schema>,
    source: Arc<dyn SchemaSource>,
}

fn opt(v: &Option<String>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(s) => Value::Union(1, Box::new(Value::String(s.clone()))),
    }
}

fn avro_err(e: apache_avro::Error) -> Error {
    Error::Avro(e.to_string())
}

impl ConfigCodec {
    /// `write_id`: the registry id of the current config event schema.
    pub fn new(write_id: u32, source: Arc<dyn SchemaSource>) -> Result<ConfigCodec> {
        let current = source.schema_by_id(write_id).ok_or_else(|| {
            Error::NotFound(format!("schema id {write_id} is not in the registry"))
        })?;
        Ok(ConfigCodec {
            write_id,
            current,
            source,
        })
    }

    pub fn encode(&self, e: &ConfigEvent) -> Result<Vec<u8>> {
        let value = Value::Record(vec![
            ("event_id".into(), Value::Uuid(e.event_id)),
            ("event_time".into(), Value::TimestampMicros(e.event_time)),
            ("kind".into(), Value::String(e.kind.clone())),
            ("name".into(), Value::String(e.name.clone())),
            ("action".into(), Value::String(e.action.clone())),
            ("spec".into(), opt(&e.spec)),
            ("actor".into(), opt(&e.actor)),
            ("node".into(), opt(&e.node)),
        ]);
        let mut out = Vec::with_capacity(128);
        wire::write_header(&mut out, self.write_id);
        let writer = GenericDatumWriter::builder(&self.current)
            .build()
            .map_err(avro_err)?;
        writer.write_value(&mut out, value).map_err(avro_err)?;
        Ok(out)
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<ConfigEvent> {
        let (id, mut payload) = wire::split(bytes)?;
        let writer = self.source.schema_by_id(id).ok_or_else(|| {
            Error::NotFound(format!("config event written with unknown schema id {id}"))
        })?;
        let reader = GenericDatumReader::builder(&writer)
            .reader_schema(&self.current)
            .build()
            .map_err(avro_err)?;
        let Value::Record(fields) = reader.read_value(&mut payload).map_err(avro_err)? else {
            return Err(Error::Avro("config event is not a record".into()));
        };
        let mut event = ConfigEvent {
            event_id: Uuid::nil(),
            event_time: 0,
            kind: String::new(),
            name: String::new(),
            action: String::new(),
            spec: None,
            actor: None,
            node: None,
        };
        for (name, value) in fields {
            let value = match value {
                Value::Union(_, inner) => *inner,
                v => v,
            };
            match (name.as_str(), value) {
                ("event_id", Value::Uuid(u)) => event.event_id = u,
                ("event_id", Value::String(s)) => {
                    event.event_id = s
                        .parse()
                        .map_err(|_| Error::Avro(format!("bad event_id '{s}'")))?;
                }
                ("event_time", Value::TimestampMicros(t) | Value::Long(t)) => event.event_time = t,
                ("kind", Value::String(s)) => event.kind = s,
                ("name", Value::String(s)) => event.name = s,
                ("action", Value::String(s)) => event.action = s,
                ("spec", Value::String(s)) => event.spec = Some(s),
                ("actor", Value::String(s)) => event.actor = Some(s),
                ("node", Value::String(s)) => event.node = Some(s),
                _ => {}
            }
        }
        Ok(event)
    }
}
