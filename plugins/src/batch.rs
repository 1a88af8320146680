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

/// Call `each` with (record offset, string) for the string fields of `e` that `fields` asks
/// for, in record order. A field not asked for is not even read: batches are laid out for
/// hundreds of events whose structs are rarely all in cache.
#[inline(always)]
fn texts<'e, E>(
    e: &'e ObjectEvent,
    fields: u32,
    mut each: impl FnMut(usize, &'e str) -> Result<(), E>,
) -> Result<(), E> {
    if fields & wants::EVENT_TYPE != 0 {
        each(field::EVENT_TYPE, e.event_type.as_str())?;
    }
    if fields & wants::BUCKET != 0 {
        each(field::BUCKET, &e.bucket)?;
    }
    if fields & wants::KEY != 0 {
        each(field::KEY, &e.key)?;
    }
    if fields & wants::CONTENT_TYPE != 0
        && let Some(s) = &e.content_type
    {
        each(field::CONTENT_TYPE, s)?;
    }
    if fields & wants::ETAG != 0
        && let Some(s) = &e.etag
    {
        each(field::ETAG, s)?;
    }
    if fields & wants::REQUESTER != 0
        && let Some(s) = &e.requester
    {
        each(field::REQUESTER, s)?;
    }
    Ok(())
}

/// Call `each` with (record offset, map) for the maps of `e` that `fields` asks for and
/// that have entries, in record order.
#[inline(always)]
fn maps<'e, E>(
    e: &'e ObjectEvent,
    fields: u32,
    mut each: impl FnMut(usize, &'e StringMap) -> Result<(), E>,
) -> Result<(), E> {
    if fields & wants::METADATA != 0 && !e.metadata.is_empty() {
        each(field::METADATA, &e.metadata)?;
    }
    if fields & wants::TAGS != 0 && !e.tags.is_empty() {
        each(field::TAGS, &e.tags)?;
    }
    Ok(())
}

/// The bytes a batch of `events` takes with the string fields `fields` asks for: what
/// [`write`] needs.
pub fn size(events: &[Arc<ObjectEvent>], fields: u32) -> usize {
    let mut total = HEADER + events.len() * (RECORD + 1);
    for e in events {
        let _ = texts::<()>(e, fields, |_, s| {
            total += s.len();
            Ok(())
        });
        let _ = maps::<()>(e, fields, |_, m| {
            total += m.len() * ENTRY;
            total += m.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
            Ok(())
        });
    }
    total
}

/// `dst.copy_from_slice(src)` for slices of one length, without a call to `memcpy` for the
/// short strings events are made of: two overlapping fixed-size copies cover any length
/// between the size and twice it.
#[inline(always)]
fn copy_short(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    match n {
        0 => {}
        1..4 => {
            dst[0] = src[0];
            dst[n / 2] = src[n / 2];
            dst[n - 1] = src[n - 1];
        }
        4..8 => {
            dst[..4].copy_from_slice(&src[..4]);
            dst[n - 4..].copy_from_slice(&src[n - 4..]);
        }
        8..16 => {
            dst[..8].copy_from_slice(&src[..8]);
            dst[n - 8..].copy_from_slice(&src[n - 8..]);
        }
        16..=32 => {
            dst[..16].copy_from_slice(&src[..16]);
            dst[n - 16..].copy_from_slice(&src[n - 16..]);
        }
        _ => dst.copy_from_slice(src),
    }
}

/// Copy `s` to `out` at `*at` and move past it; its (offset, length). `None` when `out`
/// ends first.
#[inline(always)]
fn put_str(out: &mut [u8], at: &mut usize, s: &str) -> Option<(u32, u32)> {
    let off = *at;
    copy_short(out.get_mut(off..off + s.len())?, s.as_bytes());
    *at += s.len();
    Some((off as u32, s.len() as u32))
}

