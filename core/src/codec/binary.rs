//! Avro binary primitives (spec: "Binary Encoding"): zig-zag varint longs, length-prefixed
//! strings, `["null", T]` unions and blocked maps. Shared by the direct event codec and the
//! index's row encoding.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::{Error, Result};

pub fn put_long(buf: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        buf.push((n as u8) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

pub fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_long(buf, s.len() as i64);
    buf.extend_from_slice(s.as_bytes());
}

/// A UUID as Avro's `uuid` logical type on `string`: the 36-character hyphenated form.
pub fn put_uuid(buf: &mut Vec<u8>, id: &Uuid) {
    let mut text = [0u8; 36];
    put_str(buf, id.hyphenated().encode_lower(&mut text));
}

/// `["null", "string"]`.
pub fn put_opt_str(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => put_long(buf, 0),
        Some(s) => {
            put_long(buf, 1);
            put_str(buf, s);
        }
    }
}

/// `["null", "long"]`.
pub fn put_opt_long(buf: &mut Vec<u8>, v: Option<i64>) {
    match v {
        None => put_long(buf, 0),
        Some(v) => {
            put_long(buf, 1);
            put_long(buf, v);
        }
    }
}

/// `{"type": "map", "values": "string"}` as one block (or none when empty).
pub fn put_map(buf: &mut Vec<u8>, map: &BTreeMap<String, String>) {
    if !map.is_empty() {
        put_long(buf, map.len() as i64);
        for (k, v) in map {
            put_str(buf, k);
            put_str(buf, v);
        }
    }
    put_long(buf, 0);
}

/// `["null", {"type": "array", "items": "long"}]`, the array as one block.
pub fn put_opt_longs(buf: &mut Vec<u8>, v: Option<&[i64]>) {
    match v {
        None => put_long(buf, 0),
        Some(items) => {
            put_long(buf, 1);
            if !items.is_empty() {
                put_long(buf, items.len() as i64);
                for n in items {
                    put_long(buf, *n);
                }
            }
            put_long(buf, 0);
        }
    }
}

