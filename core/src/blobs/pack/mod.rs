//! Small blobs packed together: content of at most [`MAX_PACKED`] bytes is appended to a pack
//! file instead of getting a file of its own, so a small upload costs one write, and one fsync
//! serves every upload since the last (a group commit; with the embedded log, the very fsync
//! of the log's group commit, see [`Packs::sync`]).
//!
//! ```text
//! <blobs>/packs/<id, 16 hex>.pack   entries appended in order (entry.rs); sealed at PACK_BYTES
//! <blobs>/packs/index.redb          SHA-256 → location, and the scan checkpoint (locations.rs)
//! ```
//!
//! Invariants:
//! - an upload answers (or its event is appended) only after its entry is fsynced: a put
//!   returns a ticket, and [`Packs::sync_through`] waits until that ticket is durable;
//! - the index never names bytes that are not fsynced, and a pack's torn tail (a crash
//!   before its fsync) is cut at open;
//! - garbage collection drops the rows of unreferenced old entries, then rewrites a sealed
//!   pack whose live entries fill half of it or less: the live ones are copied to the active
//!   pack and fsynced, the index points at the copies, and only then is the old pack removed.

mod entry;
mod locations;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use locations::{Loc, Locations, Pending};

use super::disk::sync_dir;
use super::{GcStats, hex};
use crate::error::IoContext;
use crate::time::now_us;
use crate::{Error, Result};

/// Content of at most this many bytes is packed; larger content gets a file of its own.
pub const MAX_PACKED: usize = 64 << 10;
/// A pack is sealed, and a new one started, once it would grow past this.
const PACK_BYTES: u64 = 64 << 20;
/// How often written entries move into the index.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Bytes a compaction copies per hold of the active pack.
const REWRITE_BATCH: u64 = 4 << 20;
/// Open pack files kept for reads.
const READERS: usize = 256;
/// The active pack is extended with zeros this far ahead of its entries: an fdatasync of
/// bytes written inside the file's size flushes only them, while one after the file grew must
/// also write its size (measured here: two growing fdatasyncs 0.51 ms, within size 0.28 ms).
const PREALLOCATE: u64 = 1 << 20;

pub struct Packs {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    active: Mutex<Active>,
    /// The highest ticket known durable. Held while fsyncing, so concurrent syncs queue and
    /// the first one covers the others.
    synced: Mutex<u64>,
    locations: Locations,
    readers: Mutex<HashMap<u64, Arc<File>>>,
    /// Held by a collection from start to end: a periodic one and one asked for over HTTP
    /// must not rewrite the same pack.
    collecting: Mutex<()>,
    /// The embedded log runs [`Packs::sync`] before each group commit's fsync.
    log_syncs: AtomicBool,
}

/// The pack being appended to.
struct Active {
    id: u64,
    file: Arc<File>,
    len: u64,
    /// The file's size: `len` plus zeros written ahead (cut when the pack is sealed, and by
    /// the scan at open).
    allocated: u64,
    /// Tickets handed out: one per entry written.
    ticket: u64,
    /// Packs sealed since the last sync; their last entries still need an fsync.
    sealed: Vec<Arc<File>>,
    /// A pack was created since the last sync: the directory needs one too.
    dir_dirty: bool,
    /// A write or fsync failed: start a new pack before the next write.
    broken: bool,
}

fn pack_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.pack"))
}

fn pack_ids(dir: &Path) -> Result<Vec<(u64, u64)>> {
    let mut ids = Vec::new();
    for e in std::fs::read_dir(dir).ctx("list", dir)? {
        let e = e.ctx("list", dir)?;
        let name = e.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".pack"))
            .and_then(|n| u64::from_str_radix(n, 16).ok())
        else {
            continue;
        };
        ids.push((id, e.metadata().ctx("stat", &e.path())?.len()));
    }
    ids.sort_unstable();
    Ok(ids)
}

