//! Compacting the journal's small data files. Every commit appends one file per table
//! partition it touched, so a day of commits at the default interval leaves thousands of small
//! files per (day, bucket). When a partition has more than [`MAX_SMALL_FILES`] files under
//! [`SMALL_FILE_ROWS`] rows, they are read (our Parquet reader), rewritten as files of up to
//! [`COMPACT_ROWS`] rows with the table's current columns (files from before a column was
//! added get it as null), and swapped in by a `replace` snapshot of our own commit path (the
//! crate has no rewrite action): the old files marked deleted, the new ones added, the same
//! rows and the same offsets in the summary. Runs under the table's commit lock; a race with
//! another node's commit is a conflict that leaves everything as it was.

use std::collections::BTreeMap;

use arrow_array::{RecordBatch, new_null_array};
use bytes::Bytes;
use iceberg::spec::{DataFile, ManifestWriterBuilder, Operation};
use iceberg::{ErrorKind, TableIdent};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::catalogs::SinkCatalog;
use super::commit;
use super::maintenance::{self, load_managed};
use super::{TableInfo, datafile, schema};
use crate::{Error, Result};

/// A data file with fewer rows than this is small.
pub(super) const SMALL_FILE_ROWS: u64 = 100_000;
/// A partition with more small files than this has them compacted.
pub(super) const MAX_SMALL_FILES: usize = 8;
/// Rows of one compacted file at most: what one rewrite holds in memory.
const COMPACT_ROWS: u64 = 1_000_000;

fn unexpected(e: impl std::fmt::Display) -> iceberg::Error {
    iceberg::Error::new(ErrorKind::Unexpected, e.to_string())
}

/// Compact the journal `ident`'s small files; returns how many files were rewritten.
pub(super) async fn compact_journal(
    catalog: &dyn SinkCatalog,
    ident: &TableIdent,
    info: &TableInfo,
) -> Result<usize> {
    let Some(table) = load_managed(catalog, ident).await? else {
        return Ok(0);
    };
    let meta = table.metadata();
    let Some(current) = maintenance::ours(meta) else {
        return Ok(0); // another tool committed last: leave its files alone
    };
    let io = catalog.file_io();
    let run = async {
        let Some(manifests) = maintenance::data_manifests(io, meta, current).await? else {
            return Ok(0);
        };
        // Every live file with where it came from, and the small ones by partition.
        let mut live = Vec::new();
        for mf in &manifests {
            for e in mf.load_manifest(io).await?.entries() {
                if e.is_alive() {
                    live.push((
                        e.data_file().clone(),
                        e.snapshot_id().unwrap_or(current.snapshot_id()),
                        e.sequence_number().unwrap_or(0),
                        e.file_sequence_number,
                    ));
                }
            }
        }
        let mut small: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, (f, ..)) in live.iter().enumerate() {
            if f.record_count() < SMALL_FILE_ROWS {
                small
                    .entry(format!("{:?}", f.partition()))
                    .or_default()
                    .push(i);
            }
        }
        small.retain(|_, files| files.len() > MAX_SMALL_FILES);
        if small.is_empty() {
            return Ok(0);
        }
        let snapshot_id = commit::new_snapshot_id();
        let sequence = meta.last_sequence_number() + 1;
        let mut replaced = vec![false; live.len()];
        let mut added: Vec<DataFile> = Vec::new();
        for files in small.values() {
            // Outputs of up to COMPACT_ROWS rows each.
            let mut chunk: Vec<usize> = Vec::new();
            let mut rows = 0;
            for (n, &i) in files.iter().enumerate() {
                chunk.push(i);
                rows += live[i].0.record_count();
                if rows >= COMPACT_ROWS || n + 1 == files.len() {
                    if chunk.len() > 1 {
                        let inputs: Vec<&DataFile> = chunk.iter().map(|&i| &live[i].0).collect();
                        added.push(rewrite(catalog, info, &inputs).await?);
                        for &i in &chunk {
                            replaced[i] = true;
                        }
                    }
                    chunk.clear();
                    rows = 0;
                }
            }
        }
        let count = replaced.iter().filter(|r| **r).count();
        if count == 0 {
            return Ok(0);
        }
        let location = meta.location().trim_end_matches('/');
        let manifest_path =
            |n: u8| format!("{location}/metadata/{}-c{n}.avro", uuid::Uuid::now_v7());
        let writer = |path: String| -> iceberg::Result<_> {
            Ok(ManifestWriterBuilder::new(
                io.new_output(path)?,
                Some(snapshot_id),
                meta.current_schema().clone(),
                meta.default_partition_spec().as_ref().clone(),
            )
            .build_v2_data())
        };
        let mut kept = writer(manifest_path(0))?;
        for ((file, from, seq, file_seq), gone) in live.into_iter().zip(replaced) {
            if gone {
                kept.add_delete_file(file, seq, file_seq)?;
            } else {
                kept.add_existing_file(file, from, seq, file_seq)?;
            }
        }
        let mut new = writer(manifest_path(1))?;
        let new_files = added.len();
        for f in added {
            new.add_file(f, sequence)?;
        }
        let list = vec![
            kept.write_manifest_file().await?,
            new.write_manifest_file().await?,
        ];
        // The same offsets: a rewrite reflects no new event.
        let mut props = commit::summary(&commit::covered(meta));
        props.insert("rewritten-data-files".into(), count.to_string());
        props.insert("added-data-files".into(), new_files.to_string());
        commit::commit_snapshot(
            catalog,
            &table,
            snapshot_id,
            list,
            Operation::Replace,
            props,
        )
        .await?;
        Ok::<usize, iceberg::Error>(count)
    };
    match run.await {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == ErrorKind::CatalogCommitConflicts => Ok(0),
        Err(e) => Err(Error::Transient(format!("compacting {ident}: {e}"))),
    }
}

