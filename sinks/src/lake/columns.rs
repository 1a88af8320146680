//! The lake's column mapping: one row per event ([`EventView`], a record's borrowed view), the object after the change in the
//! top-level columns and before it in the `previous_*` columns, then the event's place in the
//! log.
//!
//! | column | Arrow type | null when |
//! | --- | --- | --- |
//! | `event_id` | Utf8 (UUID text, lower case, hyphenated) | never |
//! | `event_type` | Utf8 (`ObjectCreated:Put`) | never |
//! | `event_time` | Timestamp(µs, "UTC") | never |
//! | `bucket`, `key` | Utf8 | never |
//! | `version_id` | Utf8 | unversioned |
//! | `sequence` | Int64 | never |
//! | `size` | Int64 | the object no longer exists |
//! | `etag`, `content_type`, `sha256` | Utf8 | unknown |
//! | `metadata`, `tags` | Map<Utf8, Utf8> | never (empty map) |
//! | `storage_class`, `requester`, `source_ip`, `request_id`, `region`, `node` | Utf8 | unknown |
//! | `previous_version_id` … `previous_last_modified` | as above | no previous object |
//! | `log_partition` | Int32 | never |
//! | `log_offset` | Int64 | never |
//! | `user_agent` | Utf8 (event schema version 2) | unknown, or written before version 2 |
//! | `headers` | Map<Utf8, Utf8> (event schema version 3): the object's standard headers | never (empty map) |
//! | `checksum` | Utf8 (v3): `ALGORITHM:base64` | none verified at upload |
//! | `part_sizes` | List<Int64> (v3): a multipart object's part sizes | not multipart |
//! | `removed_version_id` | Utf8 (v3): the version an `ObjectRemoved:Delete` removed for good | any other event |
//!
//! Maps use the Parquet spec's `key_value`/`key`/`value` names so every reader sees the
//! canonical MAP layout.

use std::sync::{Arc, LazyLock};

use arrow_array::RecordBatch;
use arrow_array::builder::{
    Int32Builder, Int64Builder, ListBuilder, MapBuilder, MapFieldNames, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use tidemark_core::codec::view::{EventView, MapView};
use tidemark_core::event::ObjectEvent;

const UTC: &str = "UTC";
const MAP_ENTRIES: &str = "key_value";
const MAP_KEY: &str = "key";
const MAP_VALUE: &str = "value";

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

fn map_key_field() -> Arc<Field> {
    Arc::new(Field::new(MAP_KEY, DataType::Utf8, false))
}

fn map_value_field() -> Arc<Field> {
    Arc::new(Field::new(MAP_VALUE, DataType::Utf8, true))
}

/// The items of `part_sizes`, named as Parquet's LIST spec names them.
fn list_item_field() -> Arc<Field> {
    Arc::new(Field::new("element", DataType::Int64, false))
}

/// Exactly the type [`MapBuilder`] produces with our field names, so `finish` type-checks.
fn string_map() -> DataType {
    let entries = Fields::from(vec![map_key_field(), map_value_field()]);
    DataType::Map(
        Arc::new(Field::new(MAP_ENTRIES, DataType::Struct(entries), false)),
        false,
    )
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utf8 = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let int64 = |name: &str, nullable: bool| Field::new(name, DataType::Int64, nullable);
    Arc::new(Schema::new(vec![
        utf8("event_id", false),
        utf8("event_type", false),
        Field::new("event_time", timestamp(), false),
        utf8("bucket", false),
        utf8("key", false),
        utf8("version_id", true),
        int64("sequence", false),
        int64("size", true),
        utf8("etag", true),
        utf8("content_type", true),
        utf8("sha256", true),
        Field::new("metadata", string_map(), false),
        Field::new("tags", string_map(), false),
        utf8("storage_class", true),
        utf8("requester", true),
        utf8("source_ip", true),
        utf8("request_id", true),
        utf8("region", true),
        utf8("node", true),
        utf8("previous_version_id", true),
        int64("previous_sequence", true),
        int64("previous_size", true),
        utf8("previous_etag", true),
        utf8("previous_content_type", true),
        utf8("previous_sha256", true),
        Field::new("previous_metadata", string_map(), true),
        Field::new("previous_tags", string_map(), true),
        utf8("previous_storage_class", true),
        Field::new("previous_last_modified", timestamp(), true),
        Field::new("log_partition", DataType::Int32, false),
        int64("log_offset", false),
        utf8("user_agent", true),
        Field::new("headers", string_map(), false),
        utf8("checksum", true),
        Field::new("part_sizes", DataType::List(list_item_field()), true),
        utf8("removed_version_id", true),
    ]))
});

