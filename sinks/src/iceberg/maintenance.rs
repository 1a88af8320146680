//! Keeping a table's growth bounded: snapshots older than the retention are expired (the
//! crate's `expire_snapshots`, which rewrites metadata only), then the files only expired
//! snapshots referenced (manifest lists, manifests, data files the inventory replaced) and
//! metadata files the table's metadata log no longer lists are deleted. A table whose
//! current snapshot has more than [`MAX_MANIFESTS`] manifests (the journal gains one per
//! append) gets them merged into one, by a `replace` snapshot of our own commit path (the
//! crate has no manifest rewrite): the same live files, so readers plan one manifest read.
//!
//! Never expired: the current snapshot, which carries the offsets Tidemark resumes from. When
//! another tool committed last (its snapshot carries no offsets), nothing is expired, so the
//! newest Tidemark snapshot stays reachable. Runs under the table's commit lock, so it never
//! races this node's commits; a race with another node's commit is a conflict that leaves
//! everything as it was (the next run tries again). A metadata file is deleted only when its
//! version is below the current one, so a commit another node is writing is never touched.

use std::collections::HashSet;
use std::str::FromStr;

use iceberg::io::FileIO;
use iceberg::spec::{
    FormatVersion, ManifestContentType, ManifestList, ManifestWriterBuilder, Operation,
    SnapshotRef, TableMetadata,
};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, ErrorKind, TableIdent};

use super::MANAGED;
use super::catalogs::SinkCatalog;
use super::commit::{self, COMMIT_ID};
use crate::{Error, Result};

/// What a run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Expired {
    pub snapshots: usize,
    pub files: usize,
}

fn failed(ident: &TableIdent, e: impl std::fmt::Display) -> Error {
    Error::Transient(format!("maintaining {ident}: {e}"))
}

/// The table, if Tidemark created it (its `tidemark.managed` property): files are only ever
/// deleted from tables Tidemark made, never from one a spec's catalog merely names.
pub(super) async fn load_managed(
    catalog: &dyn SinkCatalog,
    ident: &TableIdent,
) -> Result<Option<Table>> {
    let table = catalog
        .load_table(ident)
        .await
        .map_err(|e| failed(ident, e))?;
    let managed = table
        .metadata()
        .properties()
        .get(MANAGED)
        .map(String::as_str)
        == Some("true");
    if !managed {
        return Ok(None);
    }
    // Files are deleted only under the sink's warehouse, wherever the catalog says the table is.
    super::catalogs::check_location(catalog, ident, table.metadata().location())
        .map_err(|e| failed(ident, e))?;
    Ok(Some(table))
}

/// Expire `ident`'s snapshots older than `retention_ms` and delete what only they used.
pub(super) async fn expire(
    catalog: &dyn SinkCatalog,
    ident: &TableIdent,
    retention_ms: u64,
) -> Result<Expired> {
    let Some(table) = load_managed(catalog, ident).await? else {
        return Ok(Default::default());
    };
    let meta = table.metadata();
    let Some(current) = meta.current_snapshot() else {
        return Ok(Expired::default());
    };
    if !current
        .summary()
        .additional_properties
        .contains_key(COMMIT_ID)
    {
        tracing::info!(
            "{ident}: another tool committed last; nothing is expired until Tidemark commits again"
        );
        return Ok(Expired::default());
    }
    let cutoff = chrono::Utc::now().timestamp_millis() - retention_ms.min(i64::MAX as u64) as i64;
    let before: Vec<SnapshotRef> = meta.snapshots().cloned().collect();
    if !before
        .iter()
        .any(|s| s.timestamp_ms() < cutoff && s.snapshot_id() != current.snapshot_id())
    {
        return Ok(Expired::default());
    }
    let tx = Transaction::new(&table);
    let tx = tx
        .expire_snapshots()
        .expire_older_than_ms(cutoff)
        .retain_last(1)
        .apply(tx)
        .map_err(|e| failed(ident, e))?;
    let after = match tx.commit(catalog as &dyn Catalog).await {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::CatalogCommitConflicts => {
            return Ok(Expired::default()); // another commit came first; next time
        }
        Err(e) => return Err(failed(ident, e)),
    };
    let kept: HashSet<i64> = after
        .metadata()
        .snapshots()
        .map(|s| s.snapshot_id())
        .collect();
    let expired: Vec<SnapshotRef> = before
        .into_iter()
        .filter(|s| !kept.contains(&s.snapshot_id()))
        .collect();
    let io = catalog.file_io();
    let live = reachable(io, after.metadata().snapshots())
        .await
        .map_err(|e| failed(ident, e))?;
    let gone = reachable(io, expired.iter())
        .await
        .map_err(|e| failed(ident, e))?;
    let mut files = 0;
    for path in gone.difference(&live) {
        match io.delete(path).await {
            Ok(()) => files += 1,
            Err(e) => tracing::warn!("{ident}: deleting {path}: {e}"),
        }
    }
    files += old_metadata_files(
        catalog,
        after.metadata(),
        after.metadata_location().unwrap_or_default(),
    )
    .await;
    Ok(Expired {
        snapshots: expired.len(),
        files,
    })
}

