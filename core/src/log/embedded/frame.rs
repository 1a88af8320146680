//! On-disk record framing. Each record is
//!
//! ```text
//! u32 LE  body length
//! u32 LE  CRC32C of the body
//! body:   u64 LE offset | i64 LE append time (µs) | u32 LE key length | key
//!         | u16 LE header count | (u16 LE name length | name | u32 LE value length | value)*
//!         | value (the rest of the body)
//! ```
//!
//! The CRC covers everything a reader trusts, so a torn or corrupt tail is detected by the
//! first frame whose length runs past the end of the file or whose CRC does not match.

use bytes::{BufMut, Bytes};

use crate::log::{Header, NewRecord, Record};

/// Length and CRC.
pub const FRAME_HEADER: usize = 8;
/// Upper bound on a body; larger lengths can only be garbage.
pub const MAX_BODY: usize = 64 << 20;
/// Offset, timestamp, key length and header count.
const FIXED_BODY: usize = 8 + 8 + 4 + 2;

/// Append one framed record to `buf`; returns the frame's length.
pub fn encode(buf: &mut Vec<u8>, offset: u64, timestamp: i64, rec: &NewRecord) -> usize {
    let start = buf.len();
    buf.put_u32_le(0); // length, patched below
    buf.put_u32_le(0); // crc, patched below
    buf.put_u64_le(offset);
    buf.put_i64_le(timestamp);
    buf.put_u32_le(rec.key.len() as u32);
    buf.extend_from_slice(&rec.key);
    buf.put_u16_le(rec.headers.len() as u16);
    for h in &rec.headers {
        buf.put_u16_le(h.name.len() as u16);
        buf.extend_from_slice(h.name.as_bytes());
        buf.put_u32_le(h.value.len() as u32);
        buf.extend_from_slice(&h.value);
    }
    buf.extend_from_slice(&rec.value);
    let body_len = buf.len() - start - FRAME_HEADER;
    let crc = crc32c::crc32c(&buf[start + FRAME_HEADER..]);
    buf[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    buf.len() - start
}

/// Size a record will take on disk.
pub fn encoded_len(rec: &NewRecord) -> usize {
    FRAME_HEADER
        + FIXED_BODY
        + rec.key.len()
        + rec.value.len()
        + rec
            .headers
            .iter()
            .map(|h| 6 + h.name.len() + h.value.len())
            .sum::<usize>()
}

/// What parsing at a position found.
#[derive(Debug)]
pub enum Parsed {
    /// A whole, valid record, and the frame's length.
    Record(Record, usize),
    /// The buffer ends inside the frame; `need` bytes from the frame start would complete it.
    Incomplete { need: usize },
    /// The frame is not valid: a torn write or corruption.
    Corrupt(String),
}

/// Parse the frame at the start of `buf` (a slice of a shared chunk, so keys and values are
/// zero-copy slices of it).
pub fn parse(buf: &Bytes, partition: u32) -> Parsed {
    if buf.len() < FRAME_HEADER {
        return Parsed::Incomplete { need: FRAME_HEADER };
    }
    let body_len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap());
    if !(FIXED_BODY..=MAX_BODY).contains(&body_len) {
        return Parsed::Corrupt(format!("frame length {body_len} is out of range"));
    }
    let total = FRAME_HEADER + body_len;
    if buf.len() < total {
        return Parsed::Incomplete { need: total };
    }
    let body = buf.slice(FRAME_HEADER..total);
    if crc32c::crc32c(&body) != crc {
        return Parsed::Corrupt("CRC mismatch".into());
    }
    match parse_body(&body, partition) {
        Some(rec) => Parsed::Record(rec, total),
        None => Parsed::Corrupt("body fields run past the frame".into()),
    }
}

fn parse_body(body: &Bytes, partition: u32) -> Option<Record> {
    let mut pos = 0usize;
    let mut take = |n: usize| -> Option<std::ops::Range<usize>> {
        let r = pos..pos.checked_add(n).filter(|end| *end <= body.len())?;
        pos = r.end;
        Some(r)
    };
    let offset = u64::from_le_bytes(body[take(8)?].try_into().ok()?);
    let timestamp = i64::from_le_bytes(body[take(8)?].try_into().ok()?);
    let key_len = u32::from_le_bytes(body[take(4)?].try_into().ok()?) as usize;
    let key = body.slice(take(key_len)?);
    let header_count = u16::from_le_bytes(body[take(2)?].try_into().ok()?);
    let mut headers = Vec::with_capacity(header_count as usize);
    for _ in 0..header_count {
        let name_len = u16::from_le_bytes(body[take(2)?].try_into().ok()?) as usize;
        let name = String::from_utf8(body[take(name_len)?].to_vec()).ok()?;
        let value_len = u32::from_le_bytes(body[take(4)?].try_into().ok()?) as usize;
        let value = body.slice(take(value_len)?);
        headers.push(Header { name, value });
    }
    let value = body.slice(pos..);
    Some(Record {
        partition,
        offset,
        timestamp,
        key,
        value,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NewRecord {
        let mut r = NewRecord::new(&b"photos/a.jpg"[..], &b"value"[..]);
        r.headers.push(Header {
            name: "replay".into(),
            value: Bytes::from_static(b"job-1"),
        });
        r
    }

    #[test]
    fn round_trips() {
        let mut buf = Vec::new();
        let n = encode(&mut buf, 42, 1_000, &sample());
        assert_eq!(n, encoded_len(&sample()));
        let Parsed::Record(rec, len) = parse(&Bytes::from(buf), 3) else {
            panic!("not parsed")
        };
        assert_eq!(len, n);
        assert_eq!((rec.partition, rec.offset, rec.timestamp), (3, 42, 1_000));
        assert_eq!(&rec.key[..], b"photos/a.jpg");
        assert_eq!(&rec.value[..], b"value");
        assert_eq!(rec.headers[0].name, "replay");
    }

    #[test]
    fn detects_torn_and_corrupt_frames() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, 1, &sample());
        let whole = Bytes::from(buf.clone());
        assert!(matches!(
            parse(&whole.slice(..whole.len() - 1), 0),
            Parsed::Incomplete { .. }
        ));
        let mut flipped = buf.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert!(matches!(
            parse(&Bytes::from(flipped), 0),
            Parsed::Corrupt(_)
        ));
        assert!(matches!(
            parse(&Bytes::from(vec![0u8; 64]), 0),
            Parsed::Corrupt(_)
        ));
    }
}
