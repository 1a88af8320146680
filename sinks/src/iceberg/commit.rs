//! Committing data files to a table exactly once.
//!
//! One committer per table: partition workers queue their files with the log position they
//! cover, and whoever holds the commit lock commits everything queued in one snapshot (a
//! group commit), so a table gets one snapshot per round, not one per partition.
//!
//! Every snapshot Tidemark commits records, in its summary, a commit id
//! (`tidemark.commit-id`) and, for every log partition, the offset after the last event the
//! table holds (`tidemark.offsets.<partition>`, carried forward from the snapshot before).
//! Before committing, the committer reads those offsets from the current snapshot (or the
//! newest ancestor Tidemark committed, if some other tool committed since) and leaves out
//! what is covered already, so a retry after an ambiguous failure that did land counts as
//! success. A worker moves the subscription's position only after the commit, and on start
//! skips what the table already covers: a crash at any point neither loses nor repeats rows.

use std::collections::{BTreeMap, HashMap};

use iceberg::spec::{DataFile, TableMetadata};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, ErrorKind, TableIdent};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::catalog::SqlCatalog;
use crate::{Error, Result};

pub const COMMIT_ID: &str = "tidemark.commit-id";
pub const OFFSETS: &str = "tidemark.offsets.";

/// Tries of a commit that lost a race with another committer.
const CONFLICT_TRIES: usize = 5;

/// Files of one partition's flush, waiting for a commit.
struct Queued {
    partition: u32,
    /// The offset after the last event in `files`.
    next: u64,
    files: Vec<DataFile>,
    done: oneshot::Sender<std::result::Result<(), String>>,
}

pub(super) struct Committer {
    ident: TableIdent,
    queue: std::sync::Mutex<Vec<Queued>>,
    lock: tokio::sync::Mutex<()>,
}

/// Per partition, the offset after the last event the table holds, from the newest snapshot
/// Tidemark committed (walking back past snapshots other tools made).
pub(super) fn covered(metadata: &TableMetadata) -> BTreeMap<u32, u64> {
    let mut at = metadata.current_snapshot().cloned();
    while let Some(s) = at {
        let props = &s.summary().additional_properties;
        if props.contains_key(COMMIT_ID) {
            return props
                .iter()
                .filter_map(|(k, v)| {
                    let p = k.strip_prefix(OFFSETS)?.parse().ok()?;
                    Some((p, v.parse().ok()?))
                })
                .collect();
        }
        at = s
            .parent_snapshot_id()
            .and_then(|id| metadata.snapshot_by_id(id).cloned());
    }
    BTreeMap::new()
}

impl Committer {
    pub fn new(ident: TableIdent) -> Committer {
        Committer {
            ident,
            queue: Default::default(),
            lock: Default::default(),
        }
    }

    /// Commit `files` of `partition`, covering its events before `next`. Returns once they
    /// are in the table (possibly committed by another partition's worker, with its own).
    pub async fn commit(
        &self,
        catalog: &SqlCatalog,
        partition: u32,
        next: u64,
        files: Vec<DataFile>,
    ) -> Result<()> {
        let (done, result) = oneshot::channel();
        self.queue.lock().unwrap().push(Queued {
            partition,
            next,
            files,
            done,
        });
        {
            let _one_at_a_time = self.lock.lock().await;
            let batch = std::mem::take(&mut *self.queue.lock().unwrap());
            if !batch.is_empty() {
                let outcome = self.commit_batch(catalog, &batch).await;
                let shared = outcome.as_ref().map(|_| ()).map_err(|e| e.to_string());
                for q in batch {
                    let _ = q.done.send(shared.clone());
                }
            }
        }
        match result.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Transient(e)),
            Err(_) => Err(Error::Transient("the commit was abandoned".into())),
        }
    }

    async fn commit_batch(&self, catalog: &SqlCatalog, batch: &[Queued]) -> Result<()> {
        let mut tries = 0;
        loop {
            tries += 1;
            let table = catalog
                .load_table(&self.ident)
                .await
                .map_err(|e| Error::Transient(format!("loading {}: {e}", self.ident)))?;
            let mut offsets = covered(table.metadata());
            let todo: Vec<&Queued> = batch
                .iter()
                .filter(|q| offsets.get(&q.partition).is_none_or(|&n| n < q.next))
                .collect();
            if todo.is_empty() {
                return Ok(()); // an earlier, ambiguous attempt landed
            }
            for q in &todo {
                let n = offsets.entry(q.partition).or_default();
                *n = (*n).max(q.next);
            }
            match self.append(catalog, &table, &todo, &offsets).await {
                Ok(()) => return Ok(()),
                Err(e)
                    if e.kind() == ErrorKind::CatalogCommitConflicts && tries < CONFLICT_TRIES =>
                {
                    tracing::debug!("{}: {e}; committing again", self.ident);
                }
                Err(e) => {
                    return Err(Error::Transient(format!(
                        "committing to {}: {e}",
                        self.ident
                    )));
                }
            }
        }
    }

    async fn append(
        &self,
        catalog: &SqlCatalog,
        table: &Table,
        todo: &[&Queued],
        offsets: &BTreeMap<u32, u64>,
    ) -> iceberg::Result<()> {
        let mut props: HashMap<String, String> = offsets
            .iter()
            .map(|(p, n)| (format!("{OFFSETS}{p}"), n.to_string()))
            .collect();
        props.insert(COMMIT_ID.into(), Uuid::now_v7().to_string());
        let files: Vec<DataFile> = todo.iter().flat_map(|q| q.files.iter().cloned()).collect();
        let tx = Transaction::new(table);
        let tx = tx
            .fast_append()
            .add_data_files(files)
            .set_snapshot_properties(props)
            .apply(tx)?;
        tx.commit(catalog as &dyn Catalog).await.map(|_| ())
    }
}
