//! The journal table's columns, declared once and turned into both the Iceberg schema (for
//! the table's metadata) and the Arrow schema our Parquet writer uses, every field carrying
//! its Iceberg field id (`PARQUET:field_id`), so readers resolve columns by id.
//!
//! The first columns are the AWS S3 Metadata journal table's, under its names, so queries
//! written for it run unchanged; Tidemark's own follow.
//!
//! | id | column | Iceberg type | null when |
//! | ---: | --- | --- | --- |
//! | 1 | `bucket` | string | never |
//! | 2 | `key` | string | never |
//! | 3 | `sequence_number` | string (the key's sequence, 20 digits: sorts as a number) | never |
//! | 4 | `record_type` | string: `CREATE`, `UPDATE_METADATA`, `DELETE` | never |
//! | 5 | `record_timestamp` | timestamptz (the event time) | never |
//! | 6 | `version_id` | string | unversioned |
//! | 7 | `is_delete_marker` | boolean | never |
//! | 8 | `size` | long | the object no longer exists |
//! | 9 | `last_modified_date` | timestamptz | the object no longer exists |
//! | 10 | `e_tag` | string | unknown |
//! | 11 | `storage_class` | string | unknown |
//! | 12 | `is_multipart` | boolean | never |
//! | 13 | `checksum_algorithm` | string (`SHA256` when a SHA-256 is known) | none known |
//! | 14 | `object_tags` | map<string, string> | never (empty) |
//! | 15 | `user_metadata` | map<string, string> | never (empty) |
//! | 16 | `requester` | string | unknown |
//! | 17 | `source_ip_address` | string | unknown |
//! | 18 | `request_id` | string | unknown |
//! | 19 | `event_id` | string (UUID) | never |
//! | 20 | `event_type` | string (`ObjectCreated:Put`) | never |
//! | 21 | `content_type` | string | unknown |
//! | 22 | `sha256` | string | unknown |
//! | 23 | `previous` | struct (the object before the change) | no previous object |
//! | 24 | `log_partition` | int | never |
//! | 25 | `log_offset` | long | never |
//!
//! The maps' keys and values are 26..=29; `previous` holds `version_id`, `size`, `e_tag`,
//! `content_type`, `sha256`, `last_modified_date`, `storage_class`, `user_metadata`,
//! `object_tags` (30..=38, their maps 39..=42). These are the ids Iceberg's fresh-id
//! assignment gives when the table is created (a level's fields, then what they nest), so
//! the table keeps them; [`check_ids`] refuses a table whose ids differ. Ids are never
//! reused: a later schema version only adds columns with new ids.
//!
//! Columns of later event schema versions ([`JOURNAL_ADDED`]) are never part of a table's
//! creation: they are added afterwards by a schema update, in order, and Iceberg gives each
//! the table's next id (the last column id + 1), so a table created before them and one
//! created now end up with the same ids:
//!
//! | id | column | since | |
//! | ---: | --- | --- | --- |
//! | 43 | `user_agent` | event schema v2 | the request's User-Agent; null in rows of older events |
//! | 44 | `removed_version_id` | event schema v3 | the version an `ObjectRemoved:Delete` removed for good |

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arrow_schema::{DataType, Field, Fields, Schema as ArrowSchema, SchemaRef, TimeUnit};
use iceberg::spec::{
    MapType, NestedField, NestedFieldRef, PrimitiveType, Schema, StructType, Transform, Type,
    UnboundPartitionSpec,
};
use tidemark_core::event::EventType;

use crate::{Error, Result};

/// A column's kind, enough to derive both schemas.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Str,
    Long,
    Int,
    Bool,
    /// Microseconds since the epoch, UTC.
    Ts,
    /// map<string, string>: ids of the key and the value.
    Map(i32, i32),
    /// The `previous` struct.
    Previous,
}

pub(super) struct Column {
    pub id: i32,
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
}

const fn col(id: i32, name: &'static str, kind: Kind, required: bool) -> Column {
    Column {
        id,
        name,
        kind,
        required,
    }
}

