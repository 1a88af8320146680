//! The object index: each key's current state and its history, materialized from the log into
//! redb. The applied log offset of every partition is stored in the same transaction as the
//! rows it produced, so after any crash the index resumes exactly where its last commit ended.
//!
//! The database runs in redb's single-writer mode: the server writes, and offline tools
//! (`tidemark state ls --data-dir`) read it at the same time.

mod head_rows;
mod materializer;
mod rows;

pub use head_rows::{HeadRows, head_row};
pub use materializer::Materializer;
pub use rows::{HistoryBlocks, HistoryEntry, history_body};

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use redb::{
    ConcurrencyMode, Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable,
    TableDefinition,
};

use crate::event::{Head, HeadMap, ObjectEvent, ObjectState};
use crate::log::Position;
use crate::{Error, Result};

/// `bucket/key` -> the key's head (sequence, and state unless deleted) and the log position of
/// its newest event.
const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
/// Log position of a block's first event -> a block of history entries, each with the offset
/// of the same key's previous event. Keyed by position, blocks are only ever appended (cheap
/// at any size); a key's history is the chain from its object row backwards.
const HISTORY: TableDefinition<u128, &[u8]> = TableDefinition::new("history");
/// Partition of the `objects` topic -> next offset to apply.
const APPLIED: TableDefinition<u32, u64> = TableDefinition::new("applied");

fn history_key(partition: u32, offset: u64) -> u128 {
    (u128::from(partition) << 64) | u128::from(offset)
}

/// Events read since the last commit.
#[derive(Default)]
pub struct Batch {
    /// (position, `bucket/key`, history entry body), in log order within each partition.
    events: Vec<(Position, String, Vec<u8>)>,
    /// The newest head of each key in the batch and where its event is.
    heads: HeadMap<(Head, Position)>,
    applied: BTreeMap<u32, u64>,
    records: usize,
}

impl Batch {
    /// Fold in `event`, read from `partition` at `offset`.
    pub fn add(&mut self, partition: u32, offset: u64, event: ObjectEvent) {
        self.applied.insert(partition, offset + 1);
        self.records += 1;
        if !event.event_type.mutates_object() {
            return;
        }
        let key = event.log_key();
        let at = Position { partition, offset };
        self.events
            .push((at, key.clone(), history_body(&event.summary())));
        self.heads.insert(key, (event.into_head(), at));
    }

    /// Record progress through records that are not events of this index.
    pub fn skip(&mut self, partition: u32, offset: u64) {
        self.applied.insert(partition, offset + 1);
    }

    /// Records read into this batch.
    pub fn len(&self) -> usize {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.applied.is_empty()
    }
}

/// Positions only grow, so these inserts append at the end of the tree.
fn insert_blocks(
    history: &mut redb::Table<u128, &[u8]>,
    blocks: Vec<(Position, Vec<u8>)>,
) -> Result<()> {
    for (first, block) in blocks {
        history
            .insert(history_key(first.partition, first.offset), block.as_slice())
            .map_err(|e| Error::index("write history", e))?;
    }
    Ok(())
}

/// Sorted, so each page is touched once, in order.
fn insert_heads(
    objects: &mut redb::Table<&str, &[u8]>,
    mut heads: Vec<(String, (Head, Position))>,
) -> Result<()> {
    heads.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut row = Vec::with_capacity(256);
    for (key, (head, last)) in &heads {
        row.clear();
        rows::encode_head(head, *last, &mut row);
        objects
            .insert(key.as_str(), row.as_slice())
            .map_err(|e| Error::index("write object", e))?;
    }
    Ok(())
}

fn insert_applied(applied: &mut redb::Table<u32, u64>, next: &BTreeMap<u32, u64>) -> Result<()> {
    for (p, n) in next {
        applied
            .insert(*p, *n)
            .map_err(|e| Error::index("write applied offset", e))?;
    }
    Ok(())
}

