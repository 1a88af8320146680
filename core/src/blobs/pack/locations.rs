//! Where each packed blob is: a redb table `sha256 → (pack, offset, len, written_at)`, and in
//! memory only the entries not yet in it (written since the last flush, or touched by a
//! re-upload). A background flush moves entries into the table a few times a second, but only
//! entries whose pack bytes are fsynced, so the table never names bytes a crash could lose.
//!
//! The table also keeps a checkpoint: the pack position up to which every entry written is in
//! the table. At open, the packs are scanned from there on; entries found that the table lacks
//! go back into memory (the flush after a crash's last one never ran).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::{Error, Result};

/// SHA-256 (32 bytes) → [`Loc`] as (pack, offset, len, written_at).
const PACKED: TableDefinition<&[u8], (u64, u64, u32, i64)> = TableDefinition::new("packed");
/// "through" → (pack, offset): every entry before it is in `PACKED` (or was collected).
const META: TableDefinition<&str, (u64, u64)> = TableDefinition::new("meta");

/// Where a packed blob's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub pack: u64,
    /// Of the data, past the entry's header.
    pub offset: u64,
    pub len: u32,
    /// When it was written or last uploaded again (µs): what GC's grace period counts from.
    pub written_at: i64,
}

impl Loc {
    fn row(self) -> (u64, u64, u32, i64) {
        (self.pack, self.offset, self.len, self.written_at)
    }

    fn from_row(r: (u64, u64, u32, i64)) -> Loc {
        Loc {
            pack: r.0,
            offset: r.1,
            len: r.2,
            written_at: r.3,
        }
    }

    /// The position just past the entry.
    fn end(self) -> (u64, u64) {
        (self.pack, self.offset + self.len as u64)
    }
}

/// An entry not yet in the table, and the write ticket that must be fsynced before it may be
/// (0: already durable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    pub loc: Loc,
    pub ticket: u64,
}

pub struct Locations {
    db: Database,
    pending: Mutex<HashMap<[u8; 32], Pending>>,
    /// Held by whatever writes the table, so a flush never puts back a location that a
    /// compaction has just moved.
    pub rows: Mutex<()>,
}

fn ix(e: impl Into<redb::Error>) -> Error {
    Error::index("blob pack index", e)
}

