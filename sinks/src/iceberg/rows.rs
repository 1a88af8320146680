//! Journal rows: one per event, built column by column into an Arrow batch of the journal's
//! schema (`schema.rs` says what each column holds).

use std::fmt::Write;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Int32Builder, Int64Builder, MapBuilder, MapFieldNames, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch, StructArray};
use arrow_buffer::NullBuffer;
use tidemark_core::codec::view::{EventView, MapView, StateView};
use tidemark_core::event::EventType;

use super::schema::{self, JOURNAL, Kind, PREVIOUS};
use crate::{Error, Result};

type StringMapBuilder = MapBuilder<StringBuilder, StringBuilder>;

/// A map column's builder with room for `rows` rows (entries and their bytes grow as needed).
fn map_builder(key_id: i32, value_id: i32, rows: usize) -> StringMapBuilder {
    let names = MapFieldNames {
        entry: "key_value".into(),
        key: "key".into(),
        value: "value".into(),
    };
    let (key, value) = schema::map_fields(key_id, value_id);
    let strings = || StringBuilder::with_capacity(0, 0);
    MapBuilder::with_capacity(Some(names), strings(), strings(), rows)
        .with_keys_field(key)
        .with_values_field(value)
}

fn map_ids(columns: &[schema::Column], name: &str) -> (i32, i32) {
    match columns.iter().find(|c| c.name == name).map(|c| c.kind) {
        Some(Kind::Map(k, v)) => (k, v),
        _ => unreachable!("{name} is a map column"),
    }
}

fn push_map(b: &mut StringMapBuilder, m: MapView<'_>) {
    for (k, v) in m.iter() {
        b.keys().append_value(k);
        b.values().append_value(v);
    }
    b.append(true).expect("keys and values are pushed in pairs");
}

/// S3 Metadata's record type of an event.
pub(super) fn record_type(t: EventType) -> &'static str {
    let name = t.as_str();
    if name.starts_with("ObjectCreated:") {
        "CREATE"
    } else if name.starts_with("ObjectRemoved:") || name.starts_with("LifecycleExpiration:") {
        "DELETE"
    } else {
        "UPDATE_METADATA"
    }
}

/// An event of the journal, with its place in the log (tests build batches of them).
#[cfg(test)]
pub(super) struct Row<'a> {
    pub event: EventView<'a>,
    pub partition: u32,
    pub offset: u64,
}

/// A row's string columns, in the order `journal_batch` builds them.
fn string_values<'a>(e: &EventView<'a>) -> [Option<&'a str>; 12] {
    [
        Some(e.bucket),
        Some(e.key),
        Some(record_type(e.event_type)),
        e.version_id,
        e.etag,
        e.storage_class,
        e.sha256.map(|_| "SHA256"),
        e.requester,
        e.source_ip,
        e.request_id,
        e.content_type,
        e.sha256,
    ]
}

/// A sequence as the journal's `sequence_number`: 20 digits, zero-padded (`{:020}`), so
/// the strings sort like the numbers; written by hand, as formatting was a few per cent of a
/// round's CPU.
fn sequence_text(sequence: i64, text: &mut String) {
    text.clear();
    let Ok(mut n) = u64::try_from(sequence) else {
        write!(text, "{sequence:020}").expect("writing to a String");
        return;
    };
    let mut digits = [b'0'; 20];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    text.extend(digits.iter().map(|&d| char::from(d)));
}