pub(super) const JOURNAL: &[Column] = &[
    col(1, "bucket", Kind::Str, true),
    col(2, "key", Kind::Str, true),
    col(3, "sequence_number", Kind::Str, true),
    col(4, "record_type", Kind::Str, true),
    col(5, "record_timestamp", Kind::Ts, true),
    col(6, "version_id", Kind::Str, false),
    col(7, "is_delete_marker", Kind::Bool, true),
    col(8, "size", Kind::Long, false),
    col(9, "last_modified_date", Kind::Ts, false),
    col(10, "e_tag", Kind::Str, false),
    col(11, "storage_class", Kind::Str, false),
    col(12, "is_multipart", Kind::Bool, true),
    col(13, "checksum_algorithm", Kind::Str, false),
    col(14, "object_tags", Kind::Map(26, 27), true),
    col(15, "user_metadata", Kind::Map(28, 29), true),
    col(16, "requester", Kind::Str, false),
    col(17, "source_ip_address", Kind::Str, false),
    col(18, "request_id", Kind::Str, false),
    col(19, "event_id", Kind::Str, true),
    col(20, "event_type", Kind::Str, true),
    col(21, "content_type", Kind::Str, false),
    col(22, "sha256", Kind::Str, false),
    col(23, "previous", Kind::Previous, false),
    col(24, "log_partition", Kind::Int, true),
    col(25, "log_offset", Kind::Long, true),
];

/// Journal columns added after the first version, in the order (and so with the ids) a
/// schema update adds them.
pub(super) const JOURNAL_ADDED: &[Column] = &[
    col(43, "user_agent", Kind::Str, false),
    col(44, "removed_version_id", Kind::Str, false),
];

/// The fields of `previous`.
pub(super) const PREVIOUS: &[Column] = &[
    col(30, "version_id", Kind::Str, false),
    col(31, "size", Kind::Long, true),
    col(32, "e_tag", Kind::Str, false),
    col(33, "content_type", Kind::Str, false),
    col(34, "sha256", Kind::Str, false),
    col(35, "last_modified_date", Kind::Ts, true),
    col(36, "storage_class", Kind::Str, false),
    col(37, "user_metadata", Kind::Map(39, 40), true),
    col(38, "object_tags", Kind::Map(41, 42), true),
];

/// The inventory table: one row per live object, its current state (S3 Metadata's inventory
/// columns that apply, then Tidemark's). Maps' keys and values are 18..=21.
pub(super) const INVENTORY: &[Column] = &[
    col(1, "bucket", Kind::Str, true),
    col(2, "key", Kind::Str, true),
    col(3, "sequence_number", Kind::Str, true),
    col(4, "version_id", Kind::Str, false),
    col(5, "is_delete_marker", Kind::Bool, true),
    col(6, "size", Kind::Long, true),
    col(7, "last_modified_date", Kind::Ts, true),
    col(8, "e_tag", Kind::Str, false),
    col(9, "storage_class", Kind::Str, false),
    col(10, "is_multipart", Kind::Bool, true),
    col(11, "checksum_algorithm", Kind::Str, false),
    col(12, "object_tags", Kind::Map(18, 19), true),
    col(13, "user_metadata", Kind::Map(20, 21), true),
    col(14, "content_type", Kind::Str, false),
    col(15, "sha256", Kind::Str, false),
    col(16, "log_partition", Kind::Int, true),
    col(17, "log_offset", Kind::Long, true),
];

/// Hash buckets of the inventory's keys per bucket: a commit rewrites only the (bucket, hash
/// bucket) partitions whose keys changed.
pub(super) const KEY_BUCKETS: u32 = 16;

fn iceberg_type(kind: Kind) -> Type {
    let p = |t| Type::Primitive(t);
    match kind {
        Kind::Str => p(PrimitiveType::String),
        Kind::Long => p(PrimitiveType::Long),
        Kind::Int => p(PrimitiveType::Int),
        Kind::Bool => p(PrimitiveType::Boolean),
        Kind::Ts => p(PrimitiveType::Timestamptz),
        Kind::Map(k, v) => Type::Map(MapType::optional(
            k,
            p(PrimitiveType::String),
            v,
            p(PrimitiveType::String),
        )),
        Kind::Previous => Type::Struct(StructType::new(nested(PREVIOUS))),
    }
}