impl Locations {
    /// Open (or create) the table; the checkpoint.
    pub fn open(path: &Path) -> Result<(Locations, (u64, u64))> {
        let db = redb::Builder::new()
            .set_cache_size(64 << 20)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => Error::Unavailable(format!(
                    "the blob packs at {} are in use by another Tidemark process; a content \
                     directory that holds packs belongs to one node (give nodes that share \
                     content their own directories, or an s3:// --content-store)",
                    path.parent().unwrap_or(path).display()
                )),
                e => ix(e),
            })?;
        let txn = db.begin_write().map_err(ix)?;
        let through = {
            txn.open_table(PACKED).map_err(ix)?;
            let meta = txn.open_table(META).map_err(ix)?;
            meta.get("through")
                .map_err(ix)?
                .map(|v| v.value())
                .unwrap_or((0, 0))
        };
        txn.commit().map_err(ix)?;
        let locations = Locations {
            db,
            pending: Mutex::default(),
            rows: Mutex::default(),
        };
        Ok((locations, through))
    }

    /// Where the blob is, from memory or the table, with its pending ticket (0 if durable).
    pub fn get(&self, sha: &[u8; 32]) -> Result<Option<Pending>> {
        if let Some(p) = self.pending.lock().unwrap().get(sha) {
            return Ok(Some(*p));
        }
        Ok(self.stored(sha)?.map(|loc| Pending { loc, ticket: 0 }))
    }

    /// The table's row only.
    pub fn stored(&self, sha: &[u8; 32]) -> Result<Option<Loc>> {
        let txn = self.db.begin_read().map_err(ix)?;
        let table = txn.open_table(PACKED).map_err(ix)?;
        Ok(table
            .get(sha.as_slice())
            .map_err(ix)?
            .map(|v| Loc::from_row(v.value())))
    }

    pub fn is_pending(&self, sha: &[u8; 32]) -> bool {
        self.pending.lock().unwrap().contains_key(sha)
    }

    /// Record an entry written (or a location's fresher time), to reach the table once its
    /// ticket is fsynced.
    pub fn note(&self, sha: [u8; 32], pending: Pending) {
        self.pending.lock().unwrap().insert(sha, pending);
    }

    /// Packs that hold entries not yet in the table (a compaction leaves them alone).
    pub fn pending_packs(&self) -> std::collections::HashSet<u64> {
        let pending = self.pending.lock().unwrap();
        pending.values().map(|p| p.loc.pack).collect()
    }

    /// Move every entry whose ticket is at most `synced` into the table, and advance the
    /// checkpoint past them. How many moved.
    pub fn flush(&self, synced: u64) -> Result<usize> {
        let _rows = self.rows.lock().unwrap();
        let ready: Vec<([u8; 32], Pending)> = {
            let pending = self.pending.lock().unwrap();
            pending
                .iter()
                .filter(|(_, p)| p.ticket <= synced)
                .map(|(s, p)| (*s, *p))
                .collect()
        };
        if ready.is_empty() {
            return Ok(0);
        }
        let txn = self.db.begin_write().map_err(ix)?;
        {
            let mut table = txn.open_table(PACKED).map_err(ix)?;
            let mut meta = txn.open_table(META).map_err(ix)?;
            let mut through = meta
                .get("through")
                .map_err(ix)?
                .map(|v| v.value())
                .unwrap_or((0, 0));
            for (sha, p) in &ready {
                table.insert(sha.as_slice(), p.loc.row()).map_err(ix)?;
                through = through.max(p.loc.end());
            }
            meta.insert("through", through).map_err(ix)?;
        }
        txn.commit().map_err(ix)?;
        let mut pending = self.pending.lock().unwrap();
        for (sha, p) in &ready {
            if pending.get(sha) == Some(p) {
                pending.remove(sha);
            }
        }
        Ok(ready.len())
    }

    /// Every row of the table, in SHA-256 order, to `each`.
    pub fn for_each(&self, mut each: impl FnMut(&[u8; 32], Loc)) -> Result<()> {
        let txn = self.db.begin_read().map_err(ix)?;
        let table = txn.open_table(PACKED).map_err(ix)?;
        for row in table.iter().map_err(ix)? {
            let (k, v) = row.map_err(ix)?;
            let Ok(sha) = <[u8; 32]>::try_from(k.value()) else {
                continue;
            };
            each(&sha, Loc::from_row(v.value()));
        }
        Ok(())
    }

    /// Remove the rows of `shas` whose time is still before `cutoff` and that no re-upload
    /// touched since; the locations removed. Call with [`Locations::rows`] held.
    pub fn remove_older(&self, shas: &[[u8; 32]], cutoff: i64) -> Result<Vec<Loc>> {
        let txn = self.db.begin_write().map_err(ix)?;
        let mut removed = Vec::new();
        {
            let mut table = txn.open_table(PACKED).map_err(ix)?;
            for sha in shas {
                if self.is_pending(sha) {
                    continue;
                }
                let row = table
                    .get(sha.as_slice())
                    .map_err(ix)?
                    .map(|v| Loc::from_row(v.value()));
                if let Some(loc) = row.filter(|l| l.written_at < cutoff) {
                    table.remove(sha.as_slice()).map_err(ix)?;
                    removed.push(loc);
                }
            }
        }
        txn.commit().map_err(ix)?;
        Ok(removed)
    }

    /// Point moved entries at their new places (a compaction copied them, fsynced); an entry
    /// waiting in memory follows too. Call with [`Locations::rows`] held.
    pub fn moved(&self, moves: &[([u8; 32], Loc)]) -> Result<()> {
        let txn = self.db.begin_write().map_err(ix)?;
        {
            let mut table = txn.open_table(PACKED).map_err(ix)?;
            for (sha, loc) in moves {
                table.insert(sha.as_slice(), loc.row()).map_err(ix)?;
            }
        }
        txn.commit().map_err(ix)?;
        let mut pending = self.pending.lock().unwrap();
        for (sha, loc) in moves {
            if let Some(p) = pending.get_mut(sha) {
                p.loc = Loc {
                    written_at: p.loc.written_at,
                    ..*loc
                };
            }
        }
        Ok(())
    }
}
