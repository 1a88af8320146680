//! Direct Avro encoder and decoder for `ObjectEvent` as written by schema version
//! [`DIRECT_VERSION`]: field by field in schema order, no intermediate `Value` tree.
//! When a schema version is added, this file follows it (a test fails until it does).

use super::binary::{
    Reader, put_long, put_map, put_opt_long, put_opt_str, put_str, put_uuid,
};
use crate::event::{EventType, ObjectEvent, ObjectState};
use crate::{Error, Result};

/// The object event schema version this file encodes and decodes.
pub const DIRECT_VERSION: u32 = 1;

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
}

pub fn decode(bytes: &[u8]) -> Result<ObjectEvent> {
    let mut r = Reader::new(bytes);
    let event = ObjectEvent {
        event_id: r.uuid()?,
        event_type: {
            let name = r.str()?;
            EventType::parse(name)
                .ok_or_else(|| Error::BadInput(format!("avro: unknown event type '{name}'")))?
        },
        event_time: r.long()?,
        bucket: r.string()?,
        key: r.string()?,
        version_id: r.opt_string()?,
        sequence: r.long()?,
        size: r.opt_long()?,
        etag: r.opt_string()?,
        content_type: r.opt_string()?,
        sha256: r.opt_string()?,
        metadata: r.map()?,
        tags: r.map()?,
        storage_class: r.opt_string()?,
        requester: r.opt_string()?,
        source_ip: r.opt_string()?,
        request_id: r.opt_string()?,
        region: r.opt_string()?,
        node: r.opt_string()?,
        previous: if r.present()? { Some(decode_state(&mut r)?) } else { None },
    };
    if !r.is_empty() {
        return Err(Error::BadInput(format!(
            "avro: {} trailing bytes after the ObjectEvent record",
            bytes.len() - r.position()
        )));
    }
    Ok(event)
}

pub fn decode_state(r: &mut Reader<'_>) -> Result<ObjectState> {
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
    })
}
