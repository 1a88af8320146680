//! One directory's file of an open segment. Its rows go into Arrow columns, and once it holds
//! [`CHUNK_ROWS`] the columns are handed to an encoder on a thread of its own
//! (`parquet_file::Background`), so the file is encoded while the next rows are read: by the
//! time its segment closes, only the last chunk is left to encode. A directory that never
//! fills a chunk (a segment may spread over thousands of directories, most with a few rows)
//! starts no thread and is encoded at the close, as a whole.

use tidemark_core::codec::view::EventView;

use super::columns::{Rows, schema};
use super::encode::{PAGE_ROWS, ParquetOptions, encode};
use crate::parquet_file::Background;
use crate::{Error, Result};

/// Rows handed to the encoder at a time, counted from the start of each row group: enough to
/// dwarf the hand-over, few enough that the columns are still in the CPU's cache. The Parquet
/// writer checks its page limits after each write's mini-batches, and takes columns without
/// nulls or repetition in mini-batches of its page row limit: chunks of that size keep those
/// pages at most [`PAGE_ROWS`], as one write of the whole file does.
pub const CHUNK_ROWS: usize = PAGE_ROWS;

/// Files of one segment that may have an encoder thread at once. A subscription chooses its
/// roll limits and directory template, so a segment may fill thousands of large directories;
/// past this many, a directory's rows stay columns and are encoded at the close, as before.
/// Most segments have one large directory (one bucket, one hour).
pub const ENCODERS_PER_SEGMENT: usize = 4;

pub struct SegmentFile {
    /// Rows not yet handed to the encoder.
    rows: Rows,
    /// Started with the first full chunk; `None` when it could not be (then the rows stay
    /// here and the close encodes them, reporting why).
    encoder: Option<Background>,
    /// Whether starting the encoder was tried (once per file, when its segment had one spare).
    tried: bool,
    /// Rows and [`Rows::approx_bytes`] already handed over.
    handed: usize,
    handed_bytes: usize,
}

impl Default for SegmentFile {
    fn default() -> Self {
        SegmentFile::new()
    }
}

impl SegmentFile {
    pub fn new() -> SegmentFile {
        SegmentFile {
            rows: Rows::new(),
            encoder: None,
            tried: false,
            handed: 0,
            handed_bytes: 0,
        }
    }

    /// Add one event's row; a full chunk goes to the encoder, started on the first when
    /// `spare` (the encoders its segment may still start) allows, which it then takes one of.
    pub fn push_view(
        &mut self,
        o: &ParquetOptions,
        e: &EventView<'_>,
        partition: u32,
        offset: u64,
        spare: &mut usize,
    ) {
        self.rows.push_view(e, partition, offset);
        // A chunk never spans two row groups.
        let group = o.row_group_rows.max(1);
        if self.rows.len() < CHUNK_ROWS.min(group - self.handed % group) {
            return;
        }
        if !self.tried && *spare > 0 {
            self.tried = true;
            self.encoder = o
                .writer_properties()
                .ok()
                .and_then(|props| Background::new(schema(), props).ok());
            if self.encoder.is_some() {
                *spare -= 1;
            }
        }
        if let Some(encoder) = &mut self.encoder {
            self.handed += self.rows.len();
            self.handed_bytes += self.rows.approx_bytes();
            let chunk = std::mem::replace(&mut self.rows, Rows::with_capacity(CHUNK_ROWS));
            encoder.write(chunk.finish());
        }
    }

    #[cfg(test)]
    pub(super) fn has_encoder(&self) -> bool {
        self.encoder.is_some()
    }

