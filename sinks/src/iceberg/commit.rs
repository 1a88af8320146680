//! Committing to a table exactly once.
//!
//! One committer per table: partition workers queue what they have (data files for the
//! journal, changed objects for the inventory) with the log position it covers, and whoever
//! holds the commit lock commits everything queued in one snapshot (a group commit), so a
//! table gets one snapshot per round, not one per partition.
//!
//! Every snapshot Tidemark commits records, in its summary, a commit id
//! (`tidemark.commit-id`) and, for every log partition, the offset after the last event the
//! table reflects (`tidemark.offsets.<partition>`, carried forward from the snapshot before).
//! Before committing, a round reads those offsets from the current snapshot (or the newest
//! ancestor Tidemark committed, if some other tool committed since) and leaves out what is
//! covered already, so a retry after an ambiguous failure that did land counts as success. A
//! worker moves the subscription's position only after the commit, and on start skips what
//! the table already covers: a crash at any point neither loses nor repeats rows.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::future::BoxFuture;
use iceberg::spec::{
    DataFile, MAIN_BRANCH, ManifestFile, ManifestListWriter, Operation, Snapshot,
    SnapshotReference, SnapshotRetention, Summary, TableMetadata,
};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, ErrorKind, TableIdent, TableRequirement, TableUpdate};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::catalogs::SinkCatalog;
use crate::{Error, Result};

pub const COMMIT_ID: &str = "tidemark.commit-id";
pub const OFFSETS: &str = "tidemark.offsets.";

/// Tries of a commit that lost a race with another committer.
pub(super) const CONFLICT_TRIES: usize = 5;

/// One partition's contribution to a round, waiting for it.
pub(super) struct Queued<P> {
    pub partition: u32,
    /// The offset after the last event `payload` reflects.
    pub next: u64,
    pub payload: P,
    done: oneshot::Sender<std::result::Result<(), String>>,
}

/// How a table commits a round of queued payloads (all of them in one snapshot).
pub(super) trait Round<P>: Send + Sync {
    fn round<'a>(&'a self, batch: &'a [Queued<P>]) -> BoxFuture<'a, Result<()>>;
}

pub(super) struct Committer<P> {
    queue: std::sync::Mutex<Vec<Queued<P>>>,
    lock: tokio::sync::Mutex<()>,
}

/// Per partition, the offset after the last event the table reflects, from the newest
/// snapshot Tidemark committed (walking back past snapshots other tools made).
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

/// The queued payloads `offsets` does not cover yet, and `offsets` moved past them.
pub(super) fn pending<'a, P>(
    batch: &'a [Queued<P>],
    offsets: &mut BTreeMap<u32, u64>,
) -> Vec<&'a Queued<P>> {
    let todo: Vec<&Queued<P>> = batch
        .iter()
        .filter(|q| offsets.get(&q.partition).is_none_or(|&n| n < q.next))
        .collect();
    for q in &todo {
        let n = offsets.entry(q.partition).or_default();
        *n = (*n).max(q.next);
    }
    todo
}

/// The summary properties of a commit covering `offsets`.
pub(super) fn summary(offsets: &BTreeMap<u32, u64>) -> HashMap<String, String> {
    let mut props: HashMap<String, String> = offsets
        .iter()
        .map(|(p, n)| (format!("{OFFSETS}{p}"), n.to_string()))
        .collect();
    props.insert(COMMIT_ID.into(), Uuid::now_v7().to_string());
    props
}

impl<P: Send> Committer<P> {
    pub fn new() -> Committer<P> {
        Committer {
            queue: Default::default(),
            lock: Default::default(),
        }
    }