/// A SHA-256 in hex (validated by the caller) as bytes.
pub fn sha_bytes(sha256: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&sha256[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    out
}

impl Packs {
    /// Open (or create) the packs under `dir`: cut torn tails, put back in memory what the
    /// index lacks, and start the background flush.
    pub fn open(dir: &Path) -> Result<Packs> {
        std::fs::create_dir_all(dir).ctx("create", dir)?;
        let (locations, (cp_pack, cp_offset)) = Locations::open(&dir.join("index.redb"))?;
        let ids = pack_ids(dir)?;
        let mut recovered = 0usize;
        for &(id, size) in ids.iter().filter(|(id, _)| *id >= cp_pack) {
            let path = pack_path(dir, id);
            let from = if id == cp_pack { cp_offset } else { 0 };
            let (found, end) = entry::scan(&path, from.min(size), MAX_PACKED as u32)?;
            let file = File::options()
                .write(true)
                .open(&path)
                .ctx("open pack", &path)?;
            if end < size {
                // Zeros written ahead, or an entry a crash left unfinished.
                tracing::debug!(pack = %path.display(), "cut {} bytes of a pack's tail", size - end);
                file.set_len(end).ctx("truncate pack", &path)?;
            }
            file.sync_data().ctx("sync pack", &path)?;
            for s in found {
                if locations.stored(&s.sha)?.is_none() {
                    let loc = Loc {
                        pack: id,
                        offset: s.offset,
                        len: s.len,
                        written_at: s.written_at,
                    };
                    locations.note(s.sha, Pending { loc, ticket: 0 });
                    recovered += 1;
                }
            }
        }
        if recovered > 0 {
            tracing::info!(recovered, "packed blobs found past the index's checkpoint");
        }
        let id = ids.last().map_or(1, |(id, _)| *id);
        let path = pack_path(dir, id);
        let file = File::options()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .ctx("open pack", &path)?;
        // After any cut above.
        let len = file.metadata().ctx("stat pack", &path)?.len();
        if ids.is_empty() {
            sync_dir(dir)?;
        }
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            active: Mutex::new(Active {
                id,
                file: Arc::new(file),
                len,
                allocated: len,
                ticket: 0,
                sealed: Vec::new(),
                dir_dirty: false,
                broken: false,
            }),
            synced: Mutex::new(0),
            locations,
            readers: Mutex::default(),
            collecting: Mutex::default(),
            log_syncs: AtomicBool::new(false),
        });
        inner.locations.flush(0)?;
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("tidemark-pack-flush".into())
            .spawn(move || flush_while_open(weak))
            .ctx("start the pack index flush", dir)?;
        Ok(Packs { inner })
    }

    /// From now on the caller (the embedded log) runs [`Packs::sync`] before each fsync of
    /// its group commit, so [`Packs::put`]'s ticket needs no wait of its own when an append
    /// to that log follows.
    pub fn hand_sync_to_log(&self) {
        self.inner.log_syncs.store(true, Ordering::Release);
    }

    pub fn log_syncs(&self) -> bool {
        self.inner.log_syncs.load(Ordering::Acquire)
    }

    /// Store `data` named `sha` (its SHA-256): whether it was held already, and the ticket to
    /// pass to [`Packs::sync_through`] before relying on it. Content held already is touched
    /// (its time made fresh), so a collection running now keeps it.
    pub fn put(&self, sha: [u8; 32], data: &[u8]) -> Result<(bool, u64)> {
        let inner = &self.inner;
        let now = now_us();
        let mut a = inner.active.lock().unwrap();
        if let Some(p) = inner.locations.get(&sha)? {
            let loc = Loc {
                written_at: now,
                ..p.loc
            };
            inner.locations.note(sha, Pending { loc, ..p });
            return Ok((true, p.ticket));
        }
        let (loc, ticket) = inner.append(&mut a, &sha, now, data)?;
        inner.locations.note(sha, Pending { loc, ticket });
        Ok((false, ticket))
    }

    /// Wait until every entry up to `ticket` is fsynced, fsyncing if no one else is.
    /// Blocking.
    pub fn sync_through(&self, ticket: u64) -> Result<()> {
        self.inner.sync_through(ticket)
    }

    /// Fsync everything written so far. Blocking.
    pub fn sync(&self) -> Result<()> {
        let ticket = self.inner.active.lock().unwrap().ticket;
        self.inner.sync_through(ticket)
    }

    /// Whether the blob is packed here.
    pub fn holds(&self, sha: &[u8; 32]) -> Result<bool> {
        Ok(self.inner.locations.get(sha)?.is_some())
    }

    /// The blob's bytes, if it is packed. Blocking (one read of at most [`MAX_PACKED`]).
    pub fn read(&self, sha: &[u8; 32]) -> Result<Option<Bytes>> {
        // A compaction may move the entry between the lookup and the read: look again.
        for _ in 0..3 {
            let Some(p) = self.inner.locations.get(sha)? else {
                return Ok(None);
            };
            let path = pack_path(&self.inner.dir, p.loc.pack);
            let file = match self.inner.reader(p.loc.pack, &path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("open pack", &path, e)),
            };
            let mut buf = vec![0; p.loc.len as usize];
            file.read_exact_at(&mut buf, p.loc.offset)
                .ctx("read pack", &path)?;
            return Ok(Some(Bytes::from(buf)));
        }
        Err(Error::Unavailable(
            "a packed blob kept moving while it was read; retry".into(),
        ))
    }

    /// Drop the index rows of entries not in `referenced` written before `cutoff` (µs), then
    /// rewrite the packs that are half dead or more. Blocking.
    pub fn gc(&self, referenced: &HashSet<String>, cutoff: i64) -> Result<GcStats> {
        let inner = &self.inner;
        let _one_at_a_time = inner.collecting.lock().unwrap();
        let synced = *inner.synced.lock().unwrap();
        inner.locations.flush(synced)?;
        let mut stats = GcStats::default();
        let mut dead = Vec::new();
        let mut live: HashMap<u64, u64> = HashMap::new();
        inner.locations.for_each(|sha, loc| {
            if loc.written_at >= cutoff || referenced.contains(&hex(sha)) {
                stats.kept += 1;
                *live.entry(loc.pack).or_default() += entry::HEADER + loc.len as u64;
            } else {
                dead.push(*sha);
            }
        })?;
        {
            let _a = inner.active.lock().unwrap();
            let _rows = inner.locations.rows.lock().unwrap();
            let removed = inner.locations.remove_older(&dead, cutoff)?;
            stats.kept += (dead.len() - removed.len()) as u64;
            stats.removed = removed.len() as u64;
            stats.bytes_freed = removed.iter().map(|l| l.len as u64).sum();
            // What stayed (touched since the scan) is live after all.
            if removed.len() < dead.len() {
                for sha in &dead {
                    if let Some(p) = inner.locations.get(sha)? {
                        *live.entry(p.loc.pack).or_default() += entry::HEADER + p.loc.len as u64;
                    }
                }
            }
        }
        self.compact(&live, &mut stats)?;
        Ok(stats)
    }

    /// Rewrite every pack whose live bytes are half its size or less.
    fn compact(&self, live: &HashMap<u64, u64>, stats: &mut GcStats) -> Result<()> {
        let inner = &self.inner;
        let pending = inner.locations.pending_packs();
        let (active_id, active_len) = {
            let a = inner.active.lock().unwrap();
            (a.id, a.len)
        };
        let mut chosen: HashSet<u64> = HashSet::new();
        for (id, size) in pack_ids(&inner.dir)? {
            // The active pack's file runs ahead of its entries with zeros.
            let size = if id == active_id { active_len } else { size };
            let l = live.get(&id).copied().unwrap_or(0);
            if size == 0 || l * 2 > size || pending.contains(&id) {
                continue;
            }
            if id == active_id {
                // Seal it first, so it can be rewritten like any other.
                let mut a = inner.active.lock().unwrap();
                if a.id == id {
                    inner.rotate(&mut a)?;
                } else {
                    continue;
                }
            }
            chosen.insert(id);
        }
        if chosen.is_empty() {
            return Ok(());
        }
        let mut rows: HashMap<u64, Vec<([u8; 32], Loc)>> = HashMap::new();
        inner.locations.for_each(|sha, loc| {
            if chosen.contains(&loc.pack) {
                rows.entry(loc.pack).or_default().push((*sha, loc));
            }
        })?;
        for id in chosen {
            let path = pack_path(&inner.dir, id);
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let copied = self.rewrite(id, &path, rows.remove(&id).unwrap_or_default())?;
            stats.packs_compacted += 1;
            stats.pack_bytes_reclaimed += size.saturating_sub(copied);
        }
        Ok(())
    }

    /// Copy the live entries of pack `id` to the active pack, fsync, repoint the index, and
    /// remove the pack. The bytes copied.
    fn rewrite(&self, id: u64, path: &Path, rows: Vec<([u8; 32], Loc)>) -> Result<u64> {
        let inner = &self.inner;
        let mut copied = 0;
        if !rows.is_empty() {
            let src = File::open(path).ctx("open pack", path)?;
            let mut buf = Vec::new();
            let mut rows = rows.into_iter().peekable();
            // A few MiB per hold of the active pack, so uploads (and the log's group commit,
            // which syncs the packs) wait for one batch at most, not for the whole pack.
            while rows.peek().is_some() {
                let mut a = inner.active.lock().unwrap();
                let _rows = inner.locations.rows.lock().unwrap();
                let mut moves = Vec::new();
                let mut batch = 0;
                while batch < REWRITE_BATCH
                    && let Some((sha, _)) = rows.next()
                {
                    // The current row: a collection or a re-upload may have changed it.
                    let Some(cur) = inner.locations.stored(&sha)? else {
                        continue;
                    };
                    if cur.pack != id {
                        continue;
                    }
                    buf.resize(cur.len as usize, 0);
                    src.read_exact_at(&mut buf, cur.offset)
                        .ctx("read pack", path)?;
                    let (loc, _) = inner.append(&mut a, &sha, cur.written_at, &buf)?;
                    batch += entry::HEADER + cur.len as u64;
                    moves.push((sha, loc));
                }
                // Durable copies before the index names them (the old pack still serves
                // reads meanwhile).
                inner.fsync_written(&mut a)?;
                inner.locations.moved(&moves)?;
                copied += batch;
            }
        }
        inner.readers.lock().unwrap().remove(&id);
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("remove pack", path, e))
            }
            _ => Ok(copied),
        }
    }
}

