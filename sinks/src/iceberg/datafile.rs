//! A data file: rows encoded by our own Parquet writer (zstd, statistics per column chunk),
//! and the Iceberg `DataFile` entry that describes it, built from the file's footer. Only
//! file metadata reaches the `iceberg` crate, so no Arrow type crosses between its Arrow
//! version and ours (docs/lake.md, "Iceberg").

use std::collections::HashMap;

use arrow_array::RecordBatch;
use iceberg::spec::{
    DataContentType, DataFile, DataFileBuilder, DataFileFormat, Datum, PrimitiveType, Schema,
    Struct, Type,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::Statistics;
use parquet::schema::types::ColumnPath;

use crate::{Error, Result};

/// Rows per row group: readers skip by statistics and read groups in parallel.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Columns (of either table) whose values are all or nearly all distinct: a dictionary would
/// only cost hashing every value until it outgrew its page, then fall back to plain anyway.
const DISTINCT: &[&str] = &[
    "key",
    "sequence_number",
    "version_id",
    "removed_version_id",
    "e_tag",
    "sha256",
    "event_id",
    "request_id",
    "record_timestamp",
    "last_modified_date",
    "log_offset",
    "previous.version_id",
    "previous.e_tag",
    "previous.sha256",
    "previous.last_modified_date",
];

/// How a table's data files are written, from its properties (`super::table_format`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Format {
    /// `write.parquet.compression-level`: zstd 1–22.
    pub zstd_level: i32,
    /// `write.parquet.page-size-bytes`: a data page's size before compression.
    pub page_bytes: usize,
}

/// Encode `batch` as one Parquet file in `format`; each row group's columns side by side
/// when it is large (`parquet_file`).
pub(super) fn encode(batch: &RecordBatch, format: Format) -> Result<(Vec<u8>, ParquetMetaData)> {
    crate::parquet_file::encode(batch, properties(&batch.schema(), format)?).map_err(encode_err)
}

/// The writer properties of a data file of `schema` in `format`.
fn properties(schema: &arrow_schema::Schema, format: Format) -> Result<WriterProperties> {
    let mut props = WriterProperties::builder();
    for name in DISTINCT {
        let path: Vec<String> = name.split('.').map(str::to_owned).collect();
        if schema.field_with_name(&path[0]).is_ok() {
            props = props.set_column_dictionary_enabled(ColumnPath::new(path), false);
        }
    }
    Ok(props
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(format.zstd_level).map_err(encode_err)?,
        ))
        .set_data_page_size_limit(format.page_bytes)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        // Iceberg bounds must be exact or truncated the right way; untruncated is simplest.
        .set_statistics_truncate_length(None)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build())
}

fn encode_err(e: parquet::errors::ParquetError) -> Error {
    Error::Transient(format!("encoding an Iceberg data file: {e}"))
}

/// A data file written batch by batch, so its rows need not all be in memory at once.
pub(super) struct Encoder {
    writer: ArrowWriter<Vec<u8>>,
}

impl Encoder {
    /// A file of `schema` in `format`, its buffer starting at `capacity` bytes.
    pub fn new(
        schema: arrow_schema::SchemaRef,
        capacity: usize,
        format: Format,
    ) -> Result<Encoder> {
        let props = properties(&schema, format)?;
        let writer = ArrowWriter::try_new(Vec::with_capacity(capacity), schema, Some(props))
            .map_err(encode_err)?;
        Ok(Encoder { writer })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer.write(batch).map_err(encode_err)
    }

    /// The file's bytes and footer.
    pub fn finish(mut self) -> Result<(Vec<u8>, ParquetMetaData)> {
        let meta = self.writer.finish().map_err(encode_err)?;
        // `finish` flushed everything (`into_inner` would write the footer a second time).
        Ok((std::mem::take(self.writer.inner_mut()), meta))
    }
}

