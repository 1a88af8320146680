//! Heads as stored: every key's object row, byte for byte, with the applied offsets it is
//! complete up to. Index snapshots are made of these rows and loaded back from them without
//! decoding a single one.

use std::collections::BTreeMap;

use redb::{ReadTransaction, ReadableTable};

use super::{APPLIED, OBJECTS, ObjectIndex, insert_applied, read_applied, rows};
use crate::event::Head;
use crate::log::Position;
use crate::{Error, Result};

/// Rows per commit while loading: bounds what a write transaction holds in memory.
const LOAD_CHUNK: usize = 100_000;

/// The object row of a key whose newest event, at `last`, left `head`.
pub fn head_row(head: &Head, last: Position) -> Vec<u8> {
    let mut row = Vec::with_capacity(192);
    rows::encode_head(head, last, &mut row);
    row
}

/// One read transaction of the index: its heads and applied offsets agree with each other
/// however far the materializer has moved on since it began.
pub struct HeadRows {
    txn: ReadTransaction,
}

impl HeadRows {
    /// Next offset to apply, per partition, as of this transaction.
    pub fn applied(&self) -> Result<BTreeMap<u32, u64>> {
        read_applied(&self.txn)
    }

    /// Call `row(key, raw head row)` for every key (deleted ones too: they keep their
    /// sequence), in key order; returns how many there were.
    pub fn for_each(&self, mut row: impl FnMut(&str, &[u8]) -> Result<()>) -> Result<u64> {
        let table = self
            .txn
            .open_table(OBJECTS)
            .map_err(|e| Error::index("open objects", e))?;
        let mut n = 0;
        for entry in table.iter().map_err(|e| Error::index("read objects", e))? {
            let (k, v) = entry.map_err(|e| Error::index("read objects", e))?;
            row(k.value(), v.value())?;
            n += 1;
        }
        Ok(n)
    }
}

impl ObjectIndex {
    /// The heads and applied offsets of one moment of the index, for an index snapshot.
    pub fn head_rows(&self) -> Result<HeadRows> {
        Ok(HeadRows { txn: self.read()? })
    }

    /// Scratch index: insert head rows as [`HeadRows::for_each`] gave them (in key order, so
    /// each page is written once, and no key twice) and the applied offsets they are complete
    /// up to. Returns the rows inserted. Only the last commit waits for the disk: a scratch
    /// index is thrown away if anything fails before it is complete.
    pub fn load_head_rows(
        &self,
        applied: &BTreeMap<u32, u64>,
        rows: impl Iterator<Item = Result<(String, Vec<u8>)>>,
    ) -> Result<u64> {
        if !self.scratch {
            return Err(Error::BadInput(
                "head rows are only loaded into a scratch index".into(),
            ));
        }
        let mut rows = rows.peekable();
        let mut loaded = 0u64;
        let mut first = true;
        loop {
            let txn = self.begin_write()?;
            {
                let mut objects = txn
                    .open_table(OBJECTS)
                    .map_err(|e| Error::index("open objects", e))?;
                if first {
                    let mut table = txn
                        .open_table(APPLIED)
                        .map_err(|e| Error::index("open applied", e))?;
                    insert_applied(&mut table, applied)?;
                }
                for row in rows.by_ref().take(LOAD_CHUNK) {
                    let (key, raw) = row?;
                    rows::check_format(&raw, "object")?;
                    objects
                        .insert(key.as_str(), raw.as_slice())
                        .map_err(|e| Error::index("write object", e))?;
                    loaded += 1;
                }
            }
            first = false;
            let done = rows.peek().is_none();
            // Every chunk is committed durably: redb keeps the pages of non-durable commits in
            // memory until a durable one, which would hold the whole load.
            txn.commit().map_err(|e| Error::index("commit", e))?;
            if done {
                return Ok(loaded);
            }
        }
    }
}
