//! The snapshot file, little-endian throughout:
//!
//! ```text
//! magic "TMSNAP\0\x01" (format 1)
//! taken_at i64 (µs)   partitions u32   (partition u32, next offset u64) x partitions
//! rows, sorted by key: key_len u32, key, row_len u32, head row (the index's bytes)
//! u32::MAX (no more rows)   keys u64   "TMSNEND\x01"   crc32c u32 of every byte before it
//! ```
//!
//! Reading the header and the fixed-size footer is enough to list and choose snapshots; the
//! checksum is verified as the rows are loaded, so a damaged file is found in the same pass
//! that loads it (and that load is thrown away).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use tidemark_core::error::IoContext;
use tidemark_core::{Error, Result};

const MAGIC: &[u8; 8] = b"TMSNAP\0\x01";
const END_MAGIC: &[u8; 8] = b"TMSNEND\x01";
/// Key length that ends the rows.
const NO_MORE_ROWS: u32 = u32::MAX;
/// End marker, key count, end magic, checksum.
const FOOTER_BYTES: u64 = 4 + 8 + 8 + 4;
/// Larger lengths can only come from damage; refusing them avoids absurd allocations.
const MAX_KEY_BYTES: u32 = 1 << 16;
const MAX_ROW_BYTES: u32 = 1 << 26;
const MAX_PARTITIONS: u32 = 1 << 16;
const IO_BUFFER: usize = 1 << 20;

/// Magic, time taken, partition count.
const HEADER_FIXED_BYTES: usize = 8 + 8 + 4;

fn header_bytes(partitions: usize) -> usize {
    HEADER_FIXED_BYTES + 12 * partitions
}

fn corrupt(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("snapshot {}: {what}", path.display()))
}

/// What the header and footer say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub taken_at: i64,
    /// Next offset to apply per partition: the rows hold every event before these.
    pub applied: BTreeMap<u32, u64>,
    pub keys: u64,
}

/// Feeds every byte written through crc32c.
struct CrcWriter<W> {
    inner: W,
    crc: u32,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes one snapshot file: header first, then rows in key order, then [`Self::finish`].
pub struct SnapshotWriter {
    out: CrcWriter<BufWriter<File>>,
    keys: u64,
    path: std::path::PathBuf,
}

impl SnapshotWriter {
    pub fn create(path: &Path, taken_at: i64, applied: &BTreeMap<u32, u64>) -> Result<Self> {
        let file = File::create(path).ctx("create", path)?;
        let mut out = CrcWriter {
            inner: BufWriter::with_capacity(IO_BUFFER, file),
            crc: 0,
        };
        out.write_all(&encode_header(taken_at, applied))
            .ctx("write", path)?;
        Ok(SnapshotWriter {
            out,
            keys: 0,
            path: path.to_path_buf(),
        })
    }

    pub fn row(&mut self, key: &str, row: &[u8]) -> Result<()> {
        let w = &mut self.out;
        (|| {
            w.write_all(&(key.len() as u32).to_le_bytes())?;
            w.write_all(key.as_bytes())?;
            w.write_all(&(row.len() as u32).to_le_bytes())?;
            w.write_all(row)
        })()
        .ctx("write", &self.path)?;
        self.keys += 1;
        Ok(())
    }

    /// Write the footer and fsync; returns the key count and the file's size.
    pub fn finish(mut self) -> Result<(u64, u64)> {
        let mut tail = Vec::with_capacity(FOOTER_BYTES as usize);
        tail.extend_from_slice(&NO_MORE_ROWS.to_le_bytes());
        tail.extend_from_slice(&self.keys.to_le_bytes());
        tail.extend_from_slice(END_MAGIC);
        self.out.write_all(&tail).ctx("write", &self.path)?;
        let crc = self.out.crc;
        let mut buf = self.out.inner;
        buf.write_all(&crc.to_le_bytes()).ctx("write", &self.path)?;
        let file = buf
            .into_inner()
            .map_err(|e| Error::io("write", &self.path, e.into_error()))?;
        file.sync_all().ctx("fsync", &self.path)?;
        let size = file.metadata().ctx("stat", &self.path)?.len();
        Ok((self.keys, size))
    }
}

fn encode_header(taken_at: i64, applied: &BTreeMap<u32, u64>) -> Vec<u8> {
    let mut head = Vec::with_capacity(header_bytes(applied.len()));
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&taken_at.to_le_bytes());
    head.extend_from_slice(&(applied.len() as u32).to_le_bytes());
    for (p, next) in applied {
        head.extend_from_slice(&p.to_le_bytes());
        head.extend_from_slice(&next.to_le_bytes());
    }
    head
}

fn read_array<const N: usize>(r: &mut impl Read) -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

