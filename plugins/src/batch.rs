//! ABI v2's batch (`plugins/ABI.md`, "Version 2"): the events of one call laid out in the
//! module's memory so it reads any field without a host call, followed by one verdict byte per
//! event for the module to fill in.
//!
//! Everything is little-endian; every offset is from the start of the batch. A batch is:
//! a 16-byte header (`count`, `record_size`, `verdicts`, `len`), `count` records of
//! [`RECORD`] bytes, then each event's strings and metadata and tag entry tables ([`ENTRY`]
//! bytes each), and `count` verdict bytes preset to [`UNDECIDED`].

use std::sync::Arc;

use tidemark_core::event::{ObjectEvent, StringMap};

/// The header's size.
pub const HEADER: usize = 16;
/// One event's record.
pub const RECORD: usize = 80;
/// One metadata or tag entry: name offset and length, value offset and length.
pub const ENTRY: usize = 16;
/// The offset of an absent string field.
pub const ABSENT: u32 = u32::MAX;
/// A verdict byte the module did not write.
pub const UNDECIDED: u8 = 0x7F;
/// The most events in one call (larger runs are split).
pub const MAX_EVENTS: usize = 256;

/// Where a record's fields are (bytes from the record's start).
pub mod field {
    pub const EVENT_TYPE: usize = 0;
    pub const BUCKET: usize = 8;
    pub const KEY: usize = 16;
    pub const CONTENT_TYPE: usize = 24;
    pub const ETAG: usize = 32;
    pub const REQUESTER: usize = 40;
    pub const SIZE: usize = 48;
    pub const SEQUENCE: usize = 56;
    pub const METADATA: usize = 64;
    pub const TAGS: usize = 72;
}

/// Which string fields a module asks for (its optional `tidemark_fields` export); size and
/// sequence are always written. A field not asked for reads as absent.
pub mod wants {
    pub const EVENT_TYPE: u32 = 1;
    pub const BUCKET: u32 = 2;
    pub const KEY: u32 = 4;
    pub const CONTENT_TYPE: u32 = 8;
    pub const ETAG: u32 = 16;
    pub const REQUESTER: u32 = 32;
    pub const METADATA: u32 = 64;
    pub const TAGS: u32 = 128;
    pub const ALL: u32 = 255;
}

