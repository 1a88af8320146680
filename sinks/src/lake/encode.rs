//! Encoding record batches as Parquet files: codec, row-group and page sizes from the
//! subscription, statistics and dictionaries on, the Arrow schema embedded.
//!
//! Options as a subscription writes them (every field optional):
//!
//! ```json
//! { "compression": "zstd", "zstd_level": 3, "row_group_rows": 131072, "page_bytes": 1048576 }
//! ```

use parquet::basic::{Compression as Codec, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::{Deserialize, Serialize};

use arrow_array::RecordBatch;

use crate::{Error, Result};

/// Key-value metadata naming the column mapping, so a reader can tell our files (and their
/// version) from other Parquet in the same lake.
pub const SCHEMA_KEY: &str = "tidemark.schema";
pub const SCHEMA_VALUE: &str = "object_event v1";

pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
pub const DEFAULT_ROW_GROUP_ROWS: usize = 128 * 1024;
pub const DEFAULT_PAGE_BYTES: usize = 1024 * 1024;
/// Rows in a data page at most (pyarrow's and the Parquet writer's default).
pub const PAGE_ROWS: usize = 20_000;

/// Bounds that keep the writer sane: a row group holds at least one row (the writer panics on
/// 0), and pages under 1 KiB or over 1 GiB are mistakes rather than tuning.
const ROW_GROUP_ROWS: std::ops::RangeInclusive<usize> = 1..=64 * 1024 * 1024;
const PAGE_BYTES: std::ops::RangeInclusive<usize> = 1024..=1024 * 1024 * 1024;
const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = 1..=22;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Level 1..=22.
    Zstd(i32),
    Snappy,
    None,
}

/// How a lake subscription's files are encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawOptions", into = "RawOptions")]
pub struct ParquetOptions {
    pub compression: Compression,
    /// Rows per row group (the unit readers skip by statistics and read in parallel).
    pub row_group_rows: usize,
    /// Target size of a data page before compression.
    pub page_bytes: usize,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions {
            compression: Compression::Zstd(DEFAULT_ZSTD_LEVEL),
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
            page_bytes: DEFAULT_PAGE_BYTES,
        }
    }
}

/// The JSON shape: flat, so a user writes `"compression": "zstd", "zstd_level": 9`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    compression: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    zstd_level: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    row_group_rows: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page_bytes: Option<usize>,
}

impl TryFrom<RawOptions> for ParquetOptions {
    type Error = Error;

    fn try_from(r: RawOptions) -> Result<Self> {
        let codec = r.compression.as_deref().unwrap_or("zstd");
        let compression = match codec {
            "zstd" => {
                let level = r.zstd_level.unwrap_or(DEFAULT_ZSTD_LEVEL);
                if !ZSTD_LEVELS.contains(&level) {
                    return Err(Error::invalid(
                        "zstd_level",
                        format!("{level} is not in 1..=22"),
                    ));
                }
                Compression::Zstd(level)
            }
            "snappy" | "none" if r.zstd_level.is_some() => {
                return Err(Error::invalid(
                    "zstd_level",
                    format!("only applies to \"compression\": \"zstd\", not \"{codec}\""),
                ));
            }
            "snappy" => Compression::Snappy,
            "none" => Compression::None,
            other => {
                return Err(Error::invalid(
                    "compression",
                    format!("unknown codec '{other}'; use zstd, snappy or none"),
                ));
            }
        };
        let row_group_rows = r.row_group_rows.unwrap_or(DEFAULT_ROW_GROUP_ROWS);
        if !ROW_GROUP_ROWS.contains(&row_group_rows) {
            return Err(Error::invalid(
                "row_group_rows",
                format!(
                    "{row_group_rows} is not in {}..={}",
                    ROW_GROUP_ROWS.start(),
                    ROW_GROUP_ROWS.end()
                ),
            ));
        }
        let page_bytes = r.page_bytes.unwrap_or(DEFAULT_PAGE_BYTES);
        if !PAGE_BYTES.contains(&page_bytes) {
            return Err(Error::invalid(
                "page_bytes",
                format!(
                    "{page_bytes} is not in {}..={}",
                    PAGE_BYTES.start(),
                    PAGE_BYTES.end()
                ),
            ));
        }
        Ok(ParquetOptions {
            compression,
            row_group_rows,
            page_bytes,
        })
    }
}

