//! A record batch as one Parquet file in memory, each row group's columns encoded side by
//! side on the machine's cores. The lake's files and the Iceberg sink's whole-batch data files
//! are written here; the file is the same, byte for byte, as `ArrowWriter` makes on one
//! thread with the same properties (the same column writers, cut into the same row groups).
//! [`Background`] writes a file a batch at a time on a thread of its own, as the batches come,
//! the lake's large segment files among them (`lake/segment_file.rs`).

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
    // Each writer with its leaf's place in the file, to put the chunks back in order.
    let writers = factory
        .create_column_writers(index)?
        .into_iter()
        .enumerate();
    let columns = leaf_jobs(&batch.schema(), batch, writers)?;
    let mut done: Vec<(usize, ArrowColumnChunk)> = side_by_side(columns, threads, |jobs| {
        let mut chunks = Vec::with_capacity(jobs.len());
        for ((leaf, mut writer), values) in jobs {
            writer.write(&values)?;
            chunks.push((leaf, writer.close()?));
        }
        Ok(chunks)
    })?
    .into_iter()
    .flatten()
    .collect();
    done.sort_by_key(|(leaf, _)| *leaf);
    Ok(done.into_iter().map(|(_, chunk)| chunk).collect())
}

/// A file's bytes and footer.
type File = (Vec<u8>, ParquetMetaData);

/// A file written a batch at a time on a thread of its own, so the caller builds the next
/// batch's columns while this one is encoded, each batch's columns side by side as in
/// [`encode`]. Batches wait in an unbounded queue, so whoever writes is never blocked (it may
/// be an async task); they hold no more than the rows the caller would otherwise have kept
/// for one `encode` at the end. Row groups are cut by row count, as `ArrowWriter` cuts them;
/// each batch is written to the column writers as `ArrowWriter::write` writes it, so the file
/// is the one `ArrowWriter` makes from the same batches.
pub struct Background {
    queue: Option<std::sync::mpsc::Sender<RecordBatch>>,
    thread: Option<std::thread::JoinHandle<Result<File>>>,
    /// Set when the file is dropped unfinished: the thread stops at its next batch.
    abandoned: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Background {
    /// A file of `schema` written with `props`; fails (nothing started) when the properties
    /// do not fit the schema, cut row groups by bytes, or no thread can be started.
    pub fn new(schema: arrow_schema::SchemaRef, props: WriterProperties) -> Result<Background> {
        use std::sync::atomic::Ordering;
        if props.max_row_group_bytes().is_some() {
            return Err(ParquetError::General(
                "row groups cut by bytes are written by ArrowWriter alone".into(),
            ));
        }
        let rows_per_group = props.max_row_group_row_count().unwrap_or(usize::MAX).max(1);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS));
        let writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))?;
        let (file, factory) = writer.into_serialized_writer()?;
        let mut stream = Stream {
            file,
            factory,
            schema,
            rows_per_group,
            threads,
            group: None,
            groups: 0,
        };
        let (queue, batches) = std::sync::mpsc::channel::<RecordBatch>();
        let abandoned = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = abandoned.clone();
        let thread = std::thread::Builder::new()
            .name("parquet-file".into())
            .spawn(move || {
                for batch in batches {
                    if stop.load(Ordering::Relaxed) {
                        return Err(ParquetError::General("abandoned".into()));
                    }
                    stream.write(&batch)?;
                }
                if stop.load(Ordering::Relaxed) {
                    return Err(ParquetError::General("abandoned".into()));
                }
                stream.finish()
            })
            .map_err(|e| ParquetError::General(format!("starting an encoder thread: {e}")))?;
        Ok(Background {
            queue: Some(queue),
            thread: Some(thread),
            abandoned,
        })
    }

    /// Queue `batch`. A failed encoding shows in [`Background::finish`].
    pub fn write(&mut self, batch: RecordBatch) {
        if let Some(queue) = &self.queue {
            // Fails only once the thread has ended on an error, which `finish` returns.
            let _ = queue.send(batch);
        }
    }

    /// Wait for every queued batch to be encoded: the file's bytes and footer.
    pub fn finish(mut self) -> Result<File> {
        drop(self.queue.take());
        self.thread
            .take()
            .expect("finished once")
            .join()
            .map_err(|_| ParquetError::General("the encoder thread panicked".into()))?
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.abandoned
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The encoder thread's file: the open row group's column writers, fed a batch at a time.
struct Stream {
    file: parquet::file::writer::SerializedFileWriter<Vec<u8>>,
    factory: ArrowRowGroupWriterFactory,
    schema: arrow_schema::SchemaRef,
    rows_per_group: usize,
    threads: usize,
    /// The open row group's writers and its rows so far.
    group: Option<(Vec<ArrowColumnWriter>, usize)>,
    /// Row groups started.
    groups: usize,
}

impl Stream {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut start = 0;
        while start < batch.num_rows() {
            if self.group.is_none() {
                let writers = self.factory.create_column_writers(self.groups)?;
                self.groups += 1;
                self.group = Some((writers, 0));
            }
            let (writers, rows) = self.group.as_mut().expect("opened above");
            let len = (self.rows_per_group - *rows).min(batch.num_rows() - start);
            write_columns(
                writers,
                &self.schema,
                &batch.slice(start, len),
                self.threads,
            )?;
            *rows += len;
            start += len;
            if *rows >= self.rows_per_group {
                self.close_group()?;
            }
        }
        Ok(())
    }

    fn close_group(&mut self) -> Result<()> {
        let Some((writers, _)) = self.group.take() else {
            return Ok(());
        };
        let mut group = self.file.next_row_group()?;
        for writer in writers {
            writer.close()?.append_to_row_group(&mut group)?;
        }
        group.close()?;
        Ok(())
    }

    fn finish(mut self) -> Result<File> {
        self.close_group()?;
        let meta = self.file.finish()?;
        Ok((std::mem::take(self.file.inner_mut()), meta))
    }
}