/// The heads of the keys `wanted` keeps; only those rows are decoded.
fn read_heads(txn: &ReadTransaction, wanted: impl Fn(&str) -> bool) -> Result<HeadMap<Head>> {
    let table = txn
        .open_table(OBJECTS)
        .map_err(|e| Error::index("open objects", e))?;
    let mut heads = HeadMap::default();
    for row in table.iter().map_err(|e| Error::index("read objects", e))? {
        let (k, v) = row.map_err(|e| Error::index("read objects", e))?;
        if wanted(k.value()) {
            heads.insert(k.value().to_string(), rows::decode_head(v.value())?.0);
        }
    }
    Ok(heads)
}

fn read_applied(txn: &ReadTransaction) -> Result<BTreeMap<u32, u64>> {
    let table = txn
        .open_table(APPLIED)
        .map_err(|e| Error::index("open applied", e))?;
    let mut out = BTreeMap::new();
    for row in table.iter().map_err(|e| Error::index("read applied", e))? {
        let (k, v) = row.map_err(|e| Error::index("read applied", e))?;
        out.insert(k.value(), v.value());
    }
    Ok(out)
}

enum Db {
    Write(Database),
    Read(ReadOnlyDatabase),
    /// Being reopened after a failed commit.
    Closed,
}

pub struct ObjectIndex {
    /// Swapped for a fresh handle by [`ObjectIndex::reopen`]: after a failed commit (a full
    /// disk), redb refuses everything until the database is closed and opened again.
    db: std::sync::RwLock<Db>,
    path: std::path::PathBuf,
    cache_bytes: usize,
    mode: ConcurrencyMode,
    /// A private index being rebuilt: nobody reads it until it is complete, and a crash
    /// discards it, so its commits skip redb's quick-repair bookkeeping.
    scratch: bool,
    /// Why the last commit failed, until one succeeds (`/readyz` shows it).
    failure: std::sync::Mutex<Option<String>>,
}

/// One object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub bucket: String,
    pub key: String,
    pub state: ObjectState,
}

/// Whether `e` has a full disk (or quota) somewhere in its causes.
fn is_storage_full(e: &Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        {
            return true;
        }
        cause = c.source();
    }
    // redb reports some I/O failures as text only.
    let text = e.to_string();
    text.contains("No space left on device") || text.contains("os error 28")
}

/// redb's page cache unless told otherwise (its own default is 1 GiB).
const DEFAULT_CACHE: usize = 256 << 20;
/// Page cache of a scratch index (a rebuild's, a state at an instant).
const SCRATCH_CACHE: usize = 32 << 20;

fn split_log_key(k: &str) -> (&str, &str) {
    k.split_once('/').unwrap_or((k, ""))
}

impl ObjectIndex {
    /// Open or create the index for writing (redb's default page cache).
    pub fn open(path: &Path) -> Result<ObjectIndex> {
        Self::open_mode(path, ConcurrencyMode::SingleWriter, false, DEFAULT_CACHE)
    }