/// The journal batch of `rows`.
#[cfg(test)]
pub(super) fn journal_batch(rows: &[Row<'_>]) -> Result<RecordBatch> {
    let mut columns = JournalColumns::new();
    for r in rows {
        columns.push(&r.event, r.partition, r.offset);
    }
    columns.finish()
}

/// The journal's columns, built a row at a time straight from each record's view (no row is
/// kept), finished into a batch every so many rows.
pub(super) struct JournalColumns {
    /// In the order of [`string_values`].
    strings: [StringBuilder; 12],
    /// `record_timestamp`, `last_modified_date`.
    ts: [TimestampMicrosecondBuilder; 2],
    /// `is_delete_marker`, `is_multipart`.
    bools: [BooleanBuilder; 2],
    size: Int64Builder,
    offset: Int64Builder,
    partition: Int32Builder,
    tags: StringMapBuilder,
    metadata: StringMapBuilder,
    prev: Previous,
    /// `sequence_number`, `event_id`, `event_type`, `user_agent`, `removed_version_id`.
    more: [StringBuilder; 5],
    text: String,
    rows: usize,
}

impl JournalColumns {
    pub fn new() -> JournalColumns {
        JournalColumns::sized(0, [0; 12], [0; 5])
    }

    /// Builders with room for `rows` rows and these bytes of string values, so a chunk like
    /// the last one fills its buffers without growing them (grown by doubling, a column's
    /// buffer is copied into fresh pages again and again: page faults were a third of the
    /// encoder once).
    fn sized(rows: usize, strings: [usize; 12], more: [usize; 5]) -> JournalColumns {
        let ts = || TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
        let (tk, tv) = map_ids(JOURNAL, "object_tags");
        let (mk, mv) = map_ids(JOURNAL, "user_metadata");
        JournalColumns {
            strings: strings.map(|b| StringBuilder::with_capacity(rows, b)),
            ts: [ts(), ts()],
            bools: [
                BooleanBuilder::with_capacity(rows),
                BooleanBuilder::with_capacity(rows),
            ],
            size: Int64Builder::with_capacity(rows),
            offset: Int64Builder::with_capacity(rows),
            partition: Int32Builder::with_capacity(rows),
            tags: map_builder(tk, tv, rows),
            metadata: map_builder(mk, mv, rows),
            prev: Previous::new(rows),
            more: more.map(|b| StringBuilder::with_capacity(rows, b)),
            text: String::with_capacity(20),
            rows: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn push(&mut self, e: &EventView<'_>, partition: u32, offset: u64) {
        let gone = e.size.is_none();
        for (b, v) in self.strings.iter_mut().zip(string_values(e)) {
            b.append_option(v);
        }
        self.ts[0].append_value(e.event_time);
        self.ts[1].append_option((!gone).then_some(e.event_time));
        self.bools[0].append_value(e.event_type == EventType::ObjectRemovedDeleteMarkerCreated);
        self.bools[1].append_value(super::schema::is_multipart(e.event_type, e.etag));
        self.size.append_option(e.size);
        push_map(&mut self.tags, e.tags);
        push_map(&mut self.metadata, e.metadata);
        self.prev.push(e.previous.as_ref());
        self.partition
            .append_value(i32::try_from(partition).unwrap_or(i32::MAX));
        self.offset
            .append_value(i64::try_from(offset).unwrap_or(i64::MAX));
        sequence_text(e.sequence, &mut self.text);
        let [sequence, event_id, event_type, user_agent, removed] = &mut self.more;
        sequence.append_value(&self.text);
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        event_id.append_value(e.event_id.hyphenated().encode_lower(&mut id));
        event_type.append_value(e.event_type.as_str());
        user_agent.append_option(e.user_agent);
        removed.append_option(e.removed_version_id);
        self.rows += 1;
    }

    /// The rows pushed so far as a batch; the builders start again, sized like these.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let bytes = |b: &StringBuilder| b.values_slice().len();
        let next = JournalColumns::sized(
            self.rows,
            self.strings.each_ref().map(bytes),
            self.more.each_ref().map(bytes),
        );
        std::mem::replace(self, next).build()
    }

    fn build(self) -> Result<RecordBatch> {
        let mut s = self
            .strings
            .into_iter()
            .map(|mut b| Arc::new(b.finish()) as ArrayRef);
        let mut next = || s.next().expect("12 string columns");
        let [
            bucket,
            key,
            record,
            version,
            etag,
            class,
            checksum,
            requester,
            ip,
            request,
        ] = std::array::from_fn(|_| next());
        let (content_type, sha256) = (next(), next());
        let [record_ts, modified] = self.ts.map(|mut b| Arc::new(b.finish()) as ArrayRef);
        let [delete_marker, multipart] = self.bools.map(|mut b| Arc::new(b.finish()) as ArrayRef);
        let [sequence, event_id, event_type, user_agent, removed_version] =
            self.more.map(|mut b| Arc::new(b.finish()) as ArrayRef);
        let (mut size, mut offset, mut partition) = (self.size, self.offset, self.partition);
        let (mut tags, mut metadata) = (self.tags, self.metadata);
        let columns: Vec<ArrayRef> = vec![
            bucket,
            key,
            sequence,
            record,
            record_ts,
            version,
            delete_marker,
            Arc::new(size.finish()),
            modified,
            etag,
            class,
            multipart,
            checksum,
            Arc::new(tags.finish()),
            Arc::new(metadata.finish()),
            requester,
            ip,
            request,
            event_id,
            event_type,
            content_type,
            sha256,
            self.prev.finish()?,
            Arc::new(partition.finish()),
            Arc::new(offset.finish()),
            // Added in event schema version 2.
            user_agent,
            // Added in event schema version 3.
            removed_version,
        ];
        RecordBatch::try_new(schema::journal_arrow(), columns)
            .map_err(|e| Error::Transient(format!("building journal rows: {e}")))
    }
}

/// Builders of the `previous` struct.
struct Previous {
    strings: [StringBuilder; 5],
    size: Int64Builder,
    modified: TimestampMicrosecondBuilder,
    metadata: StringMapBuilder,
    tags: StringMapBuilder,
    valid: Vec<bool>,
}

impl Previous {
    /// Builders with room for `rows` rows: none allocated ahead for a file that may get a
    /// few rows (a round can open one for each of thousands of buckets).
    fn new(rows: usize) -> Previous {
        let (mk, mv) = map_ids(PREVIOUS, "user_metadata");
        let (tk, tv) = map_ids(PREVIOUS, "object_tags");
        Previous {
            strings: std::array::from_fn(|_| StringBuilder::with_capacity(rows, 0)),
            size: Int64Builder::with_capacity(rows),
            modified: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            metadata: map_builder(mk, mv, rows),
            tags: map_builder(tk, tv, rows),
            valid: Vec::with_capacity(rows),
        }
    }

    /// A null struct still needs a (default) value in each child column.
    fn push(&mut self, s: Option<&StateView<'_>>) {
        const EMPTY: MapView<'static> = MapView::Short {
            entries: "",
            count: 0,
        };
        let values: [Option<&str>; 5] = match s {
            Some(s) => [
                s.version_id,
                s.etag,
                s.content_type,
                s.sha256,
                s.storage_class,
            ],
            None => [None; 5],
        };
        for (b, v) in self.strings.iter_mut().zip(values) {
            b.append_option(v);
        }
        self.size.append_value(s.map_or(0, |s| s.size));
        self.modified.append_value(s.map_or(0, |s| s.last_modified));
        push_map(&mut self.metadata, s.map_or(EMPTY, |s| s.metadata));
        push_map(&mut self.tags, s.map_or(EMPTY, |s| s.tags));
        self.valid.push(s.is_some());
    }

    fn finish(mut self) -> Result<ArrayRef> {
        let [version, etag, content_type, sha256, class] =
            self.strings.map(|mut b| Arc::new(b.finish()) as ArrayRef);
        // In the order of `PREVIOUS`.
        let children: Vec<ArrayRef> = vec![
            version,
            Arc::new(self.size.finish()),
            etag,
            content_type,
            sha256,
            Arc::new(self.modified.finish()),
            class,
            Arc::new(self.metadata.finish()),
            Arc::new(self.tags.finish()),
        ];
        let nulls = NullBuffer::from(self.valid);
        StructArray::try_new(schema::previous_fields(), children, Some(nulls))
            .map(|a| Arc::new(a) as ArrayRef)
            .map_err(|e| Error::Transient(format!("building journal rows (previous): {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::columns::tests::varied_events;

    #[test]
    fn every_shape_of_event_makes_a_row() {
        let events = varied_events();
        let rows: Vec<Row> = events
            .iter()
            .enumerate()
            .map(|(i, e)| Row {
                event: EventView::of(e),
                partition: 1,
                offset: i as u64,
            })
            .collect();
        let batch = journal_batch(&rows).unwrap();
        assert_eq!(batch.num_rows(), events.len());
        assert_eq!(
            batch.num_columns(),
            JOURNAL.len() + schema::JOURNAL_ADDED.len()
        );
    }

    #[test]
    fn record_types_follow_s3_metadata() {
        assert_eq!(record_type(EventType::ObjectCreatedCopy), "CREATE");
        assert_eq!(record_type(EventType::ObjectRemovedDelete), "DELETE");
        assert_eq!(record_type(EventType::ObjectTaggingPut), "UPDATE_METADATA");
    }

    #[test]
    fn sequence_numbers_are_twenty_digits() {
        let mut text = String::new();
        for n in [0, 7, 1_000, i64::MAX, -1, i64::MIN] {
            sequence_text(n, &mut text);
            assert_eq!(text, format!("{n:020}"));
        }
    }

    /// Batches finished every few rows (the builders then start again, sized like the last
    /// chunk) hold exactly what one batch of all the rows holds.
    #[test]
    fn chunks_of_columns_hold_what_one_batch_holds() {
        let events = varied_events();
        let views: Vec<EventView> = events.iter().map(EventView::of).collect();
        let mut columns = JournalColumns::new();
        let mut chunks = Vec::new();
        for (i, e) in views.iter().enumerate() {
            columns.push(e, 2, i as u64);
            if columns.len() == 2 {
                chunks.push(columns.finish().unwrap());
            }
        }
        if !columns.is_empty() {
            chunks.push(columns.finish().unwrap());
        }
        assert!(chunks.len() > 2, "several chunks");
        let rows: Vec<Row> = views
            .iter()
            .enumerate()
            .map(|(i, e)| Row {
                event: e.clone(),
                partition: 2,
                offset: i as u64,
            })
            .collect();
        let whole = journal_batch(&rows).unwrap();
        let joined = arrow_select::concat::concat_batches(&whole.schema(), &chunks).unwrap();
        assert_eq!(joined, whole);
    }
}