/// Write `map`'s entry table and its strings at `*at` of `out`, which starts `base` bytes into
/// the batch; the table's (offset, count) in the batch.
fn put_map(out: &mut [u8], at: &mut usize, base: u32, map: &StringMap) -> Option<(u32, u32)> {
    let table = *at;
    *at += map.len() * ENTRY;
    for (i, (name, value)) in map.iter().enumerate() {
        let (n_off, n_len) = put_str(out, at, name)?;
        let (v_off, v_len) = put_str(out, at, value)?;
        let e = table + i * ENTRY;
        let entry = out.get_mut(e..e + ENTRY)?;
        for (k, v) in [n_off + base, n_len, v_off + base, v_len]
            .into_iter()
            .enumerate()
        {
            entry[4 * k..4 * k + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
    Some((table as u32 + base, map.len() as u32))
}

/// Lay `events` out at the start of `out` (the module's own buffer, so nothing is copied
/// twice), with the string fields `fields` asks for ([`wants`]). Returns where the verdicts
/// start and the batch's length, or `None` when `out` is shorter than that ([`size`] says
/// how long it must be).
pub fn write(events: &[Arc<ObjectEvent>], fields: u32, out: &mut [u8]) -> Option<(usize, usize)> {
    let n = events.len();
    // Strings and entry tables go after the records.
    let strings = HEADER + n * RECORD;
    if out.len() < strings + n {
        return None;
    }
    // Each record is written in place: built on the stack and copied, its 16-byte loads would
    // wait on the narrower stores that built it (a store-forwarding stall per load).
    let (records, rest) = out.split_at_mut(strings);
    let mut at = 0;
    for (e, rec) in events
        .iter()
        .zip(records[HEADER..].chunks_exact_mut(RECORD))
    {
        let rec: &mut [u8; RECORD] = rec.try_into().expect("RECORD bytes");
        *rec = TEMPLATE;
        texts::<()>(e, fields, |f, s| {
            let (off, len) = put_str(rest, &mut at, s).ok_or(())?;
            set_pair(rec, f, off + strings as u32, len);
            Ok(())
        })
        .ok()?;
        // A removed object's attributes are those it had, as v1's `size()` and the rules say.
        let size = e.size.or(e.previous.as_ref().map(|p| p.size)).unwrap_or(-1);
        rec[field::SIZE..field::SIZE + 8].copy_from_slice(&size.to_le_bytes());
        rec[field::SEQUENCE..field::SEQUENCE + 8].copy_from_slice(&e.sequence.to_le_bytes());
        maps::<()>(e, fields, |f, m| {
            let (off, count) = put_map(rest, &mut at, strings as u32, m).ok_or(())?;
            set_pair(rec, f, off, count);
            Ok(())
        })
        .ok()?;
    }
    let verdicts = strings + at;
    out.get_mut(verdicts..verdicts + n)?.fill(UNDECIDED);
    let len = verdicts + n;
    for (k, v) in [n, RECORD, verdicts, len].into_iter().enumerate() {
        out[4 * k..4 * k + 4].copy_from_slice(&(v as u32).to_le_bytes());
    }
    Some((verdicts, len))
}

/// [`write`] into a new buffer of exactly [`size`] bytes.
#[cfg(test)]
fn encode(events: &[Arc<ObjectEvent>], fields: u32) -> (Vec<u8>, usize) {
    let mut buf = vec![0u8; size(events, fields)];
    let (verdicts, len) = write(events, fields, &mut buf).expect("room for the batch");
    assert_eq!(len, buf.len());
    assert_eq!(
        write(events, fields, &mut buf[..len - 1]),
        None,
        "one byte short"
    );
    (buf, verdicts)
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
        let (buf, verdicts) = encode(&events, wants::ALL);
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
mod copy_tests {
    #[test]
    fn short_copies_copy_every_length() {
        let src: Vec<u8> = (1..=80).collect();
        for n in 0..=src.len() {
            let mut dst = vec![0u8; n];
            super::copy_short(&mut dst, &src[..n]);
            assert_eq!(dst, &src[..n], "length {n}");
        }
    }
}

#[cfg(test)]
mod mask_tests {
    use super::*;

    #[test]
    fn fields_not_asked_for_read_as_absent() {
        let e = Arc::new(tidemark_core::event::sample_event(3));
        let (buf, _) = encode(std::slice::from_ref(&e), wants::KEY);
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