    /// Run `work` while no round commits to this table (maintenance).
    pub async fn exclusive<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        let _one_at_a_time = self.lock.lock().await;
        work.await
    }

    /// Commit `payload` of `partition`, covering its events before `next`, with `round`.
    /// Returns once it is in the table (possibly committed by another partition's worker,
    /// with its own).
    pub async fn commit(
        &self,
        round: &impl Round<P>,
        partition: u32,
        next: u64,
        payload: P,
    ) -> Result<()> {
        let (done, result) = oneshot::channel();
        self.queue.lock().unwrap().push(Queued {
            partition,
            next,
            payload,
            done,
        });
        {
            let _one_at_a_time = self.lock.lock().await;
            let batch = std::mem::take(&mut *self.queue.lock().unwrap());
            if !batch.is_empty() {
                let outcome = round.round(&batch).await;
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
}

/// The journal's rounds: append the queued data files.
pub(super) struct Appender {
    pub catalog: Arc<dyn SinkCatalog>,
    pub ident: TableIdent,
}

impl Round<Vec<DataFile>> for Appender {
    fn round<'a>(&'a self, batch: &'a [Queued<Vec<DataFile>>]) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.append_all(batch))
    }
}

impl Appender {
    async fn append_all(&self, batch: &[Queued<Vec<DataFile>>]) -> Result<()> {
        let mut tries = 0;
        loop {
            tries += 1;
            let table = self
                .catalog
                .load_table(&self.ident)
                .await
                .map_err(|e| Error::Transient(format!("loading {}: {e}", self.ident)))?;
            let mut offsets = covered(table.metadata());
            let todo = pending(batch, &mut offsets);
            if todo.is_empty() {
                return Ok(()); // an earlier, ambiguous attempt landed
            }
            let files: Vec<DataFile> = todo
                .iter()
                .flat_map(|q| q.payload.iter().cloned())
                .collect();
            let tx = Transaction::new(&table);
            let outcome = match tx
                .fast_append()
                .add_data_files(files)
                .set_snapshot_properties(summary(&offsets))
                .apply(tx)
            {
                Ok(tx) => tx.commit(&*self.catalog as &dyn Catalog).await.map(|_| ()),
                Err(e) => Err(e),
            };
            match outcome {
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
}

/// A snapshot id for our own commit path (positive, as Iceberg's are).
pub(super) fn new_snapshot_id() -> i64 {
    (Uuid::now_v7().as_u128() as i64) & i64::MAX
}

/// The last step of our own commit path (the inventory's overwrites, manifest merges): write
/// the manifest list of `manifests`, make a snapshot of `operation` with summary `props` the
/// table's current one on `main`, and commit it (a commit conflict if `main` moved since
/// `table` was loaded).
pub(super) async fn commit_snapshot(
    catalog: &dyn SinkCatalog,
    table: &Table,
    snapshot_id: i64,
    manifests: Vec<ManifestFile>,
    operation: Operation,
    props: HashMap<String, String>,
) -> iceberg::Result<()> {
    let meta = table.metadata();
    let io = catalog.file_io();
    let parent = meta.current_snapshot().map(|s| s.snapshot_id());
    let sequence = meta.last_sequence_number() + 1;
    let list_path = format!(
        "{}/metadata/snap-{snapshot_id}-1-{}.avro",
        meta.location().trim_end_matches('/'),
        Uuid::now_v7()
    );
    let mut list = ManifestListWriter::v2(
        io.new_output(&list_path)?.writer().await?,
        snapshot_id,
        parent,
        sequence,
    );
    list.add_manifests(manifests.into_iter())?;
    list.close().await?;
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(parent)
        .with_sequence_number(sequence)
        .with_timestamp_ms(chrono::Utc::now().timestamp_millis())
        .with_manifest_list(list_path)
        .with_summary(Summary {
            operation,
            additional_properties: props,
        })
        .with_schema_id(meta.current_schema().schema_id())
        .build();
    // Only if `main` is still where it was when the round read the table.
    let requirements = vec![
        TableRequirement::UuidMatch { uuid: meta.uuid() },
        TableRequirement::RefSnapshotIdMatch {
            r#ref: MAIN_BRANCH.to_string(),
            snapshot_id: parent,
        },
    ];
    let updates = vec![
        TableUpdate::AddSnapshot { snapshot },
        TableUpdate::SetSnapshotRef {
            ref_name: MAIN_BRANCH.to_string(),
            reference: SnapshotReference::new(
                snapshot_id,
                SnapshotRetention::branch(None, None, None),
            ),
        },
    ];
    catalog
        .commit_updates(table.identifier(), requirements, updates)
        .await?;
    Ok(())
}