/// Write `batch` to the open row group's column `writers` (one per leaf, in file order), its
/// top-level columns taken heaviest first by this thread and up to `threads - 1` helpers.
fn write_columns(
    writers: &mut [ArrowColumnWriter],
    schema: &arrow_schema::Schema,
    batch: &RecordBatch,
    threads: usize,
) -> Result<()> {
    let columns = leaf_jobs(schema, batch, writers.iter_mut())?;
    side_by_side(columns, threads, |jobs| {
        for (writer, values) in jobs {
            writer.write(&values)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// `batch`'s top-level columns, each weighed by its bytes in memory, with its leaves' values
/// paired with the next of `writers` (one per leaf, in file order).
#[allow(clippy::type_complexity)]
fn leaf_jobs<W>(
    schema: &arrow_schema::Schema,
    batch: &RecordBatch,
    mut writers: impl Iterator<Item = W>,
) -> Result<Vec<(usize, Vec<(W, ArrowLeafColumn)>)>> {
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let mut jobs = Vec::new();
        for values in compute_leaves(field, column)? {
            let writer = writers.next().ok_or_else(|| {
                ParquetError::General(format!("no column writer for {}", field.name()))
            })?;
            jobs.push((writer, values));
        }
        columns.push((column.get_array_memory_size(), jobs));
    }
    Ok(columns)
}

/// `job` done on every item of `items` (each with its weight), heaviest first, by this thread
/// and up to `threads - 1` helpers, each taking the next item whenever it is free; a helper
/// that cannot be started leaves its share to the others. The results, in no given order.
fn side_by_side<T: Send, R: Send>(
    mut items: Vec<(usize, T)>,
    threads: usize,
    job: impl Fn(T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    // Lightest first: `pop` takes the heaviest left.
    items.sort_by_key(|(weight, _)| *weight);
    let queue = Mutex::new(items);
    let work = || -> Result<Vec<R>> {
        let mut done = Vec::new();
        loop {
            let next = queue.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let Some((_, item)) = next else {
                return Ok(done);
            };
            done.push(job(item)?);
        }
    };
    std::thread::scope(|s| {
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
            let theirs = helper
                .join()
                .map_err(|_| ParquetError::General("an encoder thread panicked".into()))?;
            done.extend(theirs?);
        }
        Ok(done)
    })
}
