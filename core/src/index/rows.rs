//! Encoding of index rows, with the Avro primitives of the codec. Each row starts with a
//! format byte so the layout can change without guessing.

use uuid::Uuid;

use crate::codec::binary::{Reader, put_long, put_opt_long, put_opt_str, put_str};
use crate::codec::object_event::{decode_state, encode_state};
use crate::event::{EventType, Head, ObjectEvent};
use crate::{Error, Result};

const FORMAT: u8 = 1;

fn check_format(bytes: &[u8], what: &str) -> Result<()> {
    match bytes.first() {
        Some(&FORMAT) => Ok(()),
        other => Err(Error::Corrupt(format!("index {what} row has unknown format {other:?}"))),
    }
}

fn put_uuid_raw(buf: &mut Vec<u8>, id: &Uuid) {
    buf.extend_from_slice(id.as_bytes());
}

fn uuid_raw(bytes: &[u8], at: usize) -> Result<Uuid> {
    bytes
        .get(at..at + 16)
        .and_then(|b| Uuid::from_slice(b).ok())
        .ok_or_else(|| Error::Corrupt("index row is truncated".into()))
}

pub fn encode_head(head: &Head, buf: &mut Vec<u8>) {
    buf.push(FORMAT);
    put_uuid_raw(buf, &head.event_id);
    put_long(buf, head.sequence);
    match &head.state {
        None => put_long(buf, 0),
        Some(s) => {
            put_long(buf, 1);
            encode_state(s, buf);
        }
    }
}

pub fn decode_head(bytes: &[u8]) -> Result<Head> {
    check_format(bytes, "object")?;
    let event_id = uuid_raw(bytes, 1)?;
    let mut r = Reader::new(&bytes[17..]);
    let sequence = r.long()?;
    let state = if r.present()? { Some(decode_state(&mut r)?) } else { None };
    Ok(Head { sequence, event_id, state })
}

/// One entry of an object's history: what happened, when, and the resulting version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub sequence: i64,
    pub event_id: Uuid,
    pub event_type: EventType,
    pub event_time: i64,
    pub version_id: Option<String>,
    /// Size after the event; `None` once removed.
    pub size: Option<i64>,
    pub etag: Option<String>,
}

impl HistoryEntry {
    pub fn of(e: &ObjectEvent) -> HistoryEntry {
        HistoryEntry {
            sequence: e.sequence,
            event_id: e.event_id,
            event_type: e.event_type,
            event_time: e.event_time,
            version_id: e.version_id.clone(),
            size: e.size,
            etag: e.etag.clone(),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "sequence": self.sequence,
            "event_id": self.event_id.to_string(),
            "event_type": self.event_type.as_str(),
            "event_time": crate::time::format_us(self.event_time),
            "version_id": self.version_id,
            "size": self.size,
            "etag": self.etag,
        })
    }
}

pub fn encode_history(e: &ObjectEvent, buf: &mut Vec<u8>) {
    buf.push(FORMAT);
    put_uuid_raw(buf, &e.event_id);
    put_str(buf, e.event_type.as_str());
    put_long(buf, e.event_time);
    put_opt_str(buf, e.version_id.as_deref());
    put_opt_long(buf, e.size);
    put_opt_str(buf, e.etag.as_deref());
}

pub fn decode_history(sequence: u64, bytes: &[u8]) -> Result<HistoryEntry> {
    check_format(bytes, "history")?;
    let event_id = uuid_raw(bytes, 1)?;
    let mut r = Reader::new(&bytes[17..]);
    let name = r.str()?;
    Ok(HistoryEntry {
        sequence: sequence as i64,
        event_id,
        event_type: EventType::parse(name)
            .ok_or_else(|| Error::Corrupt(format!("index history has unknown event type '{name}'")))?,
        event_time: r.long()?,
        version_id: r.opt_string()?,
        size: r.opt_long()?,
        etag: r.opt_string()?,
    })
}