impl Inner {
    /// Append one entry to the active pack (sealing it first if full); its place and ticket.
    fn append(&self, a: &mut Active, sha: &[u8; 32], at: i64, data: &[u8]) -> Result<(Loc, u64)> {
        let size = entry::HEADER + data.len() as u64;
        if a.broken || (a.len > 0 && a.len + size > PACK_BYTES) {
            self.rotate(a)?;
        }
        let bytes = entry::encode(sha, at, data);
        if a.len + size > a.allocated {
            let grow = size.max(PREALLOCATE);
            let zeros = vec![0u8; grow as usize];
            a.file
                .write_all_at(&zeros, a.allocated)
                .ctx("extend", &pack_path(&self.dir, a.id))?;
            a.allocated += grow;
        }
        if let Err(e) = a.file.write_all_at(&bytes, a.len) {
            // Zero what part of it landed; if even that fails, leave this pack.
            if a.file.write_all_at(&vec![0; bytes.len()], a.len).is_err() {
                a.broken = true;
            }
            return Err(Error::io("write", &pack_path(&self.dir, a.id), e));
        }
        let loc = Loc {
            pack: a.id,
            offset: a.len + entry::HEADER,
            len: data.len() as u32,
            written_at: at,
        };
        a.len += size;
        a.ticket += 1;
        Ok((loc, a.ticket))
    }

