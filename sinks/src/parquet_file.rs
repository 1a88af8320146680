//! A record batch as one Parquet file in memory, each row group's columns encoded side by
//! side on the machine's cores. The lake's files and the Iceberg sink's whole-batch data files
//! are written here; the file is the same, byte for byte, as `ArrowWriter` makes on one
//! thread with the same properties (the same column writers, cut into the same row groups).

use std::sync::{Mutex, PoisonError};

use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowLeafColumn, ArrowRowGroupWriterFactory,
    compute_leaves,
};
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::WriterProperties;

/// Rows under which a file is encoded on one thread: starting a thread costs more than the
/// work it would take over.
pub const PARALLEL_MIN_ROWS: usize = 4096;

/// Threads a row group's columns are spread over at most: a file has a few dozen columns of
/// very unequal weight, so beyond a few threads the heaviest column sets the time.
const MAX_THREADS: usize = 4;

/// `batch` as one file written with `props`: its bytes and footer.
pub fn encode(batch: &RecordBatch, props: WriterProperties) -> Result<(Vec<u8>, ParquetMetaData)> {
    let threads = match batch.num_rows() < PARALLEL_MIN_ROWS {
        true => 1,
        false => std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS)),
    };
    encode_on(batch, props, threads)
}

/// [`encode`] on `threads` threads.
pub(crate) fn encode_on(
    batch: &RecordBatch,
    props: WriterProperties,
    threads: usize,
) -> Result<(Vec<u8>, ParquetMetaData)> {
    // Row groups are cut by row count alone below, as `ArrowWriter` cuts them when no byte
    // limit is set; with one, it decides.
    let rows_per_group = match props.max_row_group_bytes() {
        Some(_) => None,
        None => Some(props.max_row_group_row_count().unwrap_or(usize::MAX).max(1)),
    };
    // Encoded files are usually a fraction of the in-memory batch; start there to skip the
    // first few doublings.
    let buf = Vec::with_capacity(batch.get_array_memory_size() / 4);
    let mut w = ArrowWriter::try_new(buf, batch.schema(), Some(props))?;
    let Some(rows_per_group) = rows_per_group.filter(|_| threads > 1) else {
        w.write(batch)?;
        let meta = w.finish()?;
        // `finish` wrote the footer (`into_inner` would write it a second time).
        return Ok((std::mem::take(w.inner_mut()), meta));
    };
    // The same file writer and column writers `write` would use (properties, embedded Arrow
    // schema), driven a row group at a time with the columns shared out between threads.
    let (mut file, factory) = w.into_serialized_writer()?;
    let rows = batch.num_rows();
    let (mut start, mut index) = (0, 0);
    while start < rows {
        let len = rows_per_group.min(rows - start);
        let chunks = encode_row_group(&factory, index, &batch.slice(start, len), threads)?;
        let mut group = file.next_row_group()?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut group)?;
        }
        group.close()?;
        start += len;
        index += 1;
    }
    let meta = file.finish()?;
    Ok((std::mem::take(file.inner_mut()), meta))
}

/// A leaf column's place in the file, its writer and its values.
type LeafJob = (usize, ArrowColumnWriter, ArrowLeafColumn);

/// Row group `index` (`batch`, its rows), as column chunks in file order. Top-level columns
/// (each with all its leaves) are taken one at a time, heaviest first by their bytes in
/// memory, by this thread and up to `threads - 1` helpers; a helper that cannot be started
/// leaves its share to the others.
fn encode_row_group(
    factory: &ArrowRowGroupWriterFactory,
    index: usize,
    batch: &RecordBatch,
    threads: usize,
) -> Result<Vec<ArrowColumnChunk>> {
    let mut writers = factory.create_column_writers(index)?.into_iter();
    let mut columns: Vec<(usize, Vec<LeafJob>)> = Vec::new();
    let mut leaf = 0;
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let mut jobs = Vec::new();
        for values in compute_leaves(field, column)? {
            let writer = writers.next().ok_or_else(|| {
                ParquetError::General(format!("no column writer for {}", field.name()))
            })?;
            jobs.push((leaf, writer, values));
            leaf += 1;
        }
        columns.push((column.get_array_memory_size(), jobs));
    }
    // Lightest first: `pop` takes the heaviest left.
    columns.sort_by_key(|(bytes, _)| *bytes);
    let queue = Mutex::new(columns);
    let work = || -> Result<Vec<(usize, ArrowColumnChunk)>> {
        let mut done = Vec::new();
        loop {
            let next = queue.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let Some((_, jobs)) = next else {
                return Ok(done);
            };
            for (leaf, mut writer, values) in jobs {
                writer.write(&values)?;
                done.push((leaf, writer.close()?));
            }
        }
    };
    let mut done = std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("parquet-encode".into())
                    .spawn_scoped(s, work)
                    .ok()
            })
            .collect();
        let mut done = work()?;
        for helper in helpers {
            let chunks = helper
                .join()
                .map_err(|_| ParquetError::General("an encoder thread panicked".into()))?;
            done.extend(chunks?);
        }
        Ok::<_, ParquetError>(done)
    })?;
    done.sort_by_key(|(leaf, _)| *leaf);
    Ok(done.into_iter().map(|(_, chunk)| chunk).collect())
}