    /// Rows pushed.
    pub fn len(&self) -> usize {
        self.handed + self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The plain size of the rows pushed ([`Rows::approx_bytes`], handed over or not).
    pub fn approx_bytes(&self) -> usize {
        self.handed_bytes + self.rows.approx_bytes()
    }

    /// The complete file: the encoder's, with the rows it has not had yet, or all the rows
    /// encoded now. Encoding failures are [`Error::Data`], as [`encode`]'s.
    pub fn finish(self, o: &ParquetOptions) -> Result<Vec<u8>> {
        let Some(mut encoder) = self.encoder else {
            return encode(&self.rows.finish(), o);
        };
        if !self.rows.is_empty() {
            encoder.write(self.rows.finish());
        }
        let (bytes, _) = encoder
            .finish()
            .map_err(|e| Error::Data(format!("parquet encoding: {e}")))?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::columns::tests::varied_events;

    /// Rows handed a chunk at a time to the encoder thread make a file of the same rows, in
    /// the same row groups, as one `encode` of all of them, about as large (pages may be cut
    /// a few rows apart), whichever row groups the options cut; a file that never fills a
    /// chunk starts no thread and is encoded at the close.
    #[test]
    fn a_file_encoded_as_its_rows_arrive_holds_what_one_encode_of_them_holds() {
        use bytes::Bytes;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let read = |file: Vec<u8>| {
            let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file)).unwrap();
            let groups: Vec<i64> = (reader.metadata().row_groups().iter())
                .map(|g| g.num_rows())
                .collect();
            let batches: Vec<_> = reader.build().unwrap().map(Result::unwrap).collect();
            let all = arrow_select::concat::concat_batches(&schema(), &batches).unwrap();
            (all, groups)
        };
        let events = varied_events();
        for (rows, row_group_rows) in [
            (CHUNK_ROWS * 3 + 517, 128 * 1024),
            (45_000, 10_000),
            (45_000, 27_000),
            (900, 128 * 1024),
        ] {
            let o = ParquetOptions {
                row_group_rows,
                ..ParquetOptions::default()
            };
            let mut file = SegmentFile::new();
            let mut whole = Rows::new();
            for i in 0..rows {
                let e = EventView::of(&events[i % events.len()]);
                file.push_view(&o, &e, 2, i as u64, &mut 1);
                whole.push_view(&e, 2, i as u64);
            }
            assert_eq!(file.len(), rows);
            assert_eq!(file.approx_bytes(), whole.approx_bytes());
            assert_eq!(
                file.encoder.is_some(),
                rows >= CHUNK_ROWS.min(row_group_rows)
            );
            let streamed = file.finish(&o).unwrap();
            let one = encode(&whole.finish(), &o).unwrap();
            let ratio = streamed.len() as f64 / one.len() as f64;
            assert!(
                (0.97..=1.03).contains(&ratio),
                "{rows} rows in groups of {row_group_rows}: {} bytes against {}",
                streamed.len(),
                one.len()
            );
            assert_eq!(
                read(streamed),
                read(one),
                "{rows} rows in groups of {row_group_rows}"
            );
        }
    }

    /// The encoder thread writes each batch as `ArrowWriter::write` does (columns side by
    /// side, row groups cut by count, inside a batch too): the same batches make the same
    /// file, byte for byte.
    #[test]
    fn the_encoder_thread_makes_the_file_arrow_writer_makes_from_the_same_batches() {
        let events = varied_events();
        let o = ParquetOptions {
            row_group_rows: 25_000,
            ..ParquetOptions::default()
        };
        let props = o.writer_properties().unwrap();
        let mut background = Background::new(schema(), props.clone()).unwrap();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(Vec::new(), schema(), Some(props)).unwrap();
        for (chunk, rows) in [7_000, 30_000, 1, 13_000].into_iter().enumerate() {
            let mut batch = Rows::new();
            for i in 0..rows {
                let e = EventView::of(&events[(i + chunk) % events.len()]);
                batch.push_view(&e, 0, i as u64);
            }
            let batch = batch.finish();
            writer.write(&batch).unwrap();
            background.write(batch);
        }
        writer.finish().unwrap();
        let (bytes, meta) = background.finish().unwrap();
        assert_eq!(meta.num_row_groups(), 3, "50,001 rows in groups of 25,000");
        assert!(bytes == *writer.inner(), "the files differ");
    }
}
