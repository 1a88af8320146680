//! Inventory rows: the current state of one live object, made from the event that produced
//! it, encoded into an Arrow batch of the inventory's schema and decoded back from the data
//! files a commit rewrites.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Int32Builder, Int64Builder, MapBuilder, MapFieldNames, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, MapArray, RecordBatch};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tidemark_core::codec::view::EventView;
use tidemark_core::event::{ObjectEvent, StringMap};

use super::schema::{self, INVENTORY, Kind};
use crate::{Error, Result};

/// One live object.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct InvRow {
    pub key: String,
    pub sequence: i64,
    pub version_id: Option<String>,
    pub size: i64,
    pub last_modified: i64,
    pub etag: Option<String>,
    pub storage_class: Option<String>,
    pub multipart: bool,
    pub content_type: Option<String>,
    pub sha256: Option<String>,
    pub tags: StringMap,
    pub metadata: StringMap,
    pub partition: u32,
    pub offset: u64,
}

impl InvRow {
    /// The object after `e` (read from `partition` at `offset`); `None` when it is gone.
    pub fn after(e: &EventView<'_>, partition: u32, offset: u64) -> Option<InvRow> {
        let size = e.size?;
        let owned = |s: Option<&str>| s.map(str::to_owned);
        Some(InvRow {
            key: e.key.to_owned(),
            sequence: e.sequence,
            version_id: owned(e.version_id),
            size,
            last_modified: e.event_time,
            etag: owned(e.etag),
            storage_class: owned(e.storage_class),
            multipart: schema::is_multipart(e.event_type, e.etag),
            content_type: owned(e.content_type),
            sha256: owned(e.sha256),
            tags: e.tags.to_map(),
            metadata: e.metadata.to_map(),
            partition,
            offset,
        })
    }

    /// [`InvRow::after`] an owned event, its strings and maps moved rather than copied; with
    /// the event's bucket.
    pub fn from_event(e: ObjectEvent, partition: u32, offset: u64) -> Option<(String, InvRow)> {
        let size = e.size?;
        let multipart = schema::is_multipart(e.event_type, e.etag.as_deref());
        let row = InvRow {
            key: e.key,
            sequence: e.sequence,
            version_id: e.version_id,
            size,
            last_modified: e.event_time,
            etag: e.etag,
            storage_class: e.storage_class,
            multipart,
            content_type: e.content_type,
            sha256: e.sha256,
            tags: e.tags,
            metadata: e.metadata,
            partition,
            offset,
        };
        Some((e.bucket, row))
    }
}

type StringMapBuilder = MapBuilder<StringBuilder, StringBuilder>;

fn map_builder(name: &str) -> StringMapBuilder {
    let Some(Kind::Map(k, v)) = INVENTORY.iter().find(|c| c.name == name).map(|c| c.kind) else {
        unreachable!("{name} is a map column")
    };
    let (key, value) = schema::map_fields(k, v);
    let names = MapFieldNames {
        entry: "key_value".into(),
        key: "key".into(),
        value: "value".into(),
    };
    MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new())
        .with_keys_field(key)
        .with_values_field(value)
}

fn push_map(b: &mut StringMapBuilder, m: &StringMap) {
    for (k, v) in m {
        b.keys().append_value(k);
        b.values().append_value(v);
    }
    b.append(true).expect("keys and values are pushed in pairs");
}

/// The inventory batch of `rows`, all of `bucket`.
pub(super) fn batch(bucket: &str, rows: &[&InvRow]) -> Result<RecordBatch> {
    let n = rows.len();
    let mut s: [StringBuilder; 9] = std::array::from_fn(|_| StringBuilder::new());
    let mut delete_marker = BooleanBuilder::with_capacity(n);
    let mut multipart = BooleanBuilder::with_capacity(n);
    let mut size = Int64Builder::with_capacity(n);
    let mut modified = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut partition = Int32Builder::with_capacity(n);
    let mut offset = Int64Builder::with_capacity(n);
    let mut tags = map_builder("object_tags");
    let mut metadata = map_builder("user_metadata");
    for r in rows {
        let values: [Option<&str>; 9] = [
            Some(bucket),
            Some(&r.key),
            None, // sequence_number, below
            r.version_id.as_deref(),
            r.etag.as_deref(),
            r.storage_class.as_deref(),
            r.sha256.as_ref().map(|_| "SHA256"),
            r.content_type.as_deref(),
            r.sha256.as_deref(),
        ];
        for (b, v) in s.iter_mut().zip(values) {
            b.append_option(v);
        }
        delete_marker.append_value(false);
        multipart.append_value(r.multipart);
        size.append_value(r.size);
        modified.append_value(r.last_modified);
        partition.append_value(i32::try_from(r.partition).unwrap_or(i32::MAX));
        offset.append_value(i64::try_from(r.offset).unwrap_or(i64::MAX));
        push_map(&mut tags, &r.tags);
        push_map(&mut metadata, &r.metadata);
    }
    let mut sequence = StringBuilder::with_capacity(n, n * 20);
    let mut digits = String::with_capacity(20);
    for r in rows {
        use std::fmt::Write;
        digits.clear();
        write!(digits, "{:020}", r.sequence).expect("writing to a String cannot fail");
        sequence.append_value(&digits);
    }
    let [
        bucket_col,
        key,
        _,
        version,
        etag,
        class,
        checksum,
        content_type,
        sha256,
    ] = s.map(|mut b| Arc::new(b.finish()) as ArrayRef);
    // In the order of `INVENTORY`.
    let columns: Vec<ArrayRef> = vec![
        bucket_col,
        key,
        Arc::new(sequence.finish()),
        version,
        Arc::new(delete_marker.finish()),
        Arc::new(size.finish()),
        Arc::new(modified.finish()),
        etag,
        class,
        Arc::new(multipart.finish()),
        checksum,
        Arc::new(tags.finish()),
        Arc::new(metadata.finish()),
        content_type,
        sha256,
        Arc::new(partition.finish()),
        Arc::new(offset.finish()),
    ];
    RecordBatch::try_new(schema::inventory_arrow(), columns)
        .map_err(|e| Error::Transient(format!("building inventory rows: {e}")))
}