fn nested(columns: &[Column]) -> Vec<NestedFieldRef> {
    columns
        .iter()
        .map(|c| {
            let t = iceberg_type(c.kind);
            Arc::new(match c.required {
                true => NestedField::required(c.id, c.name, t),
                false => NestedField::optional(c.id, c.name, t),
            })
        })
        .collect()
}

/// The journal's Iceberg schema as a table is created with it (the added columns come by
/// schema updates, [`JOURNAL_ADDED`]).
pub(super) fn journal_schema() -> Result<Schema> {
    iceberg_schema(JOURNAL)
}

/// The Iceberg type of an added column.
pub(super) fn column_type(c: &Column) -> Type {
    iceberg_type(c.kind)
}

/// The inventory's Iceberg schema.
pub(super) fn inventory_schema() -> Result<Schema> {
    iceberg_schema(INVENTORY)
}

fn iceberg_schema(columns: &[Column]) -> Result<Schema> {
    Schema::builder()
        .with_schema_id(0)
        .with_fields(nested(columns))
        .build()
        .map_err(|e| Error::Transient(format!("building a table schema: {e}")))
}

/// Partitioned by bucket and a hash bucket of the key (Iceberg's `bucket[16]`).
pub(super) fn inventory_partitioning() -> Result<UnboundPartitionSpec> {
    UnboundPartitionSpec::builder()
        .add_partition_field(1, "bucket", Transform::Identity)
        .and_then(|b| b.add_partition_field(2, "key_bucket", Transform::Bucket(KEY_BUCKETS)))
        .map(|b| b.build())
        .map_err(|e| Error::Transient(format!("building the inventory partitioning: {e}")))
}

/// Iceberg's `bucket[N]` of a string: 32-bit murmur3 of its UTF-8 bytes, sign bit cleared.
/// `is_multipart` of both tables: the object came from a multipart upload (completed, or
/// copied with a multipart ETag, which has a `-<parts>` suffix).
pub(super) fn is_multipart(event_type: EventType, etag: Option<&str>) -> bool {
    event_type == EventType::ObjectCreatedCompleteMultipartUpload
        || etag.is_some_and(|t| t.contains('-'))
}

pub(super) fn key_bucket(key: &str) -> i32 {
    let hash = murmur3::murmur3_32(&mut std::io::Cursor::new(key.as_bytes()), 0)
        .expect("hashing memory cannot fail");
    ((hash as i32 & i32::MAX) % KEY_BUCKETS as i32) as i32
}

/// Refuse a table whose columns do not have our field ids (data files carry ours):
/// `columns` are the table's (the journal's or the inventory's).
pub(super) fn check_ids(table: &Schema, columns: &[Column]) -> Result<()> {
    let mut wanted: Vec<(String, i32)> = Vec::new();
    let mut add = |prefix: &str, columns: &[Column]| {
        for c in columns {
            let name = format!("{prefix}{}", c.name);
            if let Kind::Map(k, v) = c.kind {
                wanted.push((format!("{name}.key"), k));
                wanted.push((format!("{name}.value"), v));
            }
            wanted.push((name, c.id));
        }
    };
    add("", columns);
    if columns.iter().any(|c| matches!(c.kind, Kind::Previous)) {
        add("previous.", PREVIOUS);
    }
    for (name, id) in wanted {
        match table.field_by_name(&name) {
            Some(f) if f.id == id => {}
            Some(f) => {
                return Err(Error::Transient(format!(
                    "the table's column {name} has field id {}, Tidemark writes {id}",
                    f.id
                )));
            }
            None => {
                return Err(Error::Transient(format!("the table has no column {name}")));
            }
        }
    }
    Ok(())
}

fn with_id(field: Field, id: i32) -> Field {
    field.with_metadata(HashMap::from([(
        "PARQUET:field_id".to_string(),
        id.to_string(),
    )]))
}

pub(super) fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The map's key and value fields (Parquet's canonical `key_value`/`key`/`value` names).
pub(super) fn map_fields(key_id: i32, value_id: i32) -> (Arc<Field>, Arc<Field>) {
    (
        Arc::new(with_id(Field::new("key", DataType::Utf8, false), key_id)),
        Arc::new(with_id(Field::new("value", DataType::Utf8, true), value_id)),
    )
}

