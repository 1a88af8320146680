//! The inventory's commits: an overwrite of the partitions whose keys changed, by our own
//! commit path (the `iceberg` crate 0.10.1 commits appends only; docs/lake.md says why this
//! path). The table is partitioned by bucket and a hash bucket of the key, so a round:
//!
//! 1. groups the queued changes by (bucket, key bucket);
//! 2. reads those partitions' live data files, applies the changes in log order (a put
//!    replaces the key's row, a removal drops it) and writes each partition as one new file;
//! 3. writes a snapshot whose manifests mark the old files of those partitions deleted, keep
//!    every other file (manifests that hold none of them are reused as they are; manifests
//!    left with no live file are dropped), and add the new files, with the offsets the round
//!    reaches in its summary (`commit.rs`);
//! 4. moves the table's pointer with the catalog's compare-and-swap; a lost race starts the
//!    round over on the new current snapshot.
//!
//! So every snapshot holds each live object once, and a removed object in none.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use iceberg::spec::{
    DataFile, FormatVersion, Literal, Manifest, ManifestFile, ManifestList, ManifestWriterBuilder,
    Operation, PrimitiveLiteral, Struct,
};
use iceberg::table::Table;
use iceberg::{ErrorKind, TableIdent};
use uuid::Uuid;

use super::catalogs::SinkCatalog;
use super::commit::{self, CONFLICT_TRIES, Queued, Round};
use super::inventory::{self, InvRow};
use super::schema::key_bucket;
use super::{TableInfo, datafile};
use crate::{Error, Result};

/// A change of one object: its bucket, key, and state after (`None`: removed).
pub(super) type Change = (String, String, Option<InvRow>);

/// What a log partition queues for a round: its changes, and data files written already
/// (a backfill's, holding keys of that log partition only, which the table has no row of
/// yet), added as they are.
#[derive(Default)]
pub(super) struct Changes {
    pub changes: Vec<Change>,
    pub files: Vec<DataFile>,
}

/// A table partition: bucket and key bucket.
type Part = (String, i32);

pub(super) struct Overwriter {
    pub catalog: Arc<dyn SinkCatalog>,
    pub ident: TableIdent,
    pub info: TableInfo,
}

impl Round<Changes> for Overwriter {
    fn round<'a>(&'a self, batch: &'a [Queued<Changes>]) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.overwrite_all(batch))
    }
}

fn part_of(partition: &Struct) -> Option<Part> {
    let mut it = partition.iter();
    let bucket = match it.next()?? {
        Literal::Primitive(PrimitiveLiteral::String(s)) => s.clone(),
        _ => return None,
    };
    let hash = match it.next()?? {
        Literal::Primitive(PrimitiveLiteral::Int(i)) => *i,
        _ => return None,
    };
    Some((bucket, hash))
}

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Transient(format!("{what}: {e}"))
}

impl Overwriter {
    async fn overwrite_all(&self, batch: &[Queued<Changes>]) -> Result<()> {
        let mut tries = 0;
        loop {
            tries += 1;
            let table = self
                .catalog
                .load_table(&self.ident)
                .await
                .map_err(|e| failed(&format!("loading {}", self.ident), e))?;
            let mut offsets = commit::covered(table.metadata());
            let todo = commit::pending(batch, &mut offsets);
            if todo.is_empty() {
                return Ok(()); // an earlier, ambiguous attempt landed
            }
            // Per partition, in log order per key (a key's changes all come from one log
            // partition's queued entry, in order).
            let mut changed: BTreeMap<Part, Vec<&Change>> = BTreeMap::new();
            let written: Vec<DataFile> = todo
                .iter()
                .flat_map(|q| q.payload.files.iter().cloned())
                .collect();
            for q in &todo {
                for c in &q.payload.changes {
                    changed
                        .entry((c.0.clone(), key_bucket(&c.1)))
                        .or_default()
                        .push(c);
                }
            }
            match self.overwrite(&table, &changed, written, &offsets).await {
                Ok(()) => return Ok(()),
                Err(e)
                    if e.kind() == ErrorKind::CatalogCommitConflicts && tries < CONFLICT_TRIES =>
                {
                    tracing::debug!("{}: {e}; committing again", self.ident);
                }
                Err(e) => return Err(failed(&format!("committing to {}", self.ident), e)),
            }
        }
    }