/// The rows of an inventory data file (as [`batch`] wrote it).
pub(super) fn read_file(bytes: Bytes) -> Result<Vec<InvRow>> {
    let bad = |e: &dyn std::fmt::Display| {
        Error::Transient(format!("reading an inventory data file: {e}"))
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| bad(&e))?
        .build()
        .map_err(|e| bad(&e))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(&e))?;
        decode(&batch, &mut out).map_err(|e| bad(&e))?;
    }
    Ok(out)
}

fn decode(batch: &RecordBatch, out: &mut Vec<InvRow>) -> std::result::Result<(), String> {
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| format!("no column {name}"))
    };
    let string = |name: &str| col(name).map(|c| c.as_string::<i32>().clone());
    let (key, sequence, version) = (
        string("key")?,
        string("sequence_number")?,
        string("version_id")?,
    );
    let (etag, class) = (string("e_tag")?, string("storage_class")?);
    let (content_type, sha256) = (string("content_type")?, string("sha256")?);
    let size = col("size")?.as_primitive::<Int64Type>().clone();
    let modified = col("last_modified_date")?
        .as_primitive::<TimestampMicrosecondType>()
        .clone();
    let multipart = col("is_multipart")?.as_boolean().clone();
    let partition = col("log_partition")?.as_primitive::<Int32Type>().clone();
    let offset = col("log_offset")?.as_primitive::<Int64Type>().clone();
    let tags: MapArray = col("object_tags")?.as_map().clone();
    let metadata: MapArray = col("user_metadata")?.as_map().clone();
    let opt =
        |a: &arrow_array::StringArray, i: usize| a.is_valid(i).then(|| a.value(i).to_string());
    let map = |a: &MapArray, i: usize| -> StringMap {
        let entries = a.value(i);
        let (k, v) = (
            entries.column(0).as_string::<i32>(),
            entries.column(1).as_string::<i32>(),
        );
        (0..entries.len())
            .map(|j| (k.value(j).to_string(), v.value(j).to_string()))
            .collect()
    };
    for i in 0..batch.num_rows() {
        out.push(InvRow {
            key: key.value(i).to_string(),
            sequence: sequence
                .value(i)
                .parse()
                .map_err(|_| format!("sequence_number '{}'", sequence.value(i)))?,
            version_id: opt(&version, i),
            size: size.value(i),
            last_modified: modified.value(i),
            etag: opt(&etag, i),
            storage_class: opt(&class, i),
            multipart: multipart.value(i),
            content_type: opt(&content_type, i),
            sha256: opt(&sha256, i),
            tags: map(&tags, i),
            metadata: map(&metadata, i),
            partition: u32::try_from(partition.value(i)).unwrap_or(0),
            offset: u64::try_from(offset.value(i)).unwrap_or(0),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iceberg::datafile;
    use crate::lake::columns::tests::varied_events;

    #[test]
    fn rows_round_trip_through_a_data_file() {
        let events = varied_events();
        let rows: Vec<InvRow> = events
            .iter()
            .enumerate()
            .filter_map(|(i, e)| InvRow::after(&EventView::of(e), 2, i as u64))
            .collect();
        assert!(!rows.is_empty());
        let refs: Vec<&InvRow> = rows.iter().collect();
        let (bytes, _) = datafile::encode(
            &batch("b", &refs).unwrap(),
            datafile::Format {
                zstd_level: crate::iceberg::DEFAULT_ZSTD_LEVEL,
                page_bytes: crate::iceberg::NEW_TABLE_PAGE_BYTES,
            },
        )
        .unwrap();
        assert_eq!(read_file(Bytes::from(bytes)).unwrap(), rows);
    }

    #[test]
    fn a_row_from_an_owned_event_is_the_row_after_its_view() {
        for (i, e) in varied_events().into_iter().enumerate() {
            let after = InvRow::after(&EventView::of(&e), 1, i as u64);
            let bucket = e.bucket.clone();
            let owned = InvRow::from_event(e, 1, i as u64);
            assert_eq!(owned, after.map(|row| (bucket, row)));
        }
    }
}