/// The manifest entry of a Parquet file at `path` of `size` bytes whose footer is `meta`,
/// written with `schema`'s field ids, in partition `partition`.
pub(super) fn data_file(
    path: String,
    size: u64,
    meta: &ParquetMetaData,
    schema: &Schema,
    partition: Struct,
    spec_id: i32,
) -> Result<DataFile> {
    let mut column_sizes: HashMap<i32, u64> = HashMap::new();
    let mut value_counts: HashMap<i32, u64> = HashMap::new();
    let mut null_counts: HashMap<i32, u64> = HashMap::new();
    let mut lower: HashMap<i32, Datum> = HashMap::new();
    let mut upper: HashMap<i32, Datum> = HashMap::new();
    let mut no_nulls_known: Vec<i32> = Vec::new();
    let mut records = 0u64;
    for group in meta.row_groups() {
        records += group.num_rows() as u64;
        for chunk in group.columns() {
            let info = chunk.column_descr().self_type().get_basic_info();
            if !info.has_id() {
                continue;
            }
            let id = info.id();
            *column_sizes.entry(id).or_default() += chunk.compressed_size() as u64;
            *value_counts.entry(id).or_default() += chunk.num_values() as u64;
            let Some(stats) = chunk.statistics() else {
                no_nulls_known.push(id);
                continue;
            };
            match stats.null_count_opt() {
                Some(n) => *null_counts.entry(id).or_default() += n,
                None => no_nulls_known.push(id),
            }
            let Some(Type::Primitive(t)) = schema.field_by_id(id).map(|f| f.field_type.as_ref())
            else {
                continue;
            };
            if let Some((lo, hi)) = bounds(stats, t) {
                merge(&mut lower, id, lo, |new, old| new < old);
                merge(&mut upper, id, hi, |new, old| new > old);
            }
        }
    }
    // A count unknown in any group is unknown for the file.
    for id in no_nulls_known {
        null_counts.remove(&id);
    }
    DataFileBuilder::default()
        .content(DataContentType::Data)
        .file_path(path)
        .file_format(DataFileFormat::Parquet)
        .partition(partition)
        .partition_spec_id(spec_id)
        .record_count(records)
        .file_size_in_bytes(size)
        .column_sizes(column_sizes)
        .value_counts(value_counts)
        .null_value_counts(null_counts)
        .lower_bounds(lower)
        .upper_bounds(upper)
        .build()
        .map_err(|e| Error::Transient(format!("describing an Iceberg data file: {e}")))
}

fn merge(
    bounds: &mut HashMap<i32, Datum>,
    id: i32,
    value: Datum,
    better: impl Fn(&Datum, &Datum) -> bool,
) {
    match bounds.get(&id) {
        Some(old) if !better(&value, old) => {}
        _ => {
            bounds.insert(id, value);
        }
    }
}