/// The Arrow schema of a lake file (built once; cloning is an `Arc` bump).
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

type StringMapBuilder = MapBuilder<StringBuilder, StringBuilder>;

fn map_builder(rows: usize) -> StringMapBuilder {
    let names = MapFieldNames {
        entry: MAP_ENTRIES.into(),
        key: MAP_KEY.into(),
        value: MAP_VALUE.into(),
    };
    // Most objects carry a couple of metadata entries; builders grow past that on their own.
    let entries = rows * 2;
    MapBuilder::with_capacity(
        Some(names),
        StringBuilder::with_capacity(entries, entries * 8),
        StringBuilder::with_capacity(entries, entries * 8),
        rows,
    )
    .with_keys_field(map_key_field())
    .with_values_field(map_value_field())
}

/// Fixed-width bytes of one row: event_time, sequence, size, previous_sequence,
/// previous_size, previous_last_modified, log_offset (8 each) and log_partition (4).
const FIXED_ROW_BYTES: usize = 7 * 8 + 4;

/// Column builders for one record batch of events.
pub struct Rows {
    event_id: StringBuilder,
    event_type: StringBuilder,
    event_time: TimestampMicrosecondBuilder,
    bucket: StringBuilder,
    key: StringBuilder,
    version_id: StringBuilder,
    sequence: Int64Builder,
    size: Int64Builder,
    etag: StringBuilder,
    content_type: StringBuilder,
    sha256: StringBuilder,
    metadata: StringMapBuilder,
    tags: StringMapBuilder,
    storage_class: StringBuilder,
    requester: StringBuilder,
    source_ip: StringBuilder,
    request_id: StringBuilder,
    region: StringBuilder,
    node: StringBuilder,
    previous_version_id: StringBuilder,
    previous_sequence: Int64Builder,
    previous_size: Int64Builder,
    previous_etag: StringBuilder,
    previous_content_type: StringBuilder,
    previous_sha256: StringBuilder,
    previous_metadata: StringMapBuilder,
    previous_tags: StringMapBuilder,
    previous_storage_class: StringBuilder,
    previous_last_modified: TimestampMicrosecondBuilder,
    log_partition: Int32Builder,
    log_offset: Int64Builder,
    user_agent: StringBuilder,
    headers: StringMapBuilder,
    checksum: StringBuilder,
    part_sizes: ListBuilder<Int64Builder>,
    removed_version_id: StringBuilder,
    rows: usize,
    bytes: usize,
}

impl Default for Rows {
    fn default() -> Self {
        Rows::new()
    }
}

impl Rows {
    /// Small builders that grow as rows come: a segment may hold many directories, each with
    /// its own `Rows`, so reserving much up front would multiply.
    pub fn new() -> Rows {
        Rows::with_capacity(16)
    }

    /// Builders sized for `rows` events, so a batch of known size never reallocates its
    /// offsets and fixed-width columns.
    pub fn with_capacity(rows: usize) -> Rows {
        // Byte guesses per value for the string columns; only a starting size.
        let s = |bytes_per_row: usize| StringBuilder::with_capacity(rows, rows * bytes_per_row);
        let ts = || TimestampMicrosecondBuilder::with_capacity(rows).with_timezone(UTC);
        Rows {
            event_id: s(36),
            event_type: s(20),
            event_time: ts(),
            bucket: s(16),
            key: s(48),
            version_id: s(32),
            sequence: Int64Builder::with_capacity(rows),
            size: Int64Builder::with_capacity(rows),
            etag: s(34),
            content_type: s(16),
            sha256: s(16),
            metadata: map_builder(rows),
            tags: map_builder(rows),
            storage_class: s(8),
            requester: s(32),
            source_ip: s(12),
            request_id: s(24),
            region: s(10),
            node: s(8),
            previous_version_id: s(32),
            previous_sequence: Int64Builder::with_capacity(rows),
            previous_size: Int64Builder::with_capacity(rows),
            previous_etag: s(34),
            previous_content_type: s(16),
            previous_sha256: s(16),
            previous_metadata: map_builder(rows),
            previous_tags: map_builder(rows),
            previous_storage_class: s(8),
            previous_last_modified: ts(),
            log_partition: Int32Builder::with_capacity(rows),
            log_offset: Int64Builder::with_capacity(rows),
            user_agent: s(16),
            headers: map_builder(rows / 8),
            checksum: s(8),
            part_sizes: ListBuilder::new(Int64Builder::new()).with_field(list_item_field()),
            removed_version_id: s(2),
            rows: 0,
            bytes: 0,
        }
    }