    /// Seal the active pack (without the zeros ahead) and start the next.
    fn rotate(&self, a: &mut Active) -> Result<()> {
        if a.allocated > a.len {
            a.file
                .set_len(a.len)
                .ctx("trim", &pack_path(&self.dir, a.id))?;
        }
        let id = a.id + 1;
        let path = pack_path(&self.dir, id);
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .ctx("create pack", &path)?;
        let old = std::mem::replace(&mut a.file, Arc::new(file));
        a.sealed.push(old);
        a.id = id;
        a.len = 0;
        a.allocated = 0;
        a.dir_dirty = true;
        a.broken = false;
        Ok(())
    }

    fn sync_through(&self, ticket: u64) -> Result<()> {
        let mut synced = self.synced.lock().unwrap();
        if *synced >= ticket {
            return Ok(());
        }
        let (target, files, dir_dirty, id) = {
            let mut a = self.active.lock().unwrap();
            let mut files = std::mem::take(&mut a.sealed);
            files.push(a.file.clone());
            (a.ticket, files, std::mem::take(&mut a.dir_dirty), a.id)
        };
        let result = files
            .iter()
            .try_for_each(|f| f.sync_data())
            .ctx("sync pack", &pack_path(&self.dir, id))
            .and_then(|()| {
                if dir_dirty {
                    sync_dir(&self.dir)
                } else {
                    Ok(())
                }
            });
        match result {
            Ok(()) => {
                *synced = target;
                Ok(())
            }
            Err(e) => {
                // Try those again next time, and write no more to a pack whose fsync failed.
                let mut a = self.active.lock().unwrap();
                let active = files.len() - 1;
                a.sealed.extend(files.into_iter().take(active));
                a.dir_dirty |= dir_dirty;
                a.broken = true;
                Err(e)
            }
        }
    }

    /// Fsync what is written, with the active pack held (a compaction's copies).
    fn fsync_written(&self, a: &mut Active) -> Result<()> {
        let path = pack_path(&self.dir, a.id);
        for f in a.sealed.iter().chain([&a.file]) {
            f.sync_data().ctx("sync pack", &path)?;
        }
        if a.dir_dirty {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn reader(&self, id: u64, path: &Path) -> std::io::Result<Arc<File>> {
        if let Some(f) = self.readers.lock().unwrap().get(&id) {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(path)?);
        let mut readers = self.readers.lock().unwrap();
        if readers.len() >= READERS {
            readers.clear();
        }
        readers.insert(id, f.clone());
        Ok(f)
    }
}

/// Move durable entries into the index every [`FLUSH_EVERY`] until the packs are closed.
fn flush_while_open(inner: Weak<Inner>) {
    loop {
        std::thread::sleep(FLUSH_EVERY);
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let synced = *inner.synced.lock().unwrap();
        if let Err(e) = inner.locations.flush(synced) {
            tracing::warn!("the blob pack index could not be updated: {e}; retrying");
        }
    }
}

#[cfg(test)]
mod tests;