/// Reads Avro binary from a byte slice, naming the byte offset when the data is bad.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The bytes between two positions already read.
    pub fn slice(&self, start: usize, end: usize) -> &'a [u8] {
        &self.buf[start..end]
    }

    fn bad(&self, what: &str) -> Error {
        Error::BadInput(format!("avro: {what} at byte {}", self.pos))
    }

    #[inline]
    pub fn long(&mut self) -> Result<i64> {
        // Most longs in a record (lengths, union branches, map counts) fit one byte.
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(i64::from(b >> 1) ^ -i64::from(b & 1));
        }
        self.long_of_bytes()
    }

    /// A long of more than one byte: kept out of line so the one-byte case inlines small.
    #[inline(never)]
    fn long_of_bytes(&mut self) -> Result<i64> {
        let mut n: u64 = 0;
        let mut shift = 0u32;
        loop {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.bad("truncated long"));
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(self.bad("long overflows 64 bits"));
            }
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(self.bad("long overflows 64 bits"));
            }
        }
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    #[inline]
    pub(super) fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.long()?;
        let len = usize::try_from(len).map_err(|_| self.bad("negative length"))?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| self.bad("length runs past the end of the data"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// 16 raw bytes (a UUID in index rows).
    pub fn fixed16(&mut self) -> Result<[u8; 16]> {
        let end = self.pos + 16;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| self.bad("truncated 16-byte value"))?
            .try_into()
            .expect("16 bytes");
        self.pos = end;
        Ok(out)
    }

    /// `["null", "string"]`, borrowed.
    #[inline]
    pub fn opt_str(&mut self) -> Result<Option<&'a str>> {
        if self.branch()? {
            self.str().map(Some)
        } else {
            Ok(None)
        }
    }

    #[inline]
    pub fn str(&mut self) -> Result<&'a str> {
        let start = self.pos;
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes).map_err(|_| {
            Error::BadInput(format!("avro: string at byte {start} is not valid UTF-8"))
        })
    }

    pub fn string(&mut self) -> Result<String> {
        self.str().map(str::to_owned)
    }

    pub fn uuid(&mut self) -> Result<Uuid> {
        let start = self.pos;
        let text = self.str()?;
        Uuid::parse_str(text)
            .map_err(|_| Error::BadInput(format!("avro: '{text}' at byte {start} is not a UUID")))
    }

    /// Union branch index for `["null", T]`: false for null, true for T.
    #[inline]
    fn branch(&mut self) -> Result<bool> {
        match self.long()? {
            0 => Ok(false),
            1 => Ok(true),
            n => Err(self.bad(&format!("union branch {n} out of range for [\"null\", T]"))),
        }
    }

    pub fn opt_string(&mut self) -> Result<Option<String>> {
        if self.branch()? {
            self.string().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Skip a `["null", "string"]` without allocating it.
    pub fn skip_opt_string(&mut self) -> Result<()> {
        if self.branch()? {
            self.bytes()?;
        }
        Ok(())
    }

    #[inline]
    pub fn opt_long(&mut self) -> Result<Option<i64>> {
        if self.branch()? {
            self.long().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Null-or-something union: returns whether the value is present.
    #[inline]
    pub fn present(&mut self) -> Result<bool> {
        self.branch()
    }

    pub fn skip_map(&mut self) -> Result<()> {
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                // The block's byte size follows: skip the block in one step.
                let size = usize::try_from(self.long()?)
                    .map_err(|_| self.bad("negative map block size"))?;
                self.pos = self
                    .pos
                    .checked_add(size)
                    .filter(|end| *end <= self.buf.len())
                    .ok_or_else(|| self.bad("map block runs past the end of the data"))?;
                continue;
            }
            for _ in 0..count {
                self.bytes()?;
                self.bytes()?;
            }
        }
    }

    /// `["null", {"type": "array", "items": "long"}]`.
    pub fn opt_longs(&mut self) -> Result<Option<Vec<i64>>> {
        if !self.branch()? {
            return Ok(None);
        }
        let mut out = Vec::new();
        loop {
            let mut count = self.long()?;
            if count == 0 {
                return Ok(Some(out));
            }
            if count < 0 {
                count = count
                    .checked_neg()
                    .ok_or_else(|| self.bad("bad array block count"))?;
                self.long()?;
            }
            if count as usize > self.buf.len() - self.pos {
                return Err(self.bad("array block longer than the data"));
            }
            for _ in 0..count {
                out.push(self.long()?);
            }
        }
    }

    pub fn map(&mut self) -> Result<BTreeMap<String, String>> {
        let mut map = BTreeMap::new();
        loop {
            let mut count = self.long()?;
            if count == 0 {
                return Ok(map);
            }
            if count < 0 {
                // A negative count is followed by the block's size in bytes (for skipping).
                count = count
                    .checked_neg()
                    .ok_or_else(|| self.bad("bad map block count"))?;
                self.long()?;
            }
            for _ in 0..count {
                let k = self.string()?;
                let v = self.string()?;
                map.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longs_round_trip_at_the_edges() {
        for v in [0, 1, -1, 63, -64, 64, i64::MAX, i64::MIN, 1 << 40] {
            let mut buf = Vec::new();
            put_long(&mut buf, v);
            let mut r = Reader::new(&buf);
            assert_eq!(r.long().unwrap(), v);
            assert!(r.is_empty());
        }
        // Spec examples: 0 -> 00, -1 -> 01, 1 -> 02, -64 -> 7f, 64 -> 80 01
        let mut buf = Vec::new();
        for v in [0, -1, 1, -64, 64] {
            put_long(&mut buf, v);
        }
        assert_eq!(buf, [0x00, 0x01, 0x02, 0x7f, 0x80, 0x01]);
    }

    #[test]
    fn rejects_bad_data_with_the_offset() {
        let err = Reader::new(&[0x80]).long().unwrap_err().to_string();
        assert!(err.contains("truncated long at byte 1"), "{err}");
        let err = Reader::new(&[0x08, b'a']).str().unwrap_err().to_string();
        assert!(err.contains("past the end"), "{err}");
        let err = Reader::new(&[0x04]).opt_string().unwrap_err().to_string();
        assert!(err.contains("union branch 2"), "{err}");
        let err = Reader::new(&[0xff; 11]).long().unwrap_err().to_string();
        assert!(err.contains("overflows"), "{err}");
    }

    #[test]
    fn reads_negative_map_blocks() {
        // count -1 (zigzag 0x01), byte size 4, "a" -> "b", end
        let buf = [0x01, 0x08, 0x02, b'a', 0x02, b'b', 0x00];
        let map = Reader::new(&buf).map().unwrap();
        assert_eq!(map.get("a").map(String::as_str), Some("b"));
    }
}