    /// Append one event read from `partition` at `offset`.
    pub fn push(&mut self, e: &ObjectEvent, partition: u32, offset: u64) {
        self.push_view(&EventView::of(e), partition, offset);
    }

    /// Append one event, straight from a view of its record (no [`ObjectEvent`] is built).
    pub fn push_view(&mut self, e: &EventView<'_>, partition: u32, offset: u64) {
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        self.event_id
            .append_value(e.event_id.hyphenated().encode_lower(&mut id));
        let event_type = e.event_type.as_str();
        self.event_type.append_value(event_type);
        self.event_time.append_value(e.event_time);
        self.bucket.append_value(e.bucket);
        self.key.append_value(e.key);
        self.sequence.append_value(e.sequence);
        self.size.append_option(e.size);
        self.log_partition.append_value(partition_i32(partition));
        self.log_offset.append_value(offset_i64(offset));

        let mut bytes =
            FIXED_ROW_BYTES + id.len() + event_type.len() + e.bucket.len() + e.key.len();
        bytes += opt(&mut self.version_id, e.version_id);
        bytes += opt(&mut self.etag, e.etag);
        bytes += opt(&mut self.content_type, e.content_type);
        bytes += opt(&mut self.sha256, e.sha256);
        bytes += opt(&mut self.user_agent, e.user_agent);
        bytes += map(&mut self.metadata, Some(e.metadata));
        bytes += map(&mut self.tags, Some(e.tags));
        bytes += opt(&mut self.storage_class, e.storage_class);
        bytes += opt(&mut self.requester, e.requester);
        bytes += opt(&mut self.source_ip, e.source_ip);
        bytes += opt(&mut self.request_id, e.request_id);
        bytes += opt(&mut self.region, e.region);
        bytes += opt(&mut self.node, e.node);
        bytes += map(&mut self.headers, Some(e.headers));
        bytes += opt(&mut self.checksum, e.checksum);
        bytes += opt(&mut self.removed_version_id, e.removed_version_id);
        match &e.part_sizes {
            Some(sizes) => {
                self.part_sizes.values().append_slice(sizes);
                self.part_sizes.append(true);
                bytes += sizes.len() * 8;
            }
            None => self.part_sizes.append(false),
        }

        match &e.previous {
            Some(p) => {
                bytes += opt(&mut self.previous_version_id, p.version_id);
                self.previous_sequence.append_value(p.sequence);
                self.previous_size.append_value(p.size);
                bytes += opt(&mut self.previous_etag, p.etag);
                bytes += opt(&mut self.previous_content_type, p.content_type);
                bytes += opt(&mut self.previous_sha256, p.sha256);
                bytes += map(&mut self.previous_metadata, Some(p.metadata));
                bytes += map(&mut self.previous_tags, Some(p.tags));
                bytes += opt(&mut self.previous_storage_class, p.storage_class);
                self.previous_last_modified.append_value(p.last_modified);
            }
            None => {
                self.previous_version_id.append_null();
                self.previous_sequence.append_null();
                self.previous_size.append_null();
                self.previous_etag.append_null();
                self.previous_content_type.append_null();
                self.previous_sha256.append_null();
                map(&mut self.previous_metadata, None);
                map(&mut self.previous_tags, None);
                self.previous_storage_class.append_null();
                self.previous_last_modified.append_null();
            }
        }
        self.rows += 1;
        self.bytes += bytes;
    }

    /// Rows pushed so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The plain (unencoded, uncompressed) size of the rows pushed so far: the bytes of every
    /// string value plus the fixed-width columns. Counted from the events alone, never from
    /// buffer capacities, so the same events always give the same number and rolling on it
    /// is deterministic. Dictionary encoding and compression make files several times smaller.
    pub fn approx_bytes(&self) -> usize {
        self.bytes
    }