impl From<ParquetOptions> for RawOptions {
    fn from(o: ParquetOptions) -> Self {
        let (codec, level) = match o.compression {
            Compression::Zstd(level) => ("zstd", Some(level)),
            Compression::Snappy => ("snappy", None),
            Compression::None => ("none", None),
        };
        RawOptions {
            compression: Some(codec.into()),
            zstd_level: level,
            row_group_rows: Some(o.row_group_rows),
            page_bytes: Some(o.page_bytes),
        }
    }
}

impl ParquetOptions {
    /// The writer properties for these options; for callers that stream several batches
    /// into one [`parquet::arrow::ArrowWriter`] instead of calling [`encode`].
    pub fn writer_properties(&self) -> Result<WriterProperties> {
        let codec = match self.compression {
            Compression::Zstd(level) => Codec::ZSTD(
                ZstdLevel::try_new(level)
                    .map_err(|e| Error::invalid("zstd_level", e.to_string()))?,
            ),
            Compression::Snappy => Codec::SNAPPY,
            Compression::None => Codec::UNCOMPRESSED,
        };
        if !ROW_GROUP_ROWS.contains(&self.row_group_rows) {
            return Err(Error::invalid(
                "row_group_rows",
                format!("{} is out of range", self.row_group_rows),
            ));
        }
        // Parquet 1.0 data pages with plain fallback are what pyarrow writes by default, and
        // what every reader handles; the defaults below are stated rather than inherited so
        // a crate upgrade cannot change the files.
        Ok(WriterProperties::builder()
            .set_compression(codec)
            .set_max_row_group_row_count(Some(self.row_group_rows))
            .set_max_row_group_bytes(None)
            .set_data_page_size_limit(self.page_bytes)
            .set_data_page_row_count_limit(PAGE_ROWS)
            .set_dictionary_enabled(true)
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_key_value_metadata(Some(vec![KeyValue::new(
                SCHEMA_KEY.to_string(),
                SCHEMA_VALUE.to_string(),
            )]))
            .build())
    }
}