/// A file no snapshot references is an orphan (a crash came between writing it and the
/// commit) once it is this old: younger ones may belong to a commit in flight.
pub(super) const ORPHAN_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Delete data files (`.parquet`) and manifests (`.avro`) under the table's `data/` and
/// `metadata/` that no snapshot references and that are older than [`ORPHAN_AGE`]; returns
/// how many. Metadata JSON files are left to [`expire`] (by version, never the current or a
/// newer one); any other file is never touched.
pub(super) async fn remove_orphans(catalog: &dyn SinkCatalog, ident: &TableIdent) -> Result<usize> {
    let Some(table) = load_managed(catalog, ident).await? else {
        return Ok(Default::default());
    };
    let meta = table.metadata();
    let io = catalog.file_io();
    let live = reachable(io, meta.snapshots())
        .await
        .map_err(|e| failed(ident, e))?;
    let root = meta.location().trim_end_matches('/');
    let cutoff = std::time::SystemTime::now() - ORPHAN_AGE;
    let mut removed = 0;
    for dir in [format!("{root}/data"), format!("{root}/metadata")] {
        let files = catalog
            .files()
            .list(&dir)
            .await
            .map_err(|e| failed(ident, e))?;
        for (path, modified) in files {
            // Only the kinds of files Tidemark writes there: data files and manifests.
            let ours = path.ends_with(".parquet") || path.ends_with(".avro");
            if modified < cutoff && ours && !live.contains(&path) && io.delete(&path).await.is_ok()
            {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// The current snapshot, when Tidemark committed it (another tool's files are left alone).
pub(super) fn ours(meta: &TableMetadata) -> Option<&SnapshotRef> {
    meta.current_snapshot()
        .filter(|s| s.summary().additional_properties.contains_key(COMMIT_ID))
}

/// `snapshot`'s manifests when all are data manifests of the table's current partition spec
/// (what our rewrites handle); `None` otherwise.
pub(super) async fn data_manifests(
    io: &FileIO,
    meta: &TableMetadata,
    snapshot: &SnapshotRef,
) -> iceberg::Result<Option<Vec<iceberg::spec::ManifestFile>>> {
    let bytes = io.new_input(snapshot.manifest_list())?.read().await?;
    let manifests = ManifestList::parse_with_version(&bytes, FormatVersion::V2)?
        .entries()
        .to_vec();
    let spec_id = meta.default_partition_spec_id();
    let plain = manifests
        .iter()
        .all(|m| m.content == ManifestContentType::Data && m.partition_spec_id == spec_id);
    Ok(plain.then_some(manifests))
}

/// More manifests than this in the current snapshot are merged into one.
pub(super) const MAX_MANIFESTS: usize = 8;

/// Merge the current snapshot's manifests into one when there are more than
/// [`MAX_MANIFESTS`]; returns how many were merged (0: nothing done).
pub(super) async fn merge_manifests(
    catalog: &dyn SinkCatalog,
    ident: &TableIdent,
) -> Result<usize> {
    let Some(table) = load_managed(catalog, ident).await? else {
        return Ok(Default::default());
    };
    let meta = table.metadata();
    let Some(current) = ours(meta) else {
        return Ok(0);
    };
    let io = catalog.file_io();
    let run = async {
        let Some(manifests) = data_manifests(io, meta, current).await? else {
            return Ok(0);
        };
        if manifests.len() <= MAX_MANIFESTS {
            return Ok(0);
        }
        let snapshot_id = commit::new_snapshot_id();
        let location = meta.location().trim_end_matches('/');
        let out = io.new_output(format!(
            "{location}/metadata/{}-m0.avro",
            uuid::Uuid::now_v7()
        ))?;
        let mut w = ManifestWriterBuilder::new(
            out,
            Some(snapshot_id),
            meta.current_schema().clone(),
            meta.default_partition_spec().as_ref().clone(),
        )
        .build_v2_data();
        for mf in &manifests {
            for e in mf.load_manifest(io).await?.entries() {
                if !e.is_alive() {
                    continue;
                }
                w.add_existing_file(
                    e.data_file().clone(),
                    e.snapshot_id().unwrap_or(current.snapshot_id()),
                    e.sequence_number().unwrap_or(0),
                    e.file_sequence_number,
                )?;
            }
        }
        let merged = w.write_manifest_file().await?;
        // The same offsets: a merge reflects no new event.
        let mut props = commit::summary(&commit::covered(meta));
        props.insert("manifests-replaced".into(), manifests.len().to_string());
        commit::commit_snapshot(
            catalog,
            &table,
            snapshot_id,
            vec![merged],
            Operation::Replace,
            props,
        )
        .await?;
        Ok::<usize, iceberg::Error>(manifests.len())
    };
    match run.await {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == ErrorKind::CatalogCommitConflicts => Ok(0),
        Err(e) => Err(failed(ident, e)),
    }
}

/// Manifest lists, manifests and data files `snapshots` reference.
async fn reachable(
    io: &FileIO,
    snapshots: impl Iterator<Item = &SnapshotRef>,
) -> iceberg::Result<HashSet<String>> {
    let mut out = HashSet::new();
    let mut manifests_seen = HashSet::new();
    for s in snapshots {
        out.insert(s.manifest_list().to_string());
        let bytes = io.new_input(s.manifest_list())?.read().await?;
        let files = ManifestList::parse_with_version(&bytes, FormatVersion::V2)?
            .entries()
            .to_vec();
        for mf in files {
            if !manifests_seen.insert(mf.manifest_path.clone()) {
                continue;
            }
            out.insert(mf.manifest_path.clone());
            for e in mf.load_manifest(io).await?.entries() {
                out.insert(e.data_file().file_path().to_string());
            }
        }
    }
    Ok(out)
}

/// Delete the table's metadata files older than the current version that its metadata log no
/// longer lists; returns how many.
async fn old_metadata_files(
    catalog: &dyn SinkCatalog,
    meta: &TableMetadata,
    current: &str,
) -> usize {
    let dir = format!("{}/metadata", meta.location().trim_end_matches('/'));
    let listed: HashSet<&str> = meta
        .metadata_log()
        .iter()
        .map(|l| l.metadata_file.as_str())
        .collect();
    let Some(current_version) = version_of(current) else {
        return 0;
    };
    let Ok(files) = catalog.files().list(&dir).await else {
        return 0;
    };
    let mut deleted = 0;
    for (path, _) in files {
        let older = version_of(&path).is_some_and(|v| v < current_version);
        if older
            && path != current
            && !listed.contains(path.as_str())
            && catalog.file_io().delete(&path).await.is_ok()
        {
            deleted += 1;
        }
    }
    deleted
}

/// The version of a metadata file's name (`00012-<uuid>.metadata.json`).
fn version_of(path: &str) -> Option<i64> {
    let name = path.rsplit('/').next()?;
    if !name.ends_with(".metadata.json") {
        return None;
    }
    let _ = iceberg::MetadataLocation::from_str(path).ok()?;
    name.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_versions_come_from_file_names() {
        assert_eq!(
            version_of("/w/t/metadata/00012-0b9a7f6e-1c1d-4c5a-9d53-6a3f0f4b1e2a.metadata.json"),
            Some(12)
        );
        assert_eq!(version_of("/w/t/metadata/snap-1-1-x.avro"), None);
    }
}