    /// The batch of all rows pushed, in push order.
    pub fn finish(mut self) -> RecordBatch {
        let columns: Vec<arrow_array::ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.event_type.finish()),
            Arc::new(self.event_time.finish()),
            Arc::new(self.bucket.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.version_id.finish()),
            Arc::new(self.sequence.finish()),
            Arc::new(self.size.finish()),
            Arc::new(self.etag.finish()),
            Arc::new(self.content_type.finish()),
            Arc::new(self.sha256.finish()),
            Arc::new(self.metadata.finish()),
            Arc::new(self.tags.finish()),
            Arc::new(self.storage_class.finish()),
            Arc::new(self.requester.finish()),
            Arc::new(self.source_ip.finish()),
            Arc::new(self.request_id.finish()),
            Arc::new(self.region.finish()),
            Arc::new(self.node.finish()),
            Arc::new(self.previous_version_id.finish()),
            Arc::new(self.previous_sequence.finish()),
            Arc::new(self.previous_size.finish()),
            Arc::new(self.previous_etag.finish()),
            Arc::new(self.previous_content_type.finish()),
            Arc::new(self.previous_sha256.finish()),
            Arc::new(self.previous_metadata.finish()),
            Arc::new(self.previous_tags.finish()),
            Arc::new(self.previous_storage_class.finish()),
            Arc::new(self.previous_last_modified.finish()),
            Arc::new(self.log_partition.finish()),
            Arc::new(self.log_offset.finish()),
            Arc::new(self.user_agent.finish()),
            Arc::new(self.headers.finish()),
            Arc::new(self.checksum.finish()),
            Arc::new(self.part_sizes.finish()),
            Arc::new(self.removed_version_id.finish()),
        ];
        // Every builder gets exactly one value per push and its type is the schema's
        // (the unit tests check both), so this cannot fail.
        RecordBatch::try_new(schema(), columns).expect("lake columns match schema()")
    }
}

/// Log partitions are Kafka's `i32` and offsets its `i64`, so these never saturate in
/// practice; saturating keeps a corrupt value from wrapping negative.
fn partition_i32(partition: u32) -> i32 {
    i32::try_from(partition).unwrap_or(i32::MAX)
}

fn offset_i64(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}

fn opt(b: &mut StringBuilder, v: Option<&str>) -> usize {
    match v {
        Some(s) => {
            b.append_value(s);
            s.len()
        }
        None => {
            b.append_null();
            0
        }
    }
}

