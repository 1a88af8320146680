//! The object index: each key's current state and its history, materialized from the log into
//! redb. The applied log offset of every partition is stored in the same transaction as the
//! rows it produced, so after any crash the index resumes exactly where its last commit ended.
//!
//! The database runs in redb's single-writer mode: the server writes, and offline tools
//! (`tidemark state ls --data-dir`) read it at the same time.

mod materializer;
mod rows;

pub use materializer::Materializer;
pub use rows::HistoryEntry;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use redb::{
    ConcurrencyMode, Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable,
    TableDefinition,
};

use crate::event::{Head, ObjectEvent, ObjectState};
use crate::{Error, Result};

/// `bucket/key` -> the key's head (sequence, and state unless deleted).
const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
/// (`bucket/key`, sequence) -> history entry.
const HISTORY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("history");
/// Partition of the `objects` topic -> next offset to apply.
const APPLIED: TableDefinition<u32, u64> = TableDefinition::new("applied");

/// Events applied since the last commit, folded so each key is written once per commit.
#[derive(Default)]
pub struct Batch {
    heads: HashMap<String, Head>,
    history: Vec<((String, u64), Vec<u8>)>,
    applied: BTreeMap<u32, u64>,
    events: usize,
}

impl Batch {
    /// Fold in `event`, read from `partition` at `offset`.
    pub fn add(&mut self, partition: u32, offset: u64, event: &ObjectEvent) {
        self.applied.insert(partition, offset + 1);
        self.events += 1;
        if !event.event_type.mutates_object() {
            return;
        }
        let key = event.log_key();
        let mut row = Vec::with_capacity(64);
        rows::encode_history(event, &mut row);
        self.history.push(((key.clone(), event.sequence as u64), row));
        self.heads.insert(key, event.head());
    }

    /// Record progress through records that are not events of this index.
    pub fn skip(&mut self, partition: u32, offset: u64) {
        self.applied.insert(partition, offset + 1);
    }

    pub fn len(&self) -> usize {
        self.events
    }

    pub fn is_empty(&self) -> bool {
        self.applied.is_empty()
    }
}

enum Db {
    Write(Database),
    Read(ReadOnlyDatabase),
}

pub struct ObjectIndex {
    db: Db,
    path: PathBuf,
}

/// One object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub bucket: String,
    pub key: String,
    pub state: ObjectState,
}

fn split_log_key(k: &str) -> (&str, &str) {
    k.split_once('/').unwrap_or((k, ""))
}

