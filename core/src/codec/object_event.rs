//! Direct Avro encoder and decoder for `ObjectEvent` as written by schema version
//! [`DIRECT_VERSION`]: field by field in schema order, no intermediate `Value` tree.
//! When a schema version is added, this file follows it (a test fails until it does).

use super::binary::{
    Reader, put_long, put_map, put_opt_long, put_opt_longs, put_opt_str, put_str, put_uuid,
};
use crate::event::{EventSummary, EventType, ObjectEvent, ObjectState};
use crate::{Error, Result};

/// The object event schema version this file encodes and decodes.
pub const DIRECT_VERSION: u32 = 3;

pub fn encode(e: &ObjectEvent, buf: &mut Vec<u8>) {
    put_uuid(buf, &e.event_id);
    put_str(buf, e.event_type.as_str());
    put_long(buf, e.event_time);
    put_str(buf, &e.bucket);
    put_str(buf, &e.key);
    put_opt_str(buf, e.version_id.as_deref());
    put_long(buf, e.sequence);
    put_opt_long(buf, e.size);
    put_opt_str(buf, e.etag.as_deref());
    put_opt_str(buf, e.content_type.as_deref());
    put_opt_str(buf, e.sha256.as_deref());
    put_map(buf, &e.metadata);
    put_map(buf, &e.tags);
    put_opt_str(buf, e.storage_class.as_deref());
    put_opt_str(buf, e.requester.as_deref());
    put_opt_str(buf, e.source_ip.as_deref());
    put_opt_str(buf, e.request_id.as_deref());
    put_opt_str(buf, e.region.as_deref());
    put_opt_str(buf, e.node.as_deref());
    match &e.previous {
        None => put_long(buf, 0),
        Some(p) => {
            put_long(buf, 1);
            encode_state(p, buf);
        }
    }
    put_opt_str(buf, e.user_agent.as_deref());
    put_map(buf, &e.headers);
    put_opt_str(buf, e.checksum.as_deref());
    put_opt_longs(buf, e.part_sizes.as_deref());
    put_opt_str(buf, e.removed_version_id.as_deref());
}

pub fn encode_state(s: &ObjectState, buf: &mut Vec<u8>) {
    put_opt_str(buf, s.version_id.as_deref());
    put_long(buf, s.sequence);
    put_long(buf, s.size);
    put_opt_str(buf, s.etag.as_deref());
    put_opt_str(buf, s.content_type.as_deref());
    put_opt_str(buf, s.sha256.as_deref());
    put_map(buf, &s.metadata);
    put_map(buf, &s.tags);
    put_opt_str(buf, s.storage_class.as_deref());
    put_long(buf, s.last_modified);
    put_map(buf, &s.headers);
    put_opt_str(buf, s.checksum.as_deref());
    put_opt_longs(buf, s.part_sizes.as_deref());
}

pub fn decode(bytes: &[u8]) -> Result<ObjectEvent> {
    decode_with(bytes, Fields::All)
}

/// Decode only what the object index keeps: the object after the event, without the request
/// context and the previous state, which are skipped rather than allocated.
pub fn decode_for_index(bytes: &[u8]) -> Result<ObjectEvent> {
    decode_with(bytes, Fields::IndexOnly)
}

/// Read only the leading fields (through `etag`), borrowing strings from `bytes`.
pub fn scan_summary(bytes: &[u8]) -> Result<EventSummary<'_>> {
    read_summary(&mut Reader::new(bytes))
}

/// The leading fields, in schema order, borrowed.
pub(super) fn read_summary<'a>(r: &mut Reader<'a>) -> Result<EventSummary<'a>> {
    Ok(EventSummary {
        event_id: r.uuid()?,
        event_type: {
            let name = r.str()?;
            EventType::parse(name)
                .ok_or_else(|| Error::BadInput(format!("avro: unknown event type '{name}'")))?
        },
        event_time: r.long()?,
        bucket: r.str()?,
        key: r.str()?,
        version_id: r.opt_str()?,
        sequence: r.long()?,
        size: r.opt_long()?,
        etag: r.opt_str()?,
        removed_version_id: None,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fields {
    All,
    IndexOnly,
}

fn decode_with(bytes: &[u8], fields: Fields) -> Result<ObjectEvent> {
    let all = fields == Fields::All;
    let mut r = Reader::new(bytes);
    let ctx = |r: &mut Reader<'_>| -> Result<Option<String>> {
        if all {
            r.opt_string()
        } else {
            r.skip_opt_string().map(|()| None)
        }
    };
    let s = read_summary(&mut r)?;
    let event = ObjectEvent {
        event_id: s.event_id,
        event_type: s.event_type,
        event_time: s.event_time,
        bucket: s.bucket.to_owned(),
        key: s.key.to_owned(),
        version_id: s.version_id.map(str::to_owned),
        sequence: s.sequence,
        size: s.size,
        etag: s.etag.map(str::to_owned),
        content_type: r.opt_string()?,
        sha256: r.opt_string()?,
        metadata: r.map()?,
        tags: r.map()?,
        storage_class: r.opt_string()?,
        requester: ctx(&mut r)?,
        source_ip: ctx(&mut r)?,
        request_id: ctx(&mut r)?,
        region: ctx(&mut r)?,
        node: ctx(&mut r)?,
        previous: match (r.present()?, all) {
            (false, _) => None,
            (true, true) => Some(decode_state(&mut r)?),
            (true, false) => {
                skip_state(&mut r)?;
                None
            }
        },
        user_agent: ctx(&mut r)?,
        headers: r.map()?,
        checksum: r.opt_string()?,
        part_sizes: r.opt_longs()?,
        removed_version_id: r.opt_string()?,
    };
    if !r.is_empty() {
        return Err(Error::BadInput(format!(
            "avro: {} trailing bytes after the ObjectEvent record",
            bytes.len() - r.position()
        )));
    }
    Ok(event)
}

fn skip_state(r: &mut Reader<'_>) -> Result<()> {
    r.skip_opt_string()?; // version_id
    r.long()?; // sequence
    r.long()?; // size
    r.skip_opt_string()?; // etag
    r.skip_opt_string()?; // content_type
    r.skip_opt_string()?; // sha256
    r.skip_map()?; // metadata
    r.skip_map()?; // tags
    r.skip_opt_string()?; // storage_class
    r.long()?; // last_modified
    r.skip_map()?; // headers
    r.skip_opt_string()?; // checksum
    r.opt_longs()?; // part_sizes
    Ok(())
}

pub fn decode_state(r: &mut Reader<'_>) -> Result<ObjectState> {
    let mut s = decode_state_v2(r)?;
    s.headers = r.map()?;
    s.checksum = r.opt_string()?;
    s.part_sizes = r.opt_longs()?;
    Ok(s)
}

/// A state as schema version 2 laid it out (no headers, checksum or part sizes): what the
/// index's rows of format 1 hold.
pub fn decode_state_v2(r: &mut Reader<'_>) -> Result<ObjectState> {
    Ok(ObjectState {
        version_id: r.opt_string()?,
        sequence: r.long()?,
        size: r.long()?,
        etag: r.opt_string()?,
        content_type: r.opt_string()?,
        sha256: r.opt_string()?,
        metadata: r.map()?,
        tags: r.map()?,
        storage_class: r.opt_string()?,
        last_modified: r.long()?,
        ..ObjectState::default()
    })
}