/// Append a map (or a null map for `None`); returns the bytes of its keys and values.
fn map(b: &mut StringMapBuilder, m: Option<MapView<'_>>) -> usize {
    let mut bytes = 0;
    if let Some(m) = m {
        for (k, v) in m.iter() {
            b.keys().append_value(k);
            b.values().append_value(v);
            bytes += k.len() + v.len();
        }
    }
    // Only fails when keys and values differ in length, and they are pushed in pairs.
    b.append(m.is_some())
        .expect("map keys and values are pushed in pairs");
    bytes
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, Int64Type, TimestampMicrosecondType};
    use arrow_array::{Array, MapArray};
    use tidemark_core::codec::{object_event, view};
    use tidemark_core::event::{EventType, ObjectState, StringMap, sample_event};
    use uuid::Uuid;

    /// Events covering the shapes that matter: with and without previous, empty and
    /// non-empty maps, a removal (size None), all-null optional fields.
    pub(crate) fn varied_events() -> Vec<ObjectEvent> {
        let mut out = Vec::new();
        // A put with previous, metadata, tags, request context.
        out.push(sample_event(1));
        out.push(sample_event(2));
        // A first put: no previous, empty maps, most optionals unknown.
        let mut first = ObjectEvent::new(
            Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00aa),
            EventType::ObjectCreatedPut,
            1_795_356_000_000_001,
            "docs".into(),
            "a/b=c/ünïcode key.txt".into(),
            1,
            Some(ObjectState {
                size: 0,
                ..ObjectState::default()
            }),
        );
        first.etag = Some("\"d41d8cd98f00b204e9800998ecf8427e\"".into());
        // Event schema v3's fields.
        first.headers = StringMap::from([("cache-control".into(), "max-age=5".into())]);
        first.checksum = Some("CRC32:AAAAAA==".into());
        first.part_sizes = Some(vec![0]);
        out.push(first);
        // A removal: size None, previous present with an empty map and a non-empty one.
        let mut removed = ObjectEvent::new(
            Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00bb),
            EventType::ObjectRemovedDelete,
            1_795_356_000_500_000,
            "docs".into(),
            "a/b=c/ünïcode key.txt".into(),
            2,
            None,
        );
        removed.previous = Some(ObjectState {
            version_id: None,
            sequence: 1,
            size: 0,
            etag: Some("\"d41d8cd98f00b204e9800998ecf8427e\"".into()),
            content_type: None,
            sha256: Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into()),
            metadata: StringMap::new(),
            tags: StringMap::from([("k".into(), "".into()), ("z".into(), "last".into())]),
            storage_class: Some("GLACIER".into()),
            last_modified: -1, // before the epoch still round-trips
            headers: Default::default(),
            checksum: None,
            part_sizes: None,
        });
        removed.requester = Some("anonymous".into());
        removed.removed_version_id = Some("v0".into());
        out.push(removed);
        // A bucket event: nothing but the required fields.
        out.push(ObjectEvent::new(
            Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00cc),
            EventType::BucketCreated,
            0,
            "new-bucket".into(),
            String::new(),
            0,
            None,
        ));
        out
    }

    fn string_at(a: &dyn Array, i: usize) -> Option<String> {
        let a = a.as_string::<i32>();
        a.is_valid(i).then(|| a.value(i).to_string())
    }

    fn i64_at(a: &dyn Array, i: usize) -> Option<i64> {
        let a = a.as_primitive::<Int64Type>();
        a.is_valid(i).then(|| a.value(i))
    }

    fn ts_at(a: &dyn Array, i: usize) -> Option<i64> {
        let a = a.as_primitive::<TimestampMicrosecondType>();
        a.is_valid(i).then(|| a.value(i))
    }

    fn map_at(a: &dyn Array, i: usize) -> Option<StringMap> {
        let a: &MapArray = a.as_map();
        if a.is_null(i) {
            return None;
        }
        let entries = a.value(i);
        let keys = entries.column(0).as_string::<i32>();
        let values = entries.column(1).as_string::<i32>();
        Some(
            (0..entries.len())
                .map(|j| (keys.value(j).to_string(), values.value(j).to_string()))
                .collect(),
        )
    }

    /// Rebuild the events (and their log positions) from a batch: the inverse of `push`.
    pub(crate) fn events_of(batch: &RecordBatch) -> Vec<(ObjectEvent, u32, u64)> {
        let c = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap_or_else(|| panic!("column {name}"))
                .as_ref()
        };
        (0..batch.num_rows())
            .map(|i| {
                let s = |name: &str| string_at(c(name), i);
                let previous = i64_at(c("previous_sequence"), i).map(|sequence| ObjectState {
                    version_id: s("previous_version_id"),
                    sequence,
                    size: i64_at(c("previous_size"), i).unwrap(),
                    etag: s("previous_etag"),
                    content_type: s("previous_content_type"),
                    sha256: s("previous_sha256"),
                    metadata: map_at(c("previous_metadata"), i).unwrap(),
                    tags: map_at(c("previous_tags"), i).unwrap(),
                    storage_class: s("previous_storage_class"),
                    last_modified: ts_at(c("previous_last_modified"), i).unwrap(),
                    headers: Default::default(),
                    checksum: None,
                    part_sizes: None,
                });
                let e = ObjectEvent {
                    event_id: s("event_id").unwrap().parse().unwrap(),
                    event_type: EventType::parse(&s("event_type").unwrap()).unwrap(),
                    event_time: ts_at(c("event_time"), i).unwrap(),
                    bucket: s("bucket").unwrap(),
                    key: s("key").unwrap(),
                    version_id: s("version_id"),
                    sequence: i64_at(c("sequence"), i).unwrap(),
                    size: i64_at(c("size"), i),
                    etag: s("etag"),
                    content_type: s("content_type"),
                    sha256: s("sha256"),
                    metadata: map_at(c("metadata"), i).unwrap(),
                    tags: map_at(c("tags"), i).unwrap(),
                    storage_class: s("storage_class"),
                    requester: s("requester"),
                    source_ip: s("source_ip"),
                    request_id: s("request_id"),
                    region: s("region"),
                    node: s("node"),
                    previous,
                    user_agent: s("user_agent"),
                    headers: map_at(c("headers"), i).unwrap(),
                    checksum: s("checksum"),
                    part_sizes: {
                        let a = c("part_sizes").as_list::<i32>();
                        (!a.is_null(i)).then(|| {
                            let v = a.value(i);
                            let v = v.as_primitive::<arrow_array::types::Int64Type>();
                            v.values().to_vec()
                        })
                    },
                    removed_version_id: s("removed_version_id"),
                };
                let partition = c("log_partition").as_primitive::<Int32Type>().value(i);
                let offset = i64_at(c("log_offset"), i).unwrap();
                (e, partition as u32, offset as u64)
            })
            .collect()
    }

    pub(crate) fn batch_of(events: &[ObjectEvent]) -> RecordBatch {
        let mut rows = Rows::new();
        for (i, e) in events.iter().enumerate() {
            rows.push(e, 3, 120 + i as u64);
        }
        rows.finish()
    }

    #[test]
    fn schema_has_the_documented_columns_in_order() {
        let s = schema();
        let names: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "event_id",
                "event_type",
                "event_time",
                "bucket",
                "key",
                "version_id",
                "sequence",
                "size",
                "etag",
                "content_type",
                "sha256",
                "metadata",
                "tags",
                "storage_class",
                "requester",
                "source_ip",
                "request_id",
                "region",
                "node",
                "previous_version_id",
                "previous_sequence",
                "previous_size",
                "previous_etag",
                "previous_content_type",
                "previous_sha256",
                "previous_metadata",
                "previous_tags",
                "previous_storage_class",
                "previous_last_modified",
                "log_partition",
                "log_offset",
                "user_agent",
                "headers",
                "checksum",
                "part_sizes",
                "removed_version_id",
            ]
        );
        let required: Vec<&str> = s
            .fields()
            .iter()
            .filter(|f| !f.is_nullable())
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(
            required,
            [
                "event_id",
                "event_type",
                "event_time",
                "bucket",
                "key",
                "sequence",
                "metadata",
                "tags",
                "log_partition",
                "log_offset",
                "headers"
            ]
        );
        assert_eq!(
            s.field_with_name("event_time").unwrap().data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert!(Arc::ptr_eq(&schema(), &schema()));
    }

    #[test]
    fn rows_round_trip_through_arrow() {
        let events = varied_events();
        let batch = batch_of(&events);
        assert_eq!(batch.num_rows(), events.len());
        assert_eq!(batch.schema(), schema());
        let back = events_of(&batch);
        for (i, (e, partition, offset)) in back.into_iter().enumerate() {
            assert_eq!(e, events[i]);
            assert_eq!((partition, offset), (3, 120 + i as u64));
        }
        // Maps are never null at the top level, only empty.
        let tags = batch.column_by_name("tags").unwrap();
        assert_eq!(tags.null_count(), 0);
        assert_eq!(map_at(tags.as_ref(), 2), Some(StringMap::new()));
    }

    #[test]
    fn rows_from_record_views_equal_rows_from_decoded_events() {
        let events = varied_events();
        let records: Vec<Vec<u8>> = events
            .iter()
            .map(|e| {
                let mut buf = Vec::new();
                object_event::encode(e, &mut buf);
                buf
            })
            .collect();
        let mut rows = Rows::new();
        for (i, r) in records.iter().enumerate() {
            let view = view::read(r).unwrap().expect("our encoder's layout");
            rows.push_view(&view, 3, 120 + i as u64);
        }
        let from_events = Rows::with_capacity(1);
        let mut from_events = from_events;
        for (i, e) in events.iter().enumerate() {
            from_events.push(e, 3, 120 + i as u64);
        }
        assert_eq!(rows.approx_bytes(), from_events.approx_bytes());
        assert_eq!(rows.finish(), from_events.finish());
    }

    #[test]
    fn empty_rows_make_an_empty_batch() {
        let rows = Rows::new();
        assert!(rows.is_empty());
        assert_eq!(rows.approx_bytes(), 0);
        let batch = rows.finish();
        assert_eq!(batch.num_rows(), 0);
        assert_eq!(batch.num_columns(), 36);
    }

    #[test]
    fn approx_bytes_depends_only_on_the_events() {
        let events = varied_events();
        let mut small = Rows::with_capacity(1);
        let mut big = Rows::with_capacity(100_000);
        for e in &events {
            small.push(e, 0, 1);
            big.push(e, 7, 99);
        }
        assert_eq!(small.len(), events.len());
        assert_eq!(small.approx_bytes(), big.approx_bytes());
        // The bucket event: fixed widths, the id, type and bucket name and nothing else.
        let mut one = Rows::new();
        one.push(&events[4], 0, 0);
        assert_eq!(
            one.approx_bytes(),
            FIXED_ROW_BYTES + 36 + "BucketCreated".len() + "new-bucket".len()
        );
        // Strictly more data, strictly more bytes.
        assert!(small.approx_bytes() > one.approx_bytes() * events.len());
    }

    #[test]
    fn log_positions_saturate_instead_of_wrapping() {
        assert_eq!(partition_i32(u32::MAX), i32::MAX);
        assert_eq!(offset_i64(u64::MAX), i64::MAX);
        assert_eq!(offset_i64(42), 42);
    }
}