impl ObjectIndex {
    /// Open or create the index for writing.
    pub fn open(path: &Path) -> Result<ObjectIndex> {
        let db = redb::Builder::new()
            .set_concurrency_mode(ConcurrencyMode::SingleWriter)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => Error::Unavailable(format!(
                    "index {} is open in another process; stop it first",
                    path.display()
                )),
                e => Error::index("open", e),
            })?;
        let txn = db.begin_write().map_err(|e| Error::index("open", e))?;
        txn.open_table(OBJECTS).map_err(|e| Error::index("create table", e))?;
        txn.open_table(HISTORY).map_err(|e| Error::index("create table", e))?;
        txn.open_table(APPLIED).map_err(|e| Error::index("create table", e))?;
        txn.commit().map_err(|e| Error::index("create tables", e))?;
        Ok(ObjectIndex { db: Db::Write(db), path: path.to_path_buf() })
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
            .open_read_only(path)
            .map_err(|e| Error::index("open read-only", e))?;
        Ok(ObjectIndex { db: Db::Read(db), path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<ReadTransaction> {
        match &self.db {
            Db::Write(db) => db.begin_read(),
            Db::Read(db) => db.begin_read(),
        }
        .map_err(|e| Error::index("begin read", e))
    }

    /// Commit a batch: rows and applied offsets in one durable transaction.
    pub fn commit(&self, batch: Batch) -> Result<()> {
        let Db::Write(db) = &self.db else {
            return Err(Error::BadInput("the index is open read-only".into()));
        };
        let mut txn = db.begin_write().map_err(|e| Error::index("begin write", e))?;
        // Crash recovery then takes no full scan of the file.
        txn.set_quick_repair(true);
        {
            let mut objects = txn.open_table(OBJECTS).map_err(|e| Error::index("open objects", e))?;
            let mut history = txn.open_table(HISTORY).map_err(|e| Error::index("open history", e))?;
            let mut applied = txn.open_table(APPLIED).map_err(|e| Error::index("open applied", e))?;
            for ((key, seq), row) in &batch.history {
                history
                    .insert((key.as_str(), *seq), row.as_slice())
                    .map_err(|e| Error::index("write history", e))?;
            }
            let mut row = Vec::with_capacity(256);
            for (key, head) in &batch.heads {
                row.clear();
                rows::encode_head(head, &mut row);
                objects.insert(key.as_str(), row.as_slice()).map_err(|e| Error::index("write object", e))?;
            }
            for (p, next) in &batch.applied {
                applied.insert(*p, *next).map_err(|e| Error::index("write applied offset", e))?;
            }
        }
        txn.commit().map_err(|e| Error::index("commit", e))
    }

    /// Next offset to apply, per partition.
    pub fn applied(&self) -> Result<BTreeMap<u32, u64>> {
        let txn = self.read()?;
        let table = txn.open_table(APPLIED).map_err(|e| Error::index("open applied", e))?;
        let mut out = BTreeMap::new();
        for row in table.iter().map_err(|e| Error::index("read applied", e))? {
            let (k, v) = row.map_err(|e| Error::index("read applied", e))?;
            out.insert(k.value(), v.value());
        }
        Ok(out)
    }

    /// Every key's head (including deleted keys, which keep their sequence).
    pub fn heads(&self) -> Result<HashMap<String, Head>> {
        let txn = self.read()?;
        let table = txn.open_table(OBJECTS).map_err(|e| Error::index("open objects", e))?;
        let mut out = HashMap::new();
        for row in table.iter().map_err(|e| Error::index("read objects", e))? {
            let (k, v) = row.map_err(|e| Error::index("read objects", e))?;
            out.insert(k.value().to_string(), rows::decode_head(v.value())?);
        }
        Ok(out)
    }

    pub fn get(&self, bucket: &str, key: &str) -> Result<Option<Head>> {
        let txn = self.read()?;
        let table = txn.open_table(OBJECTS).map_err(|e| Error::index("open objects", e))?;
        let k = crate::event::log_key(bucket, key);
        match table.get(k.as_str()).map_err(|e| Error::index("read object", e))? {
            Some(v) => Ok(Some(rows::decode_head(v.value())?)),
            None => Ok(None),
        }
    }

    pub fn history(&self, bucket: &str, key: &str) -> Result<Vec<HistoryEntry>> {
        let txn = self.read()?;
        let table = txn.open_table(HISTORY).map_err(|e| Error::index("open history", e))?;
        let k = crate::event::log_key(bucket, key);
        let mut out = Vec::new();
        let range = table
            .range((k.as_str(), 0u64)..=(k.as_str(), u64::MAX))
            .map_err(|e| Error::index("read history", e))?;
        for row in range {
            let (k, v) = row.map_err(|e| Error::index("read history", e))?;
            out.push(rows::decode_history(k.value().1, v.value())?);
        }
        Ok(out)
    }

    /// Existing objects in key order: in `bucket` (all buckets if `None`) whose key starts with
    /// `prefix`, after key `after`, at most `limit`.
    pub fn list(&self, bucket: Option<&str>, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<Listed>> {
        let txn = self.read()?;
        let table = txn.open_table(OBJECTS).map_err(|e| Error::index("open objects", e))?;
        let scope = bucket.map(|b| crate::event::log_key(b, prefix)).unwrap_or_default();
        // Resume strictly after `after` (a key within the bucket, or a `bucket/key` across all).
        let after = match (bucket, after) {
            (Some(b), Some(a)) if a >= prefix => Some(crate::event::log_key(b, a)),
            (None, Some(a)) => Some(a.to_string()),
            _ => None,
        };
        let start = after.clone().unwrap_or_else(|| scope.clone());
        let mut out = Vec::new();
        for row in table.range(start.as_str()..).map_err(|e| Error::index("list objects", e))? {
            let (k, v) = row.map_err(|e| Error::index("list objects", e))?;
            let k = k.value();
            if !k.starts_with(&scope) {
                break;
            }
            if after.as_deref() == Some(k) {
                continue;
            }
            if let Some(state) = rows::decode_head(v.value())?.state {
                let (b, key) = split_log_key(k);
                out.push(Listed { bucket: b.to_string(), key: key.to_string(), state });
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