fn set_u32(rec: &mut [u8; RECORD], at: usize, v: u32) {
    rec[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Append `s` to the batch; the (offset, length) pair for it.
fn push_str(buf: &mut Vec<u8>, s: &str) -> (u32, u32) {
    let off = buf.len() as u32;
    buf.extend_from_slice(s.as_bytes());
    (off, s.len() as u32)
}

fn set_str(rec: &mut [u8; RECORD], at: usize, buf: &mut Vec<u8>, s: Option<&str>, wanted: bool) {
    let (off, len) = match s {
        Some(s) if wanted => push_str(buf, s),
        _ => (ABSENT, 0),
    };
    set_u32(rec, at, off);
    set_u32(rec, at + 4, len);
}

/// Append `map`'s entry table and strings; the (offset, count) pair for them.
fn push_map(buf: &mut Vec<u8>, map: &StringMap) -> (u32, u32) {
    let table = buf.len();
    buf.resize(table + map.len() * ENTRY, 0);
    for (i, (name, value)) in map.iter().enumerate() {
        let (n_off, n_len) = push_str(buf, name);
        let (v_off, v_len) = push_str(buf, value);
        let e = table + i * ENTRY;
        for (k, v) in [n_off, n_len, v_off, v_len].into_iter().enumerate() {
            buf[e + 4 * k..e + 4 * k + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
    (table as u32, map.len() as u32)
}

fn set_map(rec: &mut [u8; RECORD], at: usize, buf: &mut Vec<u8>, map: &StringMap, wanted: bool) {
    let (off, count) = match wanted {
        true => push_map(buf, map),
        false => (0, 0),
    };
    set_u32(rec, at, off);
    set_u32(rec, at + 4, count);
}

/// Lay `events` out in `buf` (its old content is dropped), with the string fields `fields`
/// asks for ([`wants`]); returns where the verdicts start.
pub fn encode(events: &[Arc<ObjectEvent>], fields: u32, buf: &mut Vec<u8>) -> usize {
    let n = events.len();
    let want = |f: u32| fields & f != 0;
    buf.clear();
    buf.resize(HEADER + n * RECORD, 0);
    for (i, e) in events.iter().enumerate() {
        let mut rec = [0u8; RECORD];
        let r = &mut rec;
        set_str(
            r,
            field::EVENT_TYPE,
            buf,
            Some(e.event_type.as_str()),
            want(wants::EVENT_TYPE),
        );
        set_str(r, field::BUCKET, buf, Some(&e.bucket), want(wants::BUCKET));
        set_str(r, field::KEY, buf, Some(&e.key), want(wants::KEY));
        set_str(
            r,
            field::CONTENT_TYPE,
            buf,
            e.content_type.as_deref(),
            want(wants::CONTENT_TYPE),
        );
        set_str(r, field::ETAG, buf, e.etag.as_deref(), want(wants::ETAG));
        set_str(
            r,
            field::REQUESTER,
            buf,
            e.requester.as_deref(),
            want(wants::REQUESTER),
        );
        // A removed object's attributes are those it had, as v1's `size()` and the rules say.
        let size = e.size.or(e.previous.as_ref().map(|p| p.size)).unwrap_or(-1);
        r[field::SIZE..field::SIZE + 8].copy_from_slice(&size.to_le_bytes());
        r[field::SEQUENCE..field::SEQUENCE + 8].copy_from_slice(&e.sequence.to_le_bytes());
        set_map(r, field::METADATA, buf, &e.metadata, want(wants::METADATA));
        set_map(r, field::TAGS, buf, &e.tags, want(wants::TAGS));
        let at = HEADER + i * RECORD;
        buf[at..at + RECORD].copy_from_slice(&rec);
    }
    let verdicts = buf.len();
    buf.resize(verdicts + n, UNDECIDED);
    let len = buf.len() as u32;
    for (k, v) in [n as u32, RECORD as u32, verdicts as u32, len]
        .into_iter()
        .enumerate()
    {
        buf[4 * k..4 * k + 4].copy_from_slice(&v.to_le_bytes());
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn str_at(b: &[u8], at: usize) -> Option<&str> {
        let off = u32_at(b, at);
        (off != ABSENT).then(|| {
            let len = u32_at(b, at + 4) as usize;
            std::str::from_utf8(&b[off as usize..off as usize + len]).unwrap()
        })
    }

    #[test]
    fn every_field_is_where_the_abi_says() {
        let mut e = tidemark_core::event::sample_event(3);
        e.key = "raw/é.jpg".into();
        e.content_type = None;
        e.metadata.clear();
        e.metadata.insert("camera".into(), "x100".into());
        e.tags.clear();
        let events = vec![Arc::new(e.clone()), Arc::new(e)];
        let mut buf = Vec::new();
        let verdicts = encode(&events, wants::ALL, &mut buf);
        assert_eq!(u32_at(&buf, 0), 2);
        assert_eq!(u32_at(&buf, 4), RECORD as u32);
        assert_eq!(u32_at(&buf, 8) as usize, verdicts);
        assert_eq!(u32_at(&buf, 12) as usize, buf.len());
        assert_eq!(&buf[verdicts..], &[UNDECIDED, UNDECIDED]);
        let r = HEADER + RECORD;
        assert_eq!(str_at(&buf, r + field::KEY), Some("raw/é.jpg"));
        assert_eq!(str_at(&buf, r + field::CONTENT_TYPE), None);
        assert_eq!(
            str_at(&buf, r + field::EVENT_TYPE),
            Some(events[1].event_type.as_str())
        );
        let meta = u32_at(&buf, r + field::METADATA) as usize;
        assert_eq!(u32_at(&buf, r + field::METADATA + 4), 1);
        assert_eq!(str_at(&buf, meta), Some("camera"));
        assert_eq!(str_at(&buf, meta + 8), Some("x100"));
        assert_eq!(u32_at(&buf, r + field::TAGS + 4), 0);
        let size = i64::from_le_bytes(
            buf[r + field::SIZE..r + field::SIZE + 8]
                .try_into()
                .unwrap(),
        );
        assert_eq!(Some(size), events[1].size);
    }
}

#[cfg(test)]
mod mask_tests {
    use super::*;

    #[test]
    fn fields_not_asked_for_read_as_absent() {
        let e = Arc::new(tidemark_core::event::sample_event(3));
        let mut buf = Vec::new();
        encode(std::slice::from_ref(&e), wants::KEY, &mut buf);
        let at = |o: usize| u32::from_le_bytes(buf[HEADER + o..HEADER + o + 4].try_into().unwrap());
        assert_ne!(at(field::KEY), ABSENT);
        assert_eq!(at(field::BUCKET), ABSENT);
        assert_eq!(at(field::METADATA + 4), 0);
        let size = &buf[HEADER + field::SIZE..HEADER + field::SIZE + 8];
        assert_eq!(
            i64::from_le_bytes(size.try_into().unwrap()),
            e.size.unwrap_or(-1)
        );
    }
}
