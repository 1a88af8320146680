//! The write-ahead file of the `always` fsync policy. A small group commit that touches
//! several partitions writes their new frames here, in one write and one fdatasync, and then
//! into the partitions' segments without an fsync each: one device flush instead of one per
//! partition (plus the content's), which is what bounds small PUTs. A large group goes to the
//! segments directly and fsyncs each, as before: its cost is bandwidth, and writing it twice
//! would double that.
//!
//! On open, the entries written since the last checkpoint are written again at their places
//! in the segments (whatever a crash kept of those writes), before the segments are scanned,
//! so every acknowledged record is there. A checkpoint (the file passed [`CHECKPOINT_BYTES`],
//! a failed write was recovered, the log closes) comes once every segment written since the
//! previous one is fsynced, and starts a new epoch: the header names it and every entry's
//! checksum covers it, so an entry of an earlier epoch further on ends the replay. The file is
//! reused, not truncated: a write within its size needs no size update in its fdatasync.
//!
//! An entry is replayed only into the newest segment of its partition: sealing a segment
//! fsyncs it, so an older one holds its records already (and compaction or retention may have
//! rewritten or removed it since).
//!
//! Layout: header = `TMWAL001` | epoch (u64 LE) | CRC32C of the 16 bytes before (u32 LE) |
//! 4 zero bytes. Entry = body length (u32 LE) | CRC32C of epoch ‖ body (u32 LE) | body; body =
//! path length (u16 LE) | the segment's path under the log directory (UTF-8) | byte position
//! in the segment (u64 LE) | the frames.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use super::partition::sync_dir;
use super::segment;
use crate::Result;
use crate::error::IoContext;

pub(super) const FILE_NAME: &str = "wal";
const MAGIC: &[u8; 8] = b"TMWAL001";
const HEADER_LEN: u64 = 24;
const ENTRY_HEADER: usize = 8;
/// Past this many bytes of entries, the next group first checkpoints.
pub(super) const CHECKPOINT_BYTES: u64 = 64 << 20;
/// Groups up to this many bytes of frames go through the file (larger ones are bound by
/// bandwidth, not flushes).
pub(super) const GROUP_BYTES: usize = 1 << 20;
/// The file grows by this much at a time, written with zeros, so most fdatasyncs fall within
/// its size.
const AHEAD: u64 = 1 << 20;

pub(super) struct Wal {
    path: PathBuf,
    file: File,
    epoch: u64,
    /// Where the next entry goes.
    cursor: u64,
    /// The file's size: entries, then zeros written ahead.
    allocated: u64,
    buf: Vec<u8>,
}

impl Wal {
    /// Open the log directory's file, replay what a previous run left in it (see the module's
    /// notes) and start a new epoch.
    pub fn open(root: &Path) -> Result<Wal> {
        let path = root.join(FILE_NAME);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .ctx("open the log's write-ahead file", &path)?;
        let size = file
            .metadata()
            .ctx("stat the log's write-ahead file", &path)?
            .len();
        let mut header = [0u8; HEADER_LEN as usize];
        if size >= HEADER_LEN {
            file.read_exact_at(&mut header, 0)
                .ctx("read the log's write-ahead file", &path)?;
        }
        let mut epoch = 0;
        if let Some(e) = parse_header(&header) {
            epoch = e;
            let replayed = replay(root, &file, &path, size, e)?;
            if replayed > 0 {
                tracing::info!(
                    entries = replayed,
                    "wrote the write-ahead file's entries into their segments again"
                );
            }
        }
        let mut wal = Wal {
            path,
            file,
            epoch,
            cursor: HEADER_LEN,
            allocated: size,
            buf: Vec::new(),
        };
        wal.checkpoint()?;
        if !existed {
            sync_dir(root)?;
        }
        Ok(wal)
    }

