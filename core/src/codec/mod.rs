//! Object events in Avro, framed in the Confluent wire format.
//!
//! # Layout
//! - `wire.rs`: magic byte + schema id framing.
//! - `binary.rs`: Avro binary primitives.
//! - `object_event.rs`: the direct encoder/decoder for the current schema version (hot path).
//! - `view.rs`: a borrowed view of a record, for consumers that copy or test fields.
//! - `value.rs`: apache-avro's generic `Value` path, for other writer schemas and as baseline.
//!
//! Encoding always uses the current schema. Decoding picks the path by the record's schema
//! id: the current schema's id decodes directly; any other id is looked up in the registry and
//! resolved against the current schema by apache-avro.

pub mod binary;
pub mod config;
pub mod object_event;
pub mod value;
pub mod view;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use apache_avro::Schema;

use crate::event::{EventSummary, ObjectEvent};
use crate::{Error, Result};

/// Where writer schemas come from: the built-in registry, or an external one.
pub trait SchemaSource: Send + Sync {
    fn schema_by_id(&self, id: u32) -> Option<Arc<Schema>>;
}

pub struct EventCodec {
    /// Registry id of the current object event schema.
    write_id: u32,
    /// The current schema, the reader schema when resolving older writers.
    current: Arc<Schema>,
    source: Arc<dyn SchemaSource>,
    /// Writer schemas already fetched from `source`.
    writers: RwLock<HashMap<u32, Arc<Schema>>>,
}

impl EventCodec {
    /// `write_id` must be the id under which the current object event schema is registered.
    pub fn new(write_id: u32, source: Arc<dyn SchemaSource>) -> Result<EventCodec> {
        let current = source.schema_by_id(write_id).ok_or_else(|| {
            Error::NotFound(format!("schema id {write_id} is not in the registry"))
        })?;
        Ok(EventCodec {
            write_id,
            current,
            source,
            writers: RwLock::new(HashMap::new()),
        })
    }

    pub fn write_id(&self) -> u32 {
        self.write_id
    }

    /// The writer schema registered under `id`, as JSON: what another schema registry is
    /// given to register it there (the `kafka` sink's own registry).
    pub fn schema_json(&self, id: u32) -> Option<String> {
        let schema = self.source.schema_by_id(id)?;
        serde_json::to_string(&*schema).ok()
    }

    /// Append the framed event to `buf`.
    pub fn encode(&self, event: &ObjectEvent, buf: &mut Vec<u8>) {
        wire::write_header(buf, self.write_id);
        object_event::encode(event, buf);
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<ObjectEvent> {
        let (id, payload) = wire::split(bytes)?;
        if id == self.write_id {
            return object_event::decode(payload);
        }
        let writer = self.writer_schema(id)?;
        value::decode_resolved(&writer, &self.current, payload)
    }

    /// A borrowed view of a framed record: `Ok(None)` when it was written with another schema
    /// or in a layout a view does not take, and [`EventCodec::decode`] must be used instead.
    pub fn view<'a>(&self, bytes: &'a [u8]) -> Result<Option<view::EventView<'a>>> {
        let (id, payload) = wire::split(bytes)?;
        if id != self.write_id {
            return Ok(None);
        }
        view::read(payload)
    }

    /// Whether a framed record was written with the codec's current schema (nothing else of
    /// it is read or checked).
    pub fn is_current(&self, bytes: &[u8]) -> bool {
        wire::split(bytes).is_ok_and(|(id, _)| id == self.write_id)
    }

    /// The leading fields of a framed record (through `etag`), borrowed, the rest unchecked:
    /// `Ok(None)` when it was written with another schema. What a reader that tests only
    /// those fields reads, leaving the record's check to whoever reads it in full.
    pub fn summary<'a>(&self, bytes: &'a [u8]) -> Result<Option<EventSummary<'a>>> {
        let (id, payload) = wire::split(bytes)?;
        if id != self.write_id {
            return Ok(None);
        }
        object_event::scan_summary(payload).map(Some)
    }

    /// Decode only what the object index keeps (see [`object_event::decode_for_index`]).
    pub fn decode_for_index(&self, bytes: &[u8]) -> Result<ObjectEvent> {
        let (id, payload) = wire::split(bytes)?;
        if id == self.write_id {
            return object_event::decode_for_index(payload);
        }
        self.decode(bytes)
    }

    fn writer_schema(&self, id: u32) -> Result<Arc<Schema>> {
        if let Some(s) = self.writers.read().unwrap().get(&id) {
            return Ok(s.clone());
        }
        let schema = self.source.schema_by_id(id).ok_or_else(|| {
            Error::NotFound(format!(
                "record was written with schema id {id}, which the registry does not know"
            ))
        })?;
        self.writers.write().unwrap().insert(id, schema.clone());
        Ok(schema)
    }
}

#[cfg(test)]
mod tests;