    /// Open or create the index for writing, caching at most `cache_bytes` of its pages.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<ObjectIndex> {
        Self::open_mode(path, ConcurrencyMode::SingleWriter, false, cache_bytes)
    }

    /// Create a private index to rebuild into (see `scratch`); it is complete once
    /// [`Self::put_heads`] returns.
    pub fn create_scratch(path: &Path) -> Result<ObjectIndex> {
        // Written once in key order and read by one job: a small cache does.
        Self::open_mode(path, ConcurrencyMode::ExclusiveWriter, true, SCRATCH_CACHE)
    }

    fn open_mode(
        path: &Path,
        mode: ConcurrencyMode,
        scratch: bool,
        cache_bytes: usize,
    ) -> Result<ObjectIndex> {
        let db = Self::open_db(path, mode, cache_bytes)?;
        Ok(ObjectIndex {
            db: std::sync::RwLock::new(Db::Write(db)),
            path: path.to_path_buf(),
            cache_bytes,
            mode,
            scratch,
            failure: Default::default(),
        })
    }

    fn open_db(path: &Path, mode: ConcurrencyMode, cache_bytes: usize) -> Result<Database> {
        let db = redb::Builder::new()
            .set_concurrency_mode(mode)
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => Error::Unavailable(format!(
                    "index {} is open in another process; stop it first",
                    path.display()
                )),
                e => Error::index("open", e),
            })?;
        let txn = db.begin_write().map_err(|e| Error::index("open", e))?;
        txn.open_table(OBJECTS)
            .map_err(|e| Error::index("create table", e))?;
        txn.open_table(HISTORY)
            .map_err(|e| Error::index("create table", e))?;
        txn.open_table(APPLIED)
            .map_err(|e| Error::index("create table", e))?;
        txn.commit().map_err(|e| Error::index("create tables", e))?;
        Ok(db)
    }

    /// Close the database and open it again (redb then recovers the last commit), for after a
    /// failed commit. Readers in progress keep the old handle until they finish, so this
    /// retries for a few seconds while the file is still held.
    pub fn reopen(&self) -> Result<()> {
        let mut db = self.db.write().unwrap();
        if !matches!(*db, Db::Write(_)) && !matches!(*db, Db::Closed) {
            return Ok(()); // read-only handles are never reopened
        }
        *db = Db::Closed;
        let mut tries = 0;
        loop {
            match Self::open_db(&self.path, self.mode, self.cache_bytes) {
                Ok(fresh) => {
                    *db = Db::Write(fresh);
                    tracing::info!("reopened the index {}", self.path.display());
                    return Ok(());
                }
                Err(Error::Unavailable(_)) if tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Why the last commit failed (no space, an I/O error), until one succeeds.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap().clone()
    }

    /// Open an existing index for reading, even while a server writes it.
    pub fn open_read_only(path: &Path) -> Result<ObjectIndex> {
        if !path.exists() {
            return Err(Error::NotFound(format!(
                "no index at {}: is --data-dir right? (`tidemark serve` or `tidemark state rebuild` creates it)",
                path.display()
            )));
        }
        let db = redb::Builder::new()
            .set_concurrency_mode(ConcurrencyMode::SingleWriter)
            .set_cache_size(DEFAULT_CACHE)
            .open_read_only(path)
            .map_err(|e| Error::index("open read-only", e))?;
        Ok(ObjectIndex {
            db: std::sync::RwLock::new(Db::Read(db)),
            path: path.to_path_buf(),
            cache_bytes: DEFAULT_CACHE,
            mode: ConcurrencyMode::SingleWriter,
            scratch: false,
            failure: Default::default(),
        })
    }

    fn read(&self) -> Result<ReadTransaction> {
        match &*self.db.read().unwrap() {
            Db::Write(db) => db.begin_read(),
            Db::Read(db) => db.begin_read(),
            Db::Closed => return Err(Error::Unavailable("the index is being reopened".into())),
        }
        .map_err(|e| Error::index("begin read", e))
    }

    /// Commit a batch: rows and applied offsets in one durable transaction. A failure for lack
    /// of space is [`Error::StorageFull`], naming the index's file; [`ObjectIndex::failure`]
    /// says why until a commit succeeds.
    pub fn commit(&self, batch: Batch) -> Result<()> {
        match self.commit_batch(batch) {
            Ok(()) => {
                self.failure.lock().unwrap().take();
                Ok(())
            }
            Err(e) => {
                let e = match is_storage_full(&e) {
                    true => Error::StorageFull(format!(
                        "no space left on the disk of the index ({}): {e}; free space there \
                         and it catches up on its own",
                        self.path.display()
                    )),
                    false => e,
                };
                *self.failure.lock().unwrap() = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn commit_batch(&self, batch: Batch) -> Result<()> {
        let txn = self.begin_write()?;
        {
            let mut objects = txn
                .open_table(OBJECTS)
                .map_err(|e| Error::index("open objects", e))?;
            let mut history = txn
                .open_table(HISTORY)
                .map_err(|e| Error::index("open history", e))?;
            let mut applied = txn
                .open_table(APPLIED)
                .map_err(|e| Error::index("open applied", e))?;
            // Write the heads first, in key order: each insert hands back the row it replaced,
            // whose position is the key's newest event before this batch, so every key is
            // looked up once, in page order.
            let mut heads: Vec<_> = batch.heads.into_iter().collect();
            heads.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let mut before: HashMap<&str, u64, foldhash::fast::RandomState> =
                HashMap::with_capacity_and_hasher(heads.len(), Default::default());
            let mut row = Vec::with_capacity(256);
            for (key, (head, last)) in &heads {
                row.clear();
                rows::encode_head(head, *last, &mut row);
                let old = objects
                    .insert(key.as_str(), row.as_slice())
                    .map_err(|e| Error::index("write object", e))?;
                if let Some(old) = old {
                    before.insert(key.as_str(), rows::decode_position(old.value())?.offset);
                }
            }
            // Link each event to its key's previous one: earlier in this batch, or the newest
            // event before it.
            let mut newest: HashMap<&str, u64, foldhash::fast::RandomState> =
                HashMap::with_capacity_and_hasher(heads.len(), Default::default());
            let mut events: Vec<_> = batch.events.iter().collect();
            events.sort_by_key(|(at, _, _)| (at.partition, at.offset));
            let mut blocks = HistoryBlocks::default();
            for (at, key, body) in events {
                let prev = newest
                    .get(key.as_str())
                    .or_else(|| before.get(key.as_str()))
                    .copied();
                blocks.push_encoded(*at, prev, body);
                newest.insert(key.as_str(), at.offset);
            }
            insert_blocks(&mut history, blocks.finish())?;
            insert_applied(&mut applied, &batch.applied)?;
        }
        txn.commit().map_err(|e| Error::index("commit", e))
    }

    /// Rebuild path: append finished history blocks, in position order.
    pub fn append_history(&self, blocks: Vec<(Position, Vec<u8>)>) -> Result<()> {
        let txn = self.begin_write()?;
        {
            let mut history = txn
                .open_table(HISTORY)
                .map_err(|e| Error::index("open history", e))?;
            insert_blocks(&mut history, blocks)?;
        }
        txn.commit().map_err(|e| Error::index("commit", e))
    }

    /// Rebuild path: write final heads, and the applied offsets, in one commit.
    pub fn put_heads(
        &self,
        heads: Vec<(String, (Head, Position))>,
        next: &BTreeMap<u32, u64>,
    ) -> Result<()> {
        let txn = self.begin_write()?;
        {
            let mut objects = txn
                .open_table(OBJECTS)
                .map_err(|e| Error::index("open objects", e))?;
            let mut applied = txn
                .open_table(APPLIED)
                .map_err(|e| Error::index("open applied", e))?;
            insert_heads(&mut objects, heads)?;
            insert_applied(&mut applied, next)?;
        }
        txn.commit().map_err(|e| Error::index("commit", e))
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction> {
        let db = self.db.read().unwrap();
        let Db::Write(db) = &*db else {
            return Err(Error::BadInput(
                "the index is open read-only (or being reopened)".into(),
            ));
        };
        let mut txn = db
            .begin_write()
            .map_err(|e| Error::index("begin write", e))?;
        // Crash recovery then takes no full scan of the file (a scratch index is discarded).
        txn.set_quick_repair(!self.scratch);
        Ok(txn)
    }

    /// Next offset to apply, per partition.
    pub fn applied(&self) -> Result<BTreeMap<u32, u64>> {
        read_applied(&self.read()?)
    }

    /// Every key's head (including deleted keys, which keep their sequence), and the offsets
    /// they are complete up to, from one snapshot.
    pub fn heads_and_applied(&self) -> Result<(HeadMap<Head>, BTreeMap<u32, u64>)> {
        let txn = self.read()?;
        Ok((read_heads(&txn, |_| true)?, read_applied(&txn)?))
    }

    /// The heads of the keys of one partition (of `partitions`) of `objects`.
    pub fn heads_of_partition(&self, partition: u32, partitions: u32) -> Result<HeadMap<Head>> {
        read_heads(&self.read()?, |k| {
            crate::log::partition_for(k.as_bytes(), partitions) == partition
        })
    }

    /// Every live object whose log key falls in `partition` (of `partitions`), in key order,
    /// from one consistent view of the index, handed to `each` in chunks of at most `chunk`
    /// (`each` returns false to stop). Returns the next offset of `partition` that view has
    /// not applied: the objects are the state just before it.
    pub fn scan_live(
        &self,
        partition: u32,
        partitions: u32,
        chunk: usize,
        mut each: impl FnMut(Vec<(String, Head, Position)>) -> bool,
    ) -> Result<u64> {
        let txn = self.read()?;
        let applied = read_applied(&txn)?.get(&partition).copied().unwrap_or(0);
        let table = txn
            .open_table(OBJECTS)
            .map_err(|e| Error::index("open objects", e))?;
        let mut out = Vec::with_capacity(chunk.min(4096));
        for row in table.iter().map_err(|e| Error::index("scan objects", e))? {
            let (k, v) = row.map_err(|e| Error::index("scan objects", e))?;
            let k = k.value();
            if crate::log::partition_for(k.as_bytes(), partitions) != partition {
                continue;
            }
            let (head, at) = rows::decode_head(v.value())?;
            if head.state.is_none() {
                continue;
            }
            out.push((k.to_string(), head, at));
            if out.len() >= chunk && !each(std::mem::take(&mut out)) {
                return Ok(applied);
            }
        }
        if !out.is_empty() {
            each(out);
        }
        Ok(applied)
    }

    /// The heads of `keys` (log keys, `bucket/key`), read in one transaction.
    pub fn heads_of(&self, keys: &[String]) -> Result<Vec<Option<Head>>> {
        let txn = self.read()?;
        let table = txn
            .open_table(OBJECTS)
            .map_err(|e| Error::index("open objects", e))?;
        keys.iter()
            .map(|k| {
                match table
                    .get(k.as_str())
                    .map_err(|e| Error::index("read object", e))?
                {
                    Some(v) => Ok(Some(rows::decode_head(v.value())?.0)),
                    None => Ok(None),
                }
            })
            .collect()
    }

    pub fn get(&self, bucket: &str, key: &str) -> Result<Option<Head>> {
        let txn = self.read()?;
        let table = txn
            .open_table(OBJECTS)
            .map_err(|e| Error::index("open objects", e))?;
        let k = crate::event::log_key(bucket, key);
        match table
            .get(k.as_str())
            .map_err(|e| Error::index("read object", e))?
        {
            Some(v) => Ok(Some(rows::decode_head(v.value())?.0)),
            None => Ok(None),
        }
    }

    /// A key's history, oldest first (empty for a key never seen).
    pub fn history(&self, bucket: &str, key: &str) -> Result<Vec<HistoryEntry>> {
        Ok(self
            .history_at(bucket, key)?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    /// [`Self::history`] with where each event is in the log (to read an old version's event).
    pub fn history_at(&self, bucket: &str, key: &str) -> Result<Vec<(Position, HistoryEntry)>> {
        let txn = self.read()?;
        let objects = txn
            .open_table(OBJECTS)
            .map_err(|e| Error::index("open objects", e))?;
        let history = txn
            .open_table(HISTORY)
            .map_err(|e| Error::index("open history", e))?;
        let k = crate::event::log_key(bucket, key);
        let Some(row) = objects
            .get(k.as_str())
            .map_err(|e| Error::index("read object", e))?
        else {
            return Ok(Vec::new());
        };
        let last = rows::decode_head(row.value())?.1;
        let mut out = Vec::new();
        // Walk the chain back; consecutive entries often share a block, decoded once.
        let mut block: Vec<(u64, Option<u64>, HistoryEntry)> = Vec::new();
        let mut at = Some(last.offset);
        while let Some(offset) = at {
            if !block
                .first()
                .is_some_and(|b| b.0 <= offset && block.last().is_some_and(|l| offset <= l.0))
            {
                let found = history
                    .range(..=history_key(last.partition, offset))
                    .map_err(|e| Error::index("read history", e))?
                    .next_back()
                    .transpose()
                    .map_err(|e| Error::index("read history", e))?;
                block = match found {
                    Some((_, v)) => rows::decode_history_block(v.value())?,
                    None => Vec::new(),
                };
            }
            let i = block.binary_search_by_key(&offset, |e| e.0).map_err(|_| {
                Error::Corrupt(format!("index history of {k} breaks at offset {offset}"))
            })?;
            at = block[i].1;
            // The chain goes strictly back in the log; anything else is damage, reported
            // instead of walked forever.
            if at.is_some_and(|prev| prev >= offset) {
                return Err(Error::Corrupt(format!(
                    "index history of {k} loops at offset {offset}; rebuild the index (tidemark state rebuild)"
                )));
            }
            let at_log = Position {
                partition: last.partition,
                offset,
            };
            out.push((at_log, block[i].2.clone()));
        }
        out.reverse();
        Ok(out)
    }

    /// Keys of `bucket` starting with `prefix`, in order, after `after`, at most `limit` —
    /// deleted keys included, since their history (versions, delete markers) remains.
    pub fn keys(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let txn = self.read()?;
        let table = txn
            .open_table(OBJECTS)
            .map_err(|e| Error::index("open objects", e))?;
        let scope = crate::event::log_key(bucket, prefix);
        let after = after.map(|a| crate::event::log_key(bucket, a));
        let start = match &after {
            Some(a) if *a > scope => a.clone(),
            _ => scope.clone(),
        };
        let mut out = Vec::new();
        for row in table
            .range(start.as_str()..)
            .map_err(|e| Error::index("list keys", e))?
        {
            let (k, _) = row.map_err(|e| Error::index("list keys", e))?;
            let k = k.value();
            if !k.starts_with(&scope) || out.len() >= limit {
                break;
            }
            if after.as_deref() != Some(k) {
                out.push(split_log_key(k).1.to_string());
            }
        }
        Ok(out)
    }

    /// Existing objects in key order: in `bucket` (all buckets if `None`) whose key starts with
    /// `prefix`, after key `after`, at most `limit`.
    pub fn list(
        &self,
        bucket: Option<&str>,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>> {
        let txn = self.read()?;
        let table = txn
            .open_table(OBJECTS)
            .map_err(|e| Error::index("open objects", e))?;
        let scope = bucket
            .map(|b| crate::event::log_key(b, prefix))
            .unwrap_or_default();
        // Resume strictly after `after` (a key within the bucket, or a `bucket/key` across all).
        let after = match (bucket, after) {
            (Some(b), Some(a)) if a >= prefix => Some(crate::event::log_key(b, a)),
            (None, Some(a)) => Some(a.to_string()),
            _ => None,
        };
        let start = after.clone().unwrap_or_else(|| scope.clone());
        let mut out = Vec::new();
        for row in table
            .range(start.as_str()..)
            .map_err(|e| Error::index("list objects", e))?
        {
            let (k, v) = row.map_err(|e| Error::index("list objects", e))?;
            let k = k.value();
            if !k.starts_with(&scope) {
                break;
            }
            if after.as_deref() == Some(k) {
                continue;
            }
            if let Some(state) = rows::decode_head(v.value())?.0.state {
                let (b, key) = split_log_key(k);
                out.push(Listed {
                    bucket: b.to_string(),
                    key: key.to_string(),
                    state,
                });
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