fn arrow_type(kind: Kind) -> DataType {
    match kind {
        Kind::Str => DataType::Utf8,
        Kind::Long => DataType::Int64,
        Kind::Int => DataType::Int32,
        Kind::Bool => DataType::Boolean,
        Kind::Ts => timestamp(),
        Kind::Map(k, v) => {
            let (key, value) = map_fields(k, v);
            DataType::Map(
                Arc::new(Field::new(
                    "key_value",
                    DataType::Struct(Fields::from(vec![key, value])),
                    false,
                )),
                false,
            )
        }
        Kind::Previous => DataType::Struct(previous_fields()),
    }
}

fn arrow_fields(columns: &[Column]) -> Vec<Field> {
    columns
        .iter()
        .map(|c| with_id(Field::new(c.name, arrow_type(c.kind), !c.required), c.id))
        .collect()
}

pub(super) fn previous_fields() -> Fields {
    Fields::from(arrow_fields(PREVIOUS))
}

static ARROW: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = arrow_fields(JOURNAL);
    fields.extend(arrow_fields(JOURNAL_ADDED));
    Arc::new(ArrowSchema::new(fields))
});
static INVENTORY_ARROW: LazyLock<SchemaRef> =
    LazyLock::new(|| Arc::new(ArrowSchema::new(arrow_fields(INVENTORY))));

/// The journal's Arrow schema, field ids in each field's metadata.
pub(super) fn journal_arrow() -> SchemaRef {
    ARROW.clone()
}

/// The inventory's Arrow schema, field ids in each field's metadata.
pub(super) fn inventory_arrow() -> SchemaRef {
    INVENTORY_ARROW.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::partitioning::Part;

    #[test]
    fn both_schemas_have_the_same_ids() {
        let mut fields: Vec<NestedFieldRef> =
            journal_schema().unwrap().as_struct().fields().to_vec();
        fields.extend(nested(JOURNAL_ADDED));
        let iceberg = Schema::builder().with_fields(fields).build().unwrap();
        let arrow = journal_arrow();
        for f in arrow.fields() {
            let id: i32 = f.metadata()["PARQUET:field_id"].parse().unwrap();
            assert_eq!(iceberg.field_by_id(id).unwrap().name, *f.name());
        }
        // Ids are unique across nesting levels.
        let all = || JOURNAL.iter().chain(PREVIOUS).chain(JOURNAL_ADDED);
        let mut ids: Vec<i32> = all().map(|c| c.id).collect();
        for c in all() {
            if let Kind::Map(k, v) = c.kind {
                ids.extend([k, v]);
            }
        }
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n);
        super::super::partitioning::unbound(&[Part::Day, Part::Bucket]).unwrap();
    }

    #[test]
    fn a_created_table_keeps_our_field_ids() {
        let creation = iceberg::TableCreation::builder()
            .name("t".into())
            .location("/tmp/t".into())
            .schema(journal_schema().unwrap())
            .partition_spec(
                super::super::partitioning::unbound(&[Part::Day, Part::Bucket]).unwrap(),
            )
            .build();
        let metadata = iceberg::spec::TableMetadataBuilder::from_table_creation(creation)
            .unwrap()
            .build()
            .unwrap()
            .metadata;
        check_ids(metadata.current_schema(), JOURNAL).unwrap();
        let creation = iceberg::TableCreation::builder()
            .name("i".into())
            .location("/tmp/i".into())
            .schema(inventory_schema().unwrap())
            .partition_spec(inventory_partitioning().unwrap())
            .build();
        let metadata = iceberg::spec::TableMetadataBuilder::from_table_creation(creation)
            .unwrap()
            .build()
            .unwrap()
            .metadata;
        check_ids(metadata.current_schema(), INVENTORY).unwrap();
    }

    #[test]
    fn key_buckets_follow_the_iceberg_spec() {
        // The spec's example: bucket hash of "iceberg" is 1210000089.
        assert_eq!(1210000089 % KEY_BUCKETS as i32, key_bucket("iceberg"));
    }
}