    /// Write one group's frames, `(segment path under the log directory, byte position, frames)`
    /// per touched partition, and make them durable.
    pub fn append<'a>(&mut self, entries: impl Iterator<Item = Entry<'a>>) -> Result<()> {
        self.buf.clear();
        let seed = crc32c::crc32c(&self.epoch.to_le_bytes());
        for (rel, position, frames) in entries {
            let start = self.buf.len();
            let body_len = 2 + rel.len() + 8 + frames.len();
            self.buf.extend_from_slice(&(body_len as u32).to_le_bytes());
            self.buf.extend_from_slice(&[0; 4]);
            self.buf
                .extend_from_slice(&(rel.len() as u16).to_le_bytes());
            self.buf.extend_from_slice(rel.as_bytes());
            self.buf.extend_from_slice(&position.to_le_bytes());
            self.buf.extend_from_slice(frames);
            let crc = crc32c::crc32c_append(seed, &self.buf[start + ENTRY_HEADER..]);
            self.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        }
        let end = self.cursor + self.buf.len() as u64;
        if end > self.allocated {
            let to = end.next_multiple_of(AHEAD) + AHEAD;
            let zeros = vec![0u8; (to - self.allocated) as usize];
            self.file
                .write_all_at(&zeros, self.allocated)
                .ctx("extend the log's write-ahead file", &self.path)?;
            self.allocated = to;
        }
        self.file
            .write_all_at(&self.buf, self.cursor)
            .ctx("write the log's write-ahead file", &self.path)?;
        self.file
            .sync_data()
            .ctx("fsync the log's write-ahead file", &self.path)?;
        self.cursor = end;
        Ok(())
    }

    /// Whether the next group should checkpoint first.
    pub fn full(&self) -> bool {
        self.cursor >= CHECKPOINT_BYTES
    }

    /// Whether entries were written since the last checkpoint.
    pub fn holds_entries(&self) -> bool {
        self.cursor > HEADER_LEN
    }

    /// Start a new epoch, forgetting every entry. Only once every segment written through the
    /// file since the last checkpoint is fsynced.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.epoch += 1;
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..16].copy_from_slice(&self.epoch.to_le_bytes());
        let crc = crc32c::crc32c(&header[..16]);
        header[16..20].copy_from_slice(&crc.to_le_bytes());
        self.file
            .write_all_at(&header, 0)
            .ctx("write the log's write-ahead file", &self.path)?;
        self.file
            .sync_data()
            .ctx("fsync the log's write-ahead file", &self.path)?;
        self.cursor = HEADER_LEN;
        self.allocated = self.allocated.max(HEADER_LEN);
        Ok(())
    }
}

fn parse_header(bytes: &[u8]) -> Option<u64> {
    let header = bytes.get(..HEADER_LEN as usize)?;
    let crc = u32::from_le_bytes(header[16..20].try_into().unwrap());
    (&header[..8] == MAGIC && crc32c::crc32c(&header[..16]) == crc)
        .then(|| u64::from_le_bytes(header[8..16].try_into().unwrap()))
}

/// An entry: the segment's path under the log directory, the byte position, the frames.
type Entry<'a> = (&'a str, u64, &'a [u8]);

/// The entry of `epoch` at `*pos` in a file of `size` bytes (read into `body`), moving `pos`
/// past it. `None` at the end: zeros, a torn write, an entry of another epoch.
fn read_entry<'b>(
    file: &File,
    size: u64,
    pos: &mut u64,
    epoch: u64,
    body: &'b mut Vec<u8>,
) -> std::io::Result<Option<Entry<'b>>> {
    let mut head = [0u8; ENTRY_HEADER];
    if *pos + ENTRY_HEADER as u64 > size {
        return Ok(None);
    }
    file.read_exact_at(&mut head, *pos)?;
    let len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().unwrap());
    let start = *pos + ENTRY_HEADER as u64;
    if len < 10 || start + len as u64 > size {
        return Ok(None);
    }
    body.resize(len, 0);
    file.read_exact_at(body, start)?;
    if crc32c::crc32c_append(crc32c::crc32c(&epoch.to_le_bytes()), body) != crc {
        return Ok(None);
    }
    *pos = start + len as u64;
    let body = &body[..];
    let path_len = u16::from_le_bytes(body[..2].try_into().unwrap()) as usize;
    let Some(rel) = body
        .get(2..2 + path_len)
        .and_then(|r| std::str::from_utf8(r).ok())
    else {
        return Ok(None);
    };
    let Some(position) = body
        .get(2 + path_len..10 + path_len)
        .map(|p| u64::from_le_bytes(p.try_into().unwrap()))
    else {
        return Ok(None);
    };
    Ok(Some((rel, position, &body[10 + path_len..])))
}