/// Read the header, and the footer's key count. Checks the structure, not the checksum.
pub fn read_header(path: &Path) -> Result<Header> {
    let mut file = File::open(path).ctx("open", path)?;
    let size = file.metadata().ctx("stat", path)?.len();
    let truncated = |_| corrupt(path, "truncated");
    let mut r = BufReader::with_capacity(64 << 10, &mut file);
    if &read_array::<8>(&mut r).map_err(truncated)? != MAGIC {
        return Err(corrupt(path, "not a snapshot file (bad magic)"));
    }
    let taken_at = i64::from_le_bytes(read_array(&mut r).map_err(truncated)?);
    let partitions = u32::from_le_bytes(read_array(&mut r).map_err(truncated)?);
    if partitions > MAX_PARTITIONS {
        return Err(corrupt(path, format!("{partitions} partitions")));
    }
    let mut applied = BTreeMap::new();
    for _ in 0..partitions {
        let p = u32::from_le_bytes(read_array(&mut r).map_err(truncated)?);
        let next = u64::from_le_bytes(read_array(&mut r).map_err(truncated)?);
        applied.insert(p, next);
    }
    drop(r);
    if size < header_bytes(applied.len()) as u64 + FOOTER_BYTES {
        return Err(corrupt(path, "truncated"));
    }
    file.seek(SeekFrom::Start(size - FOOTER_BYTES))
        .ctx("seek", path)?;
    let footer: [u8; FOOTER_BYTES as usize] = read_array(&mut file).map_err(truncated)?;
    if footer[..4] != NO_MORE_ROWS.to_le_bytes() || &footer[12..20] != END_MAGIC {
        return Err(corrupt(path, "truncated (no end marker)"));
    }
    let keys = u64::from_le_bytes(footer[4..12].try_into().expect("8 bytes"));
    Ok(Header {
        taken_at,
        applied,
        keys,
    })
}

/// The rows of a snapshot, in key order, read after its header. The last item is an error
/// if the file turns out damaged (checksum, order, lengths, key count), so whoever consumes
/// the rows learns it before committing to them.
pub struct RowReader {
    r: BufReader<File>,
    path: std::path::PathBuf,
    crc: u32,
    keys: u64,
    expected_keys: u64,
    prev: Vec<u8>,
    done: bool,
}

impl RowReader {
    pub fn open(path: &Path, header: &Header) -> Result<RowReader> {
        let mut file = File::open(path).ctx("open", path)?;
        let head = encode_header(header.taken_at, &header.applied);
        let mut read = vec![0u8; head.len()];
        file.read_exact(&mut read)
            .map_err(|_| corrupt(path, "truncated"))?;
        if read != head {
            return Err(corrupt(path, "its header changed since it was listed"));
        }
        Ok(RowReader {
            crc: crc32c::crc32c(&head),
            r: BufReader::with_capacity(IO_BUFFER, file),
            path: path.to_path_buf(),
            keys: 0,
            expected_keys: header.keys,
            prev: Vec::new(),
            done: false,
        })
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<()> {
        self.r
            .read_exact(buf)
            .map_err(|_| corrupt(&self.path, "truncated"))?;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        Ok(())
    }

    fn len(&mut self, max: u32, what: &str) -> Result<Option<usize>> {
        let mut b = [0u8; 4];
        self.read(&mut b)?;
        match u32::from_le_bytes(b) {
            NO_MORE_ROWS => Ok(None),
            n if n > max => Err(corrupt(&self.path, format!("{what} of {n} bytes"))),
            n => Ok(Some(n as usize)),
        }
    }

    fn next_row(&mut self) -> Result<Option<(String, Vec<u8>)>> {
        let Some(key_len) = self.len(MAX_KEY_BYTES, "a key")? else {
            self.finish()?;
            return Ok(None);
        };
        let mut key = vec![0u8; key_len];
        self.read(&mut key)?;
        if self.keys > 0 && key <= self.prev {
            return Err(corrupt(&self.path, "keys out of order"));
        }
        self.prev.clear();
        self.prev.extend_from_slice(&key);
        let row_len = self
            .len(MAX_ROW_BYTES, "a row")?
            .ok_or_else(|| corrupt(&self.path, "a key without a row"))?;
        let mut row = vec![0u8; row_len];
        self.read(&mut row)?;
        let key = String::from_utf8(key).map_err(|_| corrupt(&self.path, "a key is not UTF-8"))?;
        self.keys += 1;
        Ok(Some((key, row)))
    }

    /// After the last row: the footer must match what was read.
    fn finish(&mut self) -> Result<()> {
        let mut rest = [0u8; 16];
        self.read(&mut rest)?;
        let keys = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes"));
        if &rest[8..] != END_MAGIC || keys != self.keys || keys != self.expected_keys {
            return Err(corrupt(
                &self.path,
                format!("footer says {keys} keys, {} were read", self.keys),
            ));
        }
        let stored = u32::from_le_bytes(
            read_array(&mut self.r).map_err(|_| corrupt(&self.path, "truncated"))?,
        );
        if stored != self.crc {
            return Err(corrupt(
                &self.path,
                format!(
                    "checksum mismatch (stored {stored:08x}, computed {:08x})",
                    self.crc
                ),
            ));
        }
        Ok(())
    }
}

impl Iterator for RowReader {
    type Item = Result<(String, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_row() {
            Ok(Some(row)) => Some(Ok(row)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