/// One complete Parquet file holding `batch`, in memory. The Arrow schema is embedded
/// (`ARROW:schema`), so Arrow readers get back the timestamp zone and map field names.
/// Encoding failures are [`Error::Data`]: these rows cannot be written as they are.
///
/// A file of more than a few thousand rows has each row group's columns encoded side by side
/// on the machine's cores (`parquet_file`); the file is the same, byte for byte.
pub fn encode(batch: &RecordBatch, o: &ParquetOptions) -> Result<Vec<u8>> {
    let (bytes, _) = crate::parquet_file::encode(batch, o.writer_properties()?)
        .map_err(|e| Error::Data(format!("parquet encoding: {e}")))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::columns::tests::{batch_of, events_of, varied_events};
    use crate::lake::columns::{Rows, schema};
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::basic::Encoding;
    use parquet::file::reader::FileReader;
    use parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};
    use tidemark_core::event::sample_event;

    fn read_back(bytes: Vec<u8>) -> (RecordBatch, usize) {
        let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes)).unwrap();
        let groups = builder.metadata().num_row_groups();
        let reader = builder.with_batch_size(1 << 20).build().unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        let batch = concat(&batches);
        (batch, groups)
    }

    /// One batch of all rows, re-pushed: keeps the tests off `arrow-select`.
    fn concat(batches: &[RecordBatch]) -> RecordBatch {
        if let [one] = batches {
            return one.clone();
        }
        let mut rows = Rows::new();
        for b in batches {
            for (e, p, o) in events_of(b) {
                rows.push(&e, p, o);
            }
        }
        rows.finish()
    }

    #[test]
    fn varied_events_round_trip_through_parquet() {
        let events = varied_events();
        let batch = batch_of(&events);
        for compression in [Compression::Zstd(3), Compression::Snappy, Compression::None] {
            let o = ParquetOptions {
                compression,
                ..ParquetOptions::default()
            };
            let (back, groups) = read_back(encode(&batch, &o).unwrap());
            assert_eq!(groups, 1);
            // The embedded Arrow schema brings back the UTC zone and the map names.
            assert_eq!(back.schema(), schema(), "{compression:?}");
            assert_eq!(back, batch, "{compression:?}");
            let decoded: Vec<_> = events_of(&back).into_iter().map(|(e, ..)| e).collect();
            assert_eq!(decoded, events);
        }
    }

    #[test]
    fn file_metadata_has_codec_statistics_dictionaries_and_our_key() {
        let mut rows = Rows::new();
        for i in 0..1000 {
            rows.push(&sample_event(i), 1, i);
        }
        let batch = rows.finish();
        let o = ParquetOptions {
            compression: Compression::Zstd(7),
            row_group_rows: 300,
            page_bytes: 4096,
        };
        let bytes = encode(&batch, &o).unwrap();
        assert_eq!(&bytes[..4], b"PAR1");
        let options = ReadOptionsBuilder::new().with_page_index().build();
        let reader =
            SerializedFileReader::new_with_options(Bytes::from(bytes.clone()), options).unwrap();
        let meta = reader.metadata();
        let kv = meta.file_metadata().key_value_metadata().unwrap();
        assert!(
            kv.iter()
                .any(|k| k.key == SCHEMA_KEY && k.value.as_deref() == Some(SCHEMA_VALUE))
        );
        assert!(kv.iter().any(|k| k.key == "ARROW:schema"));
        // 1000 rows at 300 per group.
        let sizes: Vec<i64> = meta.row_groups().iter().map(|g| g.num_rows()).collect();
        assert_eq!(sizes, [300, 300, 300, 100]);
        let g = meta.row_group(0);
        let pages = meta.page_index_for_row_group(0);
        for (i, c) in g.columns().iter().enumerate() {
            let path = c.column_path().string();
            // The level is not recorded in the file, only the codec.
            assert!(matches!(c.compression(), Codec::ZSTD(_)), "{path} is zstd");
            assert!(c.statistics().is_some(), "{path} has statistics");
            // Page-level statistics live in the column index.
            assert!(pages.column_index(i).is_some(), "{path} has a column index");
        }
        let index = |name: &str| {
            g.columns()
                .iter()
                .position(|c| c.column_path().string() == name)
                .unwrap()
        };
        let col = |name: &str| g.column(index(name));
        assert!(
            col("event_type")
                .encodings()
                .any(|e| e == Encoding::RLE_DICTIONARY)
        );
        assert!(
            col("bucket")
                .encodings()
                .any(|e| e == Encoding::RLE_DICTIONARY)
        );
        let stats = col("sequence").statistics().unwrap();
        assert_eq!(stats.null_count_opt(), Some(0));
        // Still readable end to end.
        let (back, groups) = read_back(bytes);
        assert_eq!(groups, 4);
        assert_eq!(back, batch);
    }

    #[test]
    fn page_bytes_limits_data_pages() {
        let mut rows = Rows::new();
        for i in 0..5000 {
            rows.push(&sample_event(i), 0, i);
        }
        let batch = rows.finish();
        // The writer checks page sizes every 1024 rows, so pages are counted over 5000.
        let pages = |page_bytes| {
            let o = ParquetOptions {
                page_bytes,
                ..ParquetOptions::default()
            };
            let bytes = Bytes::from(encode(&batch, &o).unwrap());
            let options = ReadOptionsBuilder::new().with_page_index().build();
            let reader = SerializedFileReader::new_with_options(bytes, options).unwrap();
            let meta = reader.metadata();
            let key = meta
                .row_group(0)
                .columns()
                .iter()
                .position(|c| c.column_path().string() == "key")
                .unwrap();
            meta.page_index_for_row_group(0)
                .page_locations(key)
                .unwrap()
                .len()
        };
        assert_eq!(pages(DEFAULT_PAGE_BYTES), 1);
        assert!(pages(1024) >= 4);
    }

    #[test]
    fn the_codec_and_level_are_applied() {
        let mut rows = Rows::new();
        for i in 0..2000 {
            rows.push(&sample_event(i), 0, i);
        }
        let batch = rows.finish();
        let size = |compression| {
            let o = ParquetOptions {
                compression,
                ..ParquetOptions::default()
            };
            encode(&batch, &o).unwrap().len()
        };
        let (none, snappy, z1, z19) = (
            size(Compression::None),
            size(Compression::Snappy),
            size(Compression::Zstd(1)),
            size(Compression::Zstd(19)),
        );
        assert!(snappy < none, "snappy {snappy} < none {none}");
        assert!(z1 < snappy, "zstd(1) {z1} < snappy {snappy}");
        assert_ne!(z19, z1);
    }

    #[test]
    fn encoding_is_deterministic() {
        let batch = batch_of(&varied_events());
        let o = ParquetOptions::default();
        assert_eq!(encode(&batch, &o).unwrap(), encode(&batch, &o).unwrap());
    }

    /// The file `ArrowWriter` makes on one thread.
    fn one_thread(batch: &RecordBatch, o: &ParquetOptions) -> Vec<u8> {
        let props = o.writer_properties().unwrap();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props)).unwrap();
        w.write(batch).unwrap();
        w.into_inner().unwrap()
    }

    fn on(batch: &RecordBatch, o: &ParquetOptions, threads: usize) -> Vec<u8> {
        let props = o.writer_properties().unwrap();
        crate::parquet_file::encode_on(batch, props, threads)
            .unwrap()
            .0
    }

    /// Columns encoded side by side make the file one thread makes, byte for byte, over
    /// several row groups (the last one short) and for each thread count.
    #[test]
    fn columns_encoded_in_parallel_make_the_same_file() {
        let events: Vec<tidemark_core::event::ObjectEvent> = (0..7)
            .flat_map(|_| varied_events())
            .chain((0..300).map(|i| sample_event(i % 37)))
            .collect();
        let batch = batch_of(&events);
        let o = ParquetOptions {
            row_group_rows: batch.num_rows() / 3 + 1,
            page_bytes: 2048,
            ..ParquetOptions::default()
        };
        let one = one_thread(&batch, &o);
        let (back, groups) = read_back(one.clone());
        assert_eq!(groups, 3);
        assert_eq!(back, batch);
        for threads in [1, 2, 3, 4, 64] {
            assert_eq!(on(&batch, &o, threads), one, "{threads} threads");
        }
        // Through the public call as well (it picks its threads), once there are enough rows.
        let big = batch_of(
            &(0..crate::parquet_file::PARALLEL_MIN_ROWS as u64 + 10)
                .map(sample_event)
                .collect::<Vec<_>>(),
        );
        assert_eq!(encode(&big, &o).unwrap(), one_thread(&big, &o));
    }

    #[test]
    fn an_empty_batch_is_a_valid_file() {
        let batch = Rows::new().finish();
        let (back, groups) = read_back(encode(&batch, &ParquetOptions::default()).unwrap());
        assert_eq!(groups, 0);
        assert_eq!(back.num_rows(), 0);
    }

    #[test]
    fn options_parse_from_subscription_json() {
        let parse = |v: serde_json::Value| serde_json::from_value::<ParquetOptions>(v);
        assert_eq!(
            parse(serde_json::json!({})).unwrap(),
            ParquetOptions::default()
        );
        assert_eq!(
            parse(serde_json::json!({
                "compression": "zstd", "zstd_level": 19, "row_group_rows": 1000, "page_bytes": 65536
            }))
            .unwrap(),
            ParquetOptions {
                compression: Compression::Zstd(19),
                row_group_rows: 1000,
                page_bytes: 65536
            }
        );
        assert_eq!(
            parse(serde_json::json!({"compression": "snappy"}))
                .unwrap()
                .compression,
            Compression::Snappy
        );
        assert_eq!(
            parse(serde_json::json!({"compression": "none"}))
                .unwrap()
                .compression,
            Compression::None
        );
        let err = |v: serde_json::Value| parse(v).unwrap_err().to_string();
        assert!(err(serde_json::json!({"compression": "lz4"})).contains("unknown codec 'lz4'"));
        assert!(err(serde_json::json!({"zstd_level": 23})).contains("zstd_level: 23"));
        assert!(err(serde_json::json!({"zstd_level": 0})).contains("not in 1..=22"));
        assert!(
            err(serde_json::json!({"compression": "snappy", "zstd_level": 3}))
                .contains("only applies to")
        );
        assert!(err(serde_json::json!({"row_group_rows": 0})).contains("row_group_rows"));
        assert!(err(serde_json::json!({"page_bytes": 10})).contains("page_bytes"));
        assert!(err(serde_json::json!({"compresion": "zstd"})).contains("unknown field"));
        // Written back in the same shape, and read again to the same options.
        let o = ParquetOptions {
            compression: Compression::Zstd(5),
            ..ParquetOptions::default()
        };
        let v = serde_json::to_value(o.clone()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "compression": "zstd", "zstd_level": 5, "row_group_rows": 131072, "page_bytes": 1048576
            })
        );
        assert_eq!(parse(v).unwrap(), o);
        let v = serde_json::to_value(ParquetOptions {
            compression: Compression::None,
            ..o
        })
        .unwrap();
        assert_eq!(v.get("zstd_level"), None);
    }

    #[test]
    fn options_built_in_code_are_checked_too() {
        let bad = ParquetOptions {
            compression: Compression::Zstd(99),
            ..ParquetOptions::default()
        };
        assert!(encode(&batch_of(&varied_events()), &bad).is_err());
        let bad = ParquetOptions {
            row_group_rows: 0,
            ..ParquetOptions::default()
        };
        assert!(bad.writer_properties().is_err());
    }
}