/// Write every entry of `epoch` back into its segment (if that is still its partition's
/// newest), then fsync what was written. Returns how many entries were written.
fn replay(root: &Path, wal: &File, wal_path: &Path, size: u64, epoch: u64) -> Result<usize> {
    let mut pos = HEADER_LEN;
    let mut body = Vec::new();
    let mut newest: HashMap<PathBuf, Option<u64>> = HashMap::new();
    let mut written: HashMap<PathBuf, File> = HashMap::new();
    let mut replayed = 0;
    while let Some((rel, position, frames)) = read_entry(wal, size, &mut pos, epoch, &mut body)
        .ctx("read the log's write-ahead file", wal_path)?
    {
        let rel = Path::new(rel);
        let (Some(dir), Some(base)) = (
            rel.parent(),
            rel.file_name()
                .and_then(|n| n.to_str())
                .and_then(segment::parse_log_name),
        ) else {
            continue;
        };
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            continue;
        }
        let dir = root.join(dir);
        let newest = match newest.get(&dir) {
            Some(n) => *n,
            None => {
                let n = newest_base(&dir)?;
                newest.insert(dir.clone(), n);
                n
            }
        };
        // A partition whose directory is gone, or a segment sealed since (fsynced then).
        if newest.is_none_or(|n| n > base) {
            continue;
        }
        let path = root.join(rel);
        if !written.contains_key(&path) {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .ctx("open segment to replay the write-ahead file", &path)?;
            written.insert(path.clone(), file);
        }
        written[&path]
            .write_all_at(frames, position)
            .ctx("replay the write-ahead file into segment", &path)?;
        replayed += 1;
    }
    for (path, file) in &written {
        file.sync_all().ctx("fsync segment", path)?;
    }
    Ok(replayed)
}

/// The base offset of the newest segment in a partition directory (`None` when it is gone).
fn newest_base(dir: &Path) -> Result<Option<u64>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).ctx("list partition directory", dir),
    };
    let mut newest = None;
    for entry in entries {
        let entry = entry.ctx("list partition directory", dir)?;
        if let Some(base) = entry.file_name().to_str().and_then(segment::parse_log_name) {
            newest = newest.max(Some(base));
        }
    }
    Ok(newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_an_earlier_epoch_end_the_replay() {
        let root = tempfile::tempdir().unwrap();
        let rel = "t/0/00000000000000000000.log";
        std::fs::create_dir_all(root.path().join("t/0")).unwrap();
        let segment = root.path().join(rel);
        std::fs::write(&segment, [0u8; 200]).unwrap();
        let mut wal = Wal::open(root.path()).unwrap();
        wal.append([(rel, 0, &[1u8; 50][..]), (rel, 100, &[7u8; 50][..])].into_iter())
            .unwrap();
        wal.checkpoint().unwrap();
        // As long as the first entry of the earlier epoch: the next header read is that
        // epoch's second entry, whole and with a valid checksum of its own epoch.
        wal.append(std::iter::once((rel, 0, &[2u8; 50][..])))
            .unwrap();
        drop(wal);
        std::fs::write(&segment, [0u8; 200]).unwrap();
        Wal::open(root.path()).unwrap();
        let bytes = std::fs::read(&segment).unwrap();
        assert_eq!(&bytes[..50], &[2u8; 50], "this epoch's entry is replayed");
        assert_eq!(&bytes[100..150], &[0u8; 50], "the earlier epoch's is not");
    }
}
