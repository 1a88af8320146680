//! One blob in a pack file:
//!
//! ```text
//! "TPK1"  len u32 LE  crc32c u32 LE  sha256 [32]  written_at i64 LE (µs)  data [len]
//! ```
//!
//! The CRC covers the SHA-256, the time and the data, so a torn or half-persisted tail (a
//! crash before the pack's fsync) is found when the pack is scanned at open and cut there.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::Result;
use crate::error::IoContext;

const MAGIC: &[u8; 4] = b"TPK1";
/// Bytes before an entry's data.
pub const HEADER: u64 = 4 + 4 + 4 + 32 + 8;

/// An entry's header and data, ready for one write.
pub fn encode(sha: &[u8; 32], written_at: i64, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER as usize + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc(sha, written_at, data).to_le_bytes());
    out.extend_from_slice(sha);
    out.extend_from_slice(&written_at.to_le_bytes());
    out.extend_from_slice(data);
    out
}

fn crc(sha: &[u8; 32], written_at: i64, data: &[u8]) -> u32 {
    let c = crc32c::crc32c(sha);
    let c = crc32c::crc32c_append(c, &written_at.to_le_bytes());
    crc32c::crc32c_append(c, data)
}

/// An entry found by a scan.
pub struct Scanned {
    pub sha: [u8; 32],
    pub written_at: i64,
    /// Offset of the data in the pack.
    pub offset: u64,
    pub len: u32,
}

/// Every whole, intact entry of the pack at `path` from `from` on, and the offset where they
/// end (the file's valid length: anything after it is a torn or corrupt tail).
pub fn scan(path: &Path, from: u64, max_len: u32) -> Result<(Vec<Scanned>, u64)> {
    let mut file = File::open(path).ctx("open pack", path)?;
    let size = file.metadata().ctx("stat pack", path)?.len();
    file.seek(SeekFrom::Start(from)).ctx("seek pack", path)?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut at = from;
    let mut found = Vec::new();
    let mut data = Vec::new();
    while size - at >= HEADER {
        let mut head = [0u8; HEADER as usize];
        r.read_exact(&mut head).ctx("read pack", path)?;
        let len = u32::from_le_bytes(head[4..8].try_into().unwrap());
        if &head[..4] != MAGIC || len > max_len || size - at - HEADER < len as u64 {
            break;
        }
        let want = u32::from_le_bytes(head[8..12].try_into().unwrap());
        let sha: [u8; 32] = head[12..44].try_into().unwrap();
        let written_at = i64::from_le_bytes(head[44..52].try_into().unwrap());
        data.resize(len as usize, 0);
        r.read_exact(&mut data).ctx("read pack", path)?;
        if crc(&sha, written_at, &data) != want {
            break;
        }
        found.push(Scanned {
            sha,
            written_at,
            offset: at + HEADER,
            len,
        });
        at += HEADER + len as u64;
    }
    Ok((found, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_scan_stops_at_a_torn_or_corrupt_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.pack");
        let mut f = File::create(&path).unwrap();
        f.write_all(&encode(&[1; 32], 7, b"first")).unwrap();
        f.write_all(&encode(&[2; 32], 8, b"second")).unwrap();
        let whole = f.metadata().unwrap().len();
        let (found, end) = scan(&path, 0, 100).unwrap();
        assert_eq!((found.len(), end), (2, whole));
        assert_eq!((found[1].offset, found[1].len), (2 * HEADER + 5, 6));
        // A torn tail: half of a third entry.
        f.write_all(&encode(&[3; 32], 9, b"third")[..20]).unwrap();
        assert_eq!(scan(&path, 0, 100).unwrap().1, whole);
        // A flipped byte in the second entry's data.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[(2 * HEADER + 6) as usize] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (found, end) = scan(&path, 0, 100).unwrap();
        assert_eq!((found.len(), end), (1, HEADER + 5));
        // Resuming after the first entry.
        assert_eq!(scan(&path, HEADER + 5, 100).unwrap().0.len(), 0);
    }
}
