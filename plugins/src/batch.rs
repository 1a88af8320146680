//! ABI v2's batch (`plugins/ABI.md`, "Version 2"): the events of one call laid out in the
//! module's memory so it reads any field without a host call, followed by one verdict byte per
//! event for the module to fill in.
//!
//! Everything is little-endian; every offset is from the start of the batch. A batch is:
//! a 16-byte header (`count`, `record_size`, `verdicts`, `len`), `count` records of
//! [`RECORD`] bytes, then each event's strings and metadata and tag entry tables ([`ENTRY`]
//! bytes each), and `count` verdict bytes preset to [`UNDECIDED`]. An empty map is written
//! as offset 0, count 0.

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

/// A record with every string absent and no entries, which the fields asked for overwrite.
const TEMPLATE: [u8; RECORD] = {
    let mut r = [0u8; RECORD];
    let mut f = 0;
    while f <= field::REQUESTER {
        let b = ABSENT.to_le_bytes();
        r[f] = b[0];
        r[f + 1] = b[1];
        r[f + 2] = b[2];
        r[f + 3] = b[3];
        f += 8;
    }
    r
};

fn set_pair(rec: &mut [u8; RECORD], at: usize, a: u32, b: u32) {
    rec[at..at + 4].copy_from_slice(&a.to_le_bytes());
    rec[at + 4..at + 8].copy_from_slice(&b.to_le_bytes());
}

/// Append `s` to the strings (which start at `base` in the batch); its (offset, length).
fn push_str(strings: &mut Vec<u8>, base: usize, s: &str) -> (u32, u32) {
    let off = (base + strings.len()) as u32;
    strings.extend_from_slice(s.as_bytes());
    (off, s.len() as u32)
}

/// Append `map`'s entry table and its strings; the table's (offset, count).
fn push_map(strings: &mut Vec<u8>, base: usize, map: &StringMap) -> (u32, u32) {
    let table = strings.len();
    strings.resize(table + map.len() * ENTRY, 0);
    for (i, (name, value)) in map.iter().enumerate() {
        let (n_off, n_len) = push_str(strings, base, name);
        let (v_off, v_len) = push_str(strings, base, value);
        let e = table + i * ENTRY;
        for (k, v) in [n_off, n_len, v_off, v_len].into_iter().enumerate() {
            strings[e + 4 * k..e + 4 * k + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
    ((base + table) as u32, map.len() as u32)
}

/// Lay `events` out in `buf` (its old content is dropped), with the string fields `fields`
/// asks for ([`wants`]); `strings` is scratch space. Returns where the verdicts start.
pub fn encode(
    events: &[Arc<ObjectEvent>],
    fields: u32,
    buf: &mut Vec<u8>,
    strings: &mut Vec<u8>,
) -> usize {
    let n = events.len();
    // Strings and entry tables go after the records.
    let base = HEADER + n * RECORD;
    buf.clear();
    strings.clear();
    buf.extend_from_slice(&[0u8; HEADER]);
    for e in events {
        let mut rec = TEMPLATE;
        let mut text = |at: usize, want: u32, s: Option<&str>| {
            if fields & want != 0
                && let Some(s) = s
            {
                let (off, len) = push_str(strings, base, s);
                set_pair(&mut rec, at, off, len);
            }
        };
        text(
            field::EVENT_TYPE,
            wants::EVENT_TYPE,
            Some(e.event_type.as_str()),
        );
        text(field::BUCKET, wants::BUCKET, Some(&e.bucket));
        text(field::KEY, wants::KEY, Some(&e.key));
        text(
            field::CONTENT_TYPE,
            wants::CONTENT_TYPE,
            e.content_type.as_deref(),
        );
        text(field::ETAG, wants::ETAG, e.etag.as_deref());
        text(field::REQUESTER, wants::REQUESTER, e.requester.as_deref());
        // A removed object's attributes are those it had, as v1's `size()` and the rules say.
        let size = e.size.or(e.previous.as_ref().map(|p| p.size)).unwrap_or(-1);
        rec[field::SIZE..field::SIZE + 8].copy_from_slice(&size.to_le_bytes());
        rec[field::SEQUENCE..field::SEQUENCE + 8].copy_from_slice(&e.sequence.to_le_bytes());
        if fields & wants::METADATA != 0 && !e.metadata.is_empty() {
            let (off, count) = push_map(strings, base, &e.metadata);
            set_pair(&mut rec, field::METADATA, off, count);
        }
        if fields & wants::TAGS != 0 && !e.tags.is_empty() {
            let (off, count) = push_map(strings, base, &e.tags);
            set_pair(&mut rec, field::TAGS, off, count);
        }
        buf.extend_from_slice(&rec);
    }
    buf.extend_from_slice(strings);
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
        let verdicts = encode(&events, wants::ALL, &mut buf, &mut Vec::new());
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
        encode(
            std::slice::from_ref(&e),
            wants::KEY,
            &mut buf,
            &mut Vec::new(),
        );
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