/// Exact minimum and maximum of a column chunk as Iceberg values of type `t`.
fn bounds(stats: &Statistics, t: &PrimitiveType) -> Option<(Datum, Datum)> {
    if !stats.min_is_exact() || !stats.max_is_exact() {
        return None;
    }
    match (stats, t) {
        (Statistics::Boolean(s), PrimitiveType::Boolean) => {
            Some((Datum::bool(*s.min_opt()?), Datum::bool(*s.max_opt()?)))
        }
        (Statistics::Int32(s), PrimitiveType::Int) => {
            Some((Datum::int(*s.min_opt()?), Datum::int(*s.max_opt()?)))
        }
        (Statistics::Int64(s), PrimitiveType::Long) => {
            Some((Datum::long(*s.min_opt()?), Datum::long(*s.max_opt()?)))
        }
        (Statistics::Int64(s), PrimitiveType::Timestamptz) => Some((
            Datum::timestamptz_micros(*s.min_opt()?),
            Datum::timestamptz_micros(*s.max_opt()?),
        )),
        (Statistics::ByteArray(s), PrimitiveType::String) => Some((
            Datum::string(s.min_opt()?.as_utf8().ok()?),
            Datum::string(s.max_opt()?.as_utf8().ok()?),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iceberg::rows::{Row, journal_batch};
    use crate::iceberg::schema::journal_schema;
    use crate::lake::columns::tests::varied_events;

    /// The format of a new table, at zstd `level`.
    fn level(zstd_level: i32) -> Format {
        Format {
            zstd_level,
            page_bytes: crate::iceberg::NEW_TABLE_PAGE_BYTES,
        }
    }

    /// Journal rows of `events` in log partition `partition`, from offset `first`.
    fn rows_of(
        events: &[tidemark_core::event::ObjectEvent],
        partition: u32,
        first: u64,
    ) -> Vec<Row<'_>> {
        events
            .iter()
            .enumerate()
            .map(|(i, e)| Row {
                event: tidemark_core::codec::view::EventView::of(e),
                partition,
                offset: first + i as u64,
            })
            .collect()
    }

    #[test]
    fn the_footer_gives_counts_and_bounds_by_field_id() {
        let events = varied_events();
        let rows = rows_of(&events, 3, 10);
        let batch = journal_batch(&rows).unwrap();
        let (bytes, meta) = encode(&batch, level(3)).unwrap();
        let schema = journal_schema().unwrap();
        let f = data_file(
            "/x.parquet".into(),
            bytes.len() as u64,
            &meta,
            &schema,
            Struct::empty(),
            0,
        )
        .unwrap();
        assert_eq!(f.record_count(), events.len() as u64);
        assert_eq!(f.file_size_in_bytes(), bytes.len() as u64);
        // log_offset (25): 10 ..= 10 + n - 1.
        assert_eq!(f.lower_bounds()[&25], Datum::long(10));
        assert_eq!(
            f.upper_bounds()[&25],
            Datum::long(10 + events.len() as i64 - 1)
        );
        assert_eq!(f.null_value_counts()[&1], 0);
        assert!(f.column_sizes().contains_key(&26), "map keys have sizes");
    }

    #[test]
    fn columns_of_distinct_values_have_no_dictionary() {
        let events = varied_events();
        let rows = rows_of(&events, 0, 0);
        let (_, meta) = encode(&journal_batch(&rows).unwrap(), level(3)).unwrap();
        let group = meta.row_group(0);
        let dictionary = |name: &str| {
            let c = group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == name)
                .unwrap_or_else(|| panic!("no column {name}"));
            c.dictionary_page_offset().is_some()
        };
        for name in [
            "key",
            "event_id",
            "sequence_number",
            "log_offset",
            "previous.e_tag",
            "previous.last_modified_date",
        ] {
            assert!(!dictionary(name), "{name} is written without a dictionary");
        }
        for name in ["bucket", "event_type", "record_type"] {
            assert!(dictionary(name), "{name} keeps its dictionary");
        }
    }

    /// A large batch (its columns encoded side by side) gives the file and footer one thread
    /// gives, with its per-column settings.
    #[test]
    fn a_large_batch_is_the_same_file_on_any_number_of_threads() {
        let each = varied_events();
        let events: Vec<_> = (0..crate::parquet_file::PARALLEL_MIN_ROWS / each.len() + 1)
            .flat_map(|_| each.clone())
            .collect();
        let rows = rows_of(&events, 0, 0);
        let batch = journal_batch(&rows).unwrap();
        assert!(batch.num_rows() > crate::parquet_file::PARALLEL_MIN_ROWS);
        let props = || properties(&batch.schema(), level(3)).unwrap();
        let (one, meta) = crate::parquet_file::encode_on(&batch, props(), 1).unwrap();
        for threads in [2, 4] {
            let (many, _) = crate::parquet_file::encode_on(&batch, props(), threads).unwrap();
            assert_eq!(many, one, "{threads} threads");
        }
        assert_eq!(encode(&batch, level(3)).unwrap().0, one);
        assert_eq!(meta.file_metadata().num_rows() as usize, batch.num_rows());
    }

    /// The level a table's `write.parquet.compression-level` names is the one written (zstd
    /// frames do not record it: a higher level compresses the same rows smaller).
    #[test]
    fn the_zstd_level_is_the_one_given() {
        let events = varied_events();
        let rows = rows_of(&events, 0, 0);
        let batch = journal_batch(&rows).unwrap();
        let size = |l| encode(&batch, level(l)).unwrap().0.len();
        assert!(size(19) < size(1), "{} vs {}", size(19), size(1));
        assert!(
            Encoder::new(batch.schema(), 0, level(23)).is_err(),
            "23 is no zstd level"
        );
    }

    /// A table's `write.parquet.page-size-bytes` bounds its data pages: smaller pages, more of
    /// them, the same rows.
    #[test]
    fn the_page_size_is_the_one_given() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let each = varied_events();
        let events: Vec<_> = (0..200).flat_map(|_| each.clone()).collect();
        let rows = rows_of(&events, 0, 0);
        let batch = journal_batch(&rows).unwrap();
        let pages = |page_bytes| {
            let format = Format {
                zstd_level: 3,
                page_bytes,
            };
            let (bytes, _) = encode(&batch, format).unwrap();
            let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
            let group = reader.get_row_group(0).unwrap();
            let key = (0..group.num_columns())
                .find(|&i| group.metadata().column(i).column_path().string() == "key")
                .unwrap();
            let mut n = 0;
            let mut rows = 0;
            for page in group.get_column_page_reader(key).unwrap() {
                let page = page.unwrap();
                if !matches!(page.page_type(), parquet::basic::PageType::DICTIONARY_PAGE) {
                    n += 1;
                    rows += page.num_values() as usize;
                }
            }
            assert_eq!(rows, events.len());
            n
        };
        let (small, large) = (pages(1024), pages(1 << 20));
        assert_eq!(large, 1, "{} rows fit one 1 MiB page", events.len());
        assert!(small > 10, "1 KiB pages: {small}");
    }
}