/// Read `inputs` (files of one partition) and write their rows as one file beside the first,
/// with the journal's current columns; returns its manifest entry.
async fn rewrite(
    catalog: &dyn SinkCatalog,
    info: &TableInfo,
    inputs: &[&DataFile],
) -> iceberg::Result<DataFile> {
    let io = catalog.file_io();
    let mut contents: Vec<Bytes> = Vec::with_capacity(inputs.len());
    for f in inputs {
        contents.push(io.new_input(f.file_path())?.read().await?);
    }
    let first = inputs[0].file_path();
    let dir = first.rsplit_once('/').map_or(first, |(d, _)| d);
    let path = format!("{dir}/compacted-{}.parquet", uuid::Uuid::now_v7());
    let (partition, spec_id) = (inputs[0].partition().clone(), info.spec_id);
    let (encoded, file) = {
        let (info, path) = (info.clone(), path.clone());
        tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, DataFile)> {
            let target = schema::journal_arrow();
            let mut batches = Vec::new();
            for bytes in contents {
                let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                    .and_then(|b| b.build())
                    .map_err(|e| Error::Transient(format!("reading a journal file: {e}")))?;
                for batch in reader {
                    let batch = batch
                        .map_err(|e| Error::Transient(format!("reading a journal file: {e}")))?;
                    batches.push(project(&batch, &target)?);
                }
            }
            let all = arrow_select::concat::concat_batches(&target, &batches)
                .map_err(|e| Error::Transient(format!("joining journal rows: {e}")))?;
            let (bytes, meta) = datafile::encode(&all, info.format)?;
            let file = datafile::data_file(
                path,
                bytes.len() as u64,
                &meta,
                &info.schema,
                partition,
                spec_id,
            )?;
            Ok((bytes, file))
        })
        .await
        .map_err(unexpected)?
        .map_err(unexpected)?
    };
    io.new_output(&path)?.write(Bytes::from(encoded)).await?;
    Ok(file)
}

/// `batch` with `target`'s columns, by name: a column the file predates is all null.
fn project(batch: &RecordBatch, target: &arrow_schema::SchemaRef) -> Result<RecordBatch> {
    let columns = target
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => c.clone(),
            None => new_null_array(f.data_type(), batch.num_rows()),
        })
        .collect();
    RecordBatch::try_new(target.clone(), columns)
        .map_err(|e| Error::Transient(format!("a journal file's columns: {e}")))
}