    async fn overwrite(
        &self,
        table: &Table,
        changed: &BTreeMap<Part, Vec<&Change>>,
        written: Vec<DataFile>,
        offsets: &BTreeMap<u32, u64>,
    ) -> iceberg::Result<()> {
        let meta = table.metadata();
        let io = self.catalog.file_io();
        let location = self.info.location.as_str();
        // The current snapshot's manifests, and the live files of the changed partitions.
        let mut manifests: Vec<(ManifestFile, Manifest)> = Vec::new();
        let mut old: HashMap<Part, Vec<DataFile>> = HashMap::new();
        if let Some(s) = meta.current_snapshot() {
            let bytes = io.new_input(s.manifest_list())?.read().await?;
            let files: Vec<ManifestFile> =
                ManifestList::parse_with_version(&bytes, FormatVersion::V2)?
                    .entries()
                    .to_vec();
            for mf in files {
                let m = mf.load_manifest(io).await?;
                for e in m.entries() {
                    if let Some(p) = part_of(e.data_file().partition())
                        && e.is_alive()
                        && changed.contains_key(&p)
                    {
                        old.entry(p).or_default().push(e.data_file().clone());
                    }
                }
                manifests.push((mf, m));
            }
        }
        let snapshot_id = commit::new_snapshot_id();
        let sequence = meta.last_sequence_number() + 1;
        // The new state of each changed partition, and the files written already.
        let (mut added_rows, mut deleted_rows) = (
            written.iter().map(DataFile::record_count).sum::<u64>(),
            0u64,
        );
        let mut added: Vec<DataFile> = written;
        for (part, changes) in changed {
            let mut rows: BTreeMap<String, InvRow> = BTreeMap::new();
            for f in old.get(part).into_iter().flatten() {
                deleted_rows += f.record_count();
                let bytes = io.new_input(f.file_path())?.read().await?;
                for r in inventory::read_file(bytes)
                    .map_err(|e| iceberg::Error::new(ErrorKind::DataInvalid, e.to_string()))?
                {
                    rows.insert(r.key.clone(), r);
                }
            }
            for (_, key, after) in changes.iter().copied() {
                match after {
                    Some(r) => rows.insert(key.clone(), r.clone()),
                    None => rows.remove(key),
                };
            }
            if rows.is_empty() {
                continue;
            }
            added_rows += rows.len() as u64;
            let (bucket, hash) = part;
            let path = format!(
                "{location}/data/bucket={bucket}/key_bucket={hash}/{}.parquet",
                Uuid::now_v7()
            );
            let rows: Vec<&InvRow> = rows.values().collect();
            let file = encode_partition(&self.info, bucket, *hash, &rows, &path)
                .map_err(|e| iceberg::Error::new(ErrorKind::Unexpected, e.to_string()))?;
            io.new_output(&path)?.write(file.0).await?;
            added.push(file.1);
        }
        // The new snapshot's manifests.
        let schema = meta.current_schema().clone();
        let spec = meta.default_partition_spec().as_ref().clone();
        let manifest_path = |n: usize| format!("{location}/metadata/{}-m{n}.avro", Uuid::now_v7());
        let mut list: Vec<ManifestFile> = Vec::new();
        let (added_files, mut deleted_files) = (added.len(), 0usize);
        for (n, (mf, m)) in manifests.into_iter().enumerate() {
            let touches = m.entries().iter().any(|e| {
                e.is_alive()
                    && part_of(e.data_file().partition()).is_some_and(|p| changed.contains_key(&p))
            });
            if !m.entries().iter().any(|e| e.is_alive()) {
                continue; // only files removed earlier: no snapshot from here on needs it
            }
            if !touches {
                list.push(mf);
                continue;
            }
            let out = io.new_output(manifest_path(n))?;
            let mut w =
                ManifestWriterBuilder::new(out, Some(snapshot_id), schema.clone(), spec.clone())
                    .build_v2_data();
            for e in m.entries().iter().filter(|e| e.is_alive()) {
                let seq = e.sequence_number().unwrap_or(0);
                let gone =
                    part_of(e.data_file().partition()).is_some_and(|p| changed.contains_key(&p));
                if gone {
                    deleted_files += 1;
                    w.add_delete_file(e.data_file().clone(), seq, e.file_sequence_number)?;
                } else {
                    let from = e.snapshot_id().unwrap_or(snapshot_id);
                    w.add_existing_file(e.data_file().clone(), from, seq, e.file_sequence_number)?;
                }
            }
            list.push(w.write_manifest_file().await?);
        }
        if !added.is_empty() {
            let out = io.new_output(manifest_path(usize::MAX))?;
            let mut w = ManifestWriterBuilder::new(out, Some(snapshot_id), schema.clone(), spec)
                .build_v2_data();
            for f in added {
                w.add_file(f, sequence)?;
            }
            list.push(w.write_manifest_file().await?);
        }
        let mut props = commit::summary(offsets);
        props.insert("added-data-files".into(), added_files.to_string());
        props.insert("deleted-data-files".into(), deleted_files.to_string());
        props.insert("added-records".into(), added_rows.to_string());
        props.insert("deleted-records".into(), deleted_rows.to_string());
        props.insert("changed-partition-count".into(), changed.len().to_string());
        commit::commit_snapshot(
            &*self.catalog,
            table,
            snapshot_id,
            list,
            Operation::Overwrite,
            props,
        )
        .await?;
        Ok(())
    }
}

/// One partition's rows as a data file: its bytes and manifest entry.
pub(super) fn encode_partition(
    info: &TableInfo,
    bucket: &str,
    hash: i32,
    rows: &[&InvRow],
    path: &str,
) -> Result<(Bytes, DataFile)> {
    let batch = inventory::batch(bucket, rows)?;
    let (bytes, meta) = datafile::encode(&batch, info.format)?;
    let key = Struct::from_iter([Some(Literal::string(bucket)), Some(Literal::int(hash))]);
    let file = datafile::data_file(
        path.to_string(),
        bytes.len() as u64,
        &meta,
        &info.schema,
        key,
        info.spec_id,
    )?;
    Ok((Bytes::from(bytes), file))
}
