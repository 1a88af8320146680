//! Encoding of index rows, with the Avro primitives of the codec. Each row starts with a
//! format byte so the layout can change without guessing.

use uuid::Uuid;

use crate::codec::binary::{Reader, put_long, put_opt_long, put_opt_str, put_str};
use crate::codec::object_event::{decode_state, decode_state_v2, encode_state};
use crate::event::{EventSummary, EventType, Head};
use crate::log::Position;
use crate::{Error, Result};

/// History blocks: format 2 adds each entry's `removed_version_id`; format 1 blocks (entries
/// without it) are still read.
const FORMAT: u8 = 2;
/// Object rows: format 2 holds the state as schema v3 lays it out (headers, checksum, part
/// sizes); format 1 rows (schema v2's state) are still read.
const OBJECT_FORMAT: u8 = 2;

pub(super) fn check_format(bytes: &[u8], what: &str) -> Result<()> {
    let known = match what {
        "object" => matches!(bytes.first().copied(), Some(1 | OBJECT_FORMAT)),
        _ => matches!(bytes.first().copied(), Some(1 | FORMAT)),
    };
    match known {
        true => Ok(()),
        false => Err(Error::Corrupt(format!(
            "index {what} row has unknown format {:?}",
            bytes.first()
        ))),
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

/// An object row: the key's head and where its newest event is in the log (the start of the
/// key's history chain).
pub fn encode_head(head: &Head, last: Position, buf: &mut Vec<u8>) {
    buf.push(OBJECT_FORMAT);
    put_uuid_raw(buf, &head.event_id);
    put_long(buf, i64::from(last.partition));
    put_long(buf, last.offset as i64);
    put_long(buf, head.sequence);
    match &head.state {
        None => put_long(buf, 0),
        Some(s) => {
            put_long(buf, 1);
            encode_state(s, buf);
        }
    }
}

/// Only where an object row's newest event is (no state decoded).
pub fn decode_position(bytes: &[u8]) -> Result<Position> {
    check_format(bytes, "object")?;
    uuid_raw(bytes, 1)?;
    let mut r = Reader::new(&bytes[17..]);
    Ok(Position {
        partition: r.long()? as u32,
        offset: r.long()? as u64,
    })
}

pub fn decode_head(bytes: &[u8]) -> Result<(Head, Position)> {
    check_format(bytes, "object")?;
    let event_id = uuid_raw(bytes, 1)?;
    let mut r = Reader::new(&bytes[17..]);
    let last = Position {
        partition: r.long()? as u32,
        offset: r.long()? as u64,
    };
    let sequence = r.long()?;
    let state = match (r.present()?, bytes[0]) {
        (false, _) => None,
        (true, 1) => Some(decode_state_v2(&mut r)?),
        (true, _) => Some(decode_state(&mut r)?),
    };
    Ok((
        Head {
            sequence,
            event_id,
            state,
        },
        last,
    ))
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
    /// The version (or delete marker) the event removed for good, if it removed one.
    pub removed_version_id: Option<String>,
}

impl HistoryEntry {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "sequence": self.sequence,
            "event_id": self.event_id.to_string(),
            "event_type": self.event_type.as_str(),
            "event_time": crate::time::format_us(self.event_time),
            "version_id": self.version_id,
            "size": self.size,
            "etag": self.etag,
            "removed_version_id": self.removed_version_id,
        })
    }
}

/// The body of a history entry for an event; [`HistoryBlocks`] adds its position and link.
pub fn history_body(e: &EventSummary<'_>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    encode_body(e, &mut buf);
    buf
}

fn encode_body(e: &EventSummary<'_>, buf: &mut Vec<u8>) {
    put_uuid_raw(buf, &e.event_id);
    put_long(buf, e.sequence);
    put_str(buf, e.event_type.as_str());
    put_long(buf, e.event_time);
    put_opt_str(buf, e.version_id);
    put_opt_long(buf, e.size);
    put_opt_str(buf, e.etag);
    put_opt_str(buf, e.removed_version_id);
}
/// Entries per history block at most, and the size at which a block is closed early.
const BLOCK_ENTRIES: usize = 256;
const BLOCK_BYTES: usize = 32768;

/// Packs history entries, in log order, into blocks keyed by the position of their first entry.
/// One redb row per block instead of per event keeps history writes cheap; blocks are written
/// once and never change.
#[derive(Default)]
pub struct HistoryBlocks {
    done: Vec<(Position, Vec<u8>)>,
    open: Option<(Position, Vec<u8>, usize)>,
}

impl HistoryBlocks {
    /// Add the entry of the event at `at`, whose key's previous event is at offset `prev`
    /// (same partition). Entries of one partition must come in offset order.
    pub fn push(&mut self, at: Position, prev: Option<u64>, event: &EventSummary<'_>) {
        encode_body(event, self.start_entry(at, prev));
    }

    /// [`Self::push`] with a body made earlier by [`history_body`].
    pub fn push_encoded(&mut self, at: Position, prev: Option<u64>, body: &[u8]) {
        self.start_entry(at, prev).extend_from_slice(body);
    }

    /// Open a block if needed, write the entry's position and link, return the buffer for
    /// its body.
    fn start_entry(&mut self, at: Position, prev: Option<u64>) -> &mut Vec<u8> {
        let full = match &self.open {
            Some((first, buf, n)) => {
                first.partition != at.partition || *n >= BLOCK_ENTRIES || buf.len() >= BLOCK_BYTES
            }
            None => true,
        };
        if full {
            self.done
                .extend(self.open.take().map(|(first, buf, _)| (first, buf)));
            self.open = Some((at, vec![FORMAT], 0));
        }
        let (_, buf, n) = self.open.as_mut().expect("a block is open");
        put_long(buf, at.offset as i64);
        put_long(buf, prev.map_or(-1, |p| p as i64));
        *n += 1;
        buf
    }

    pub fn finish(mut self) -> Vec<(Position, Vec<u8>)> {
        self.done
            .extend(self.open.take().map(|(first, buf, _)| (first, buf)));
        self.done
    }
}

/// Every entry of a block: (offset, previous offset of the same key, entry).
pub fn decode_history_block(bytes: &[u8]) -> Result<Vec<(u64, Option<u64>, HistoryEntry)>> {
    check_format(bytes, "history")?;
    let format = bytes[0];
    let mut r = Reader::new(&bytes[1..]);
    let mut out = Vec::new();
    while !r.is_empty() {
        let offset = r.long()? as u64;
        let prev = r.long()?;
        let event_id = Uuid::from_bytes(r.fixed16()?);
        let sequence = r.long()?;
        let name = r.str()?;
        let entry = HistoryEntry {
            sequence,
            event_id,
            event_type: EventType::parse(name).ok_or_else(|| {
                Error::Corrupt(format!("index history has unknown event type '{name}'"))
            })?,
            event_time: r.long()?,
            version_id: r.opt_string()?,
            size: r.opt_long()?,
            etag: r.opt_string()?,
            removed_version_id: match format {
                1 => None,
                _ => r.opt_string()?,
            },
        };
        out.push((offset, u64::try_from(prev).ok(), entry));
    }
    Ok(out)
}
