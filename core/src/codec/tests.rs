use std::collections::BTreeMap;
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use uuid::Uuid;

use super::*;
use crate::event::{EventType, ObjectState};

fn current_schema() -> Schema {
    Schema::parse_str(tidemark_schemas::object_event_latest().text).unwrap()
}

fn opt(rng: &mut fastrand::Rng, s: &str) -> Option<String> {
    rng.bool().then(|| format!("{s}-{}", rng.u32(..)))
}

fn map(rng: &mut fastrand::Rng, max: usize) -> BTreeMap<String, String> {
    (0..rng.usize(..=max))
        .map(|i| (format!("k{i}-é"), format!("v{}", rng.u64(..))))
        .collect()
}

/// Random events that reach every field and both branches of every union.
pub fn random_event(rng: &mut fastrand::Rng) -> ObjectEvent {
    let previous = rng.bool().then(|| ObjectState {
        version_id: opt(rng, "ver"),
        sequence: rng.i64(0..1 << 40),
        size: rng.i64(0..i64::MAX),
        etag: opt(rng, "etag"),
        content_type: opt(rng, "ct"),
        sha256: opt(rng, "sha"),
        metadata: map(rng, 3),
        tags: map(rng, 3),
        storage_class: opt(rng, "sc"),
        last_modified: rng.i64(0..1 << 52),
        headers: map(rng, 2),
        checksum: opt(rng, "CRC32:"),
        part_sizes: longs(rng),
    });
    ObjectEvent {
        event_id: Uuid::from_u128(rng.u128(..)),
        event_type: EventType::ALL[rng.usize(..EventType::ALL.len())],
        event_time: rng.i64(0..1 << 52),
        bucket: format!("bucket-{}", rng.u8(..)),
        key: format!("photos/{}/ü-{}.jpg", rng.u16(..), rng.u64(..)),
        version_id: opt(rng, "v"),
        sequence: rng.i64(1..i64::MAX),
        size: rng.bool().then(|| rng.i64(0..1 << 40)),
        etag: opt(rng, "e"),
        content_type: opt(rng, "image/jpeg"),
        sha256: opt(rng, "ab"),
        metadata: map(rng, 4),
        tags: map(rng, 4),
        storage_class: opt(rng, "STANDARD"),
        requester: opt(rng, "alice"),
        source_ip: opt(rng, "10.0.0.1"),
        request_id: opt(rng, "req"),
        region: opt(rng, "eu-west-1"),
        node: opt(rng, "node"),
        previous,
        user_agent: opt(rng, "aws-cli/2"),
        headers: map(rng, 3),
        checksum: opt(rng, "SHA256:"),
        part_sizes: longs(rng),
        removed_version_id: opt(rng, "rv"),
    }
}

fn longs(rng: &mut fastrand::Rng) -> Option<Vec<i64>> {
    rng.bool()
        .then(|| (0..rng.usize(..4)).map(|_| rng.i64(0..1 << 40)).collect())
}

#[test]
fn direct_codec_covers_the_current_schema_version() {
    assert_eq!(
        tidemark_schemas::object_event_latest().version,
        object_event::DIRECT_VERSION,
        "a new object event schema version was added: update codec/object_event.rs to it"
    );
}

#[test]
fn direct_and_generic_paths_agree() {
    let schema = current_schema();
    let writer = GenericDatumWriter::builder(&schema).build().unwrap();
    let reader = GenericDatumReader::builder(&schema).build().unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..2000 {
        let event = random_event(&mut rng);
        let mut direct = Vec::new();
        object_event::encode(&event, &mut direct);
        // apache-avro decodes what we write...
        let v = reader.read_value(&mut &direct[..]).unwrap();
        assert_eq!(value::from_value(v).unwrap(), event);
        // ...and we decode what apache-avro writes (its map order differs, so compare values).
        let generic = writer.write_value_to_vec(value::to_value(&event)).unwrap();
        assert_eq!(object_event::decode(&generic).unwrap(), event);
        if event.metadata.len() <= 1
            && event.tags.len() <= 1
            && event.headers.len() <= 1
            && event.previous.is_none()
        {
            assert_eq!(
                direct, generic,
                "byte-identical when map order cannot differ"
            );
        }
    }
}

#[test]
fn decoding_rejects_damaged_records() {
    let mut rng = fastrand::Rng::with_seed(1);
    let mut buf = Vec::new();
    object_event::encode(&random_event(&mut rng), &mut buf);
    for cut in [0, 1, 10, buf.len() / 2, buf.len() - 1] {
        assert!(object_event::decode(&buf[..cut]).is_err(), "cut at {cut}");
    }
    let mut long = buf.clone();
    long.push(0);
    assert!(
        object_event::decode(&long)
            .unwrap_err()
            .to_string()
            .contains("trailing")
    );
}

struct Fixed(HashMap<u32, Arc<Schema>>);

impl SchemaSource for Fixed {
    fn schema_by_id(&self, id: u32) -> Option<Arc<Schema>> {
        self.0.get(&id).cloned()
    }
}

#[test]
fn codec_frames_and_resolves_older_writer_schemas() {
    // A hypothetical older writer schema with fewer fields (everything after `key` defaulted).
    let old_text = r#"{"type":"record","name":"ObjectEvent","namespace":"io.tidemark.events","fields":[
        {"name":"event_id","type":{"type":"string","logicalType":"uuid"}},
        {"name":"event_type","type":"string"},
        {"name":"event_time","type":{"type":"long","logicalType":"timestamp-micros"}},
        {"name":"bucket","type":"string"},{"name":"key","type":"string"},
        {"name":"sequence","type":"long"}]}"#;
    let old = Arc::new(Schema::parse_str(old_text).unwrap());
    let source = Arc::new(Fixed(HashMap::from([
        (1, old.clone()),
        (2, Arc::new(current_schema())),
    ])));
    let codec = EventCodec::new(2, source).unwrap();

    let mut rng = fastrand::Rng::with_seed(3);
    let event = random_event(&mut rng);
    let mut framed = Vec::new();
    codec.encode(&event, &mut framed);
    assert_eq!(&framed[..5], &[0, 0, 0, 0, 2]);
    assert_eq!(codec.decode(&framed).unwrap(), event);

    let v = apache_avro::types::Value::Record(vec![
        (
            "event_id".into(),
            apache_avro::types::Value::Uuid(event.event_id),
        ),
        (
            "event_type".into(),
            apache_avro::types::Value::String("ObjectCreated:Put".into()),
        ),
        (
            "event_time".into(),
            apache_avro::types::Value::TimestampMicros(5),
        ),
        (
            "bucket".into(),
            apache_avro::types::Value::String("b".into()),
        ),
        ("key".into(), apache_avro::types::Value::String("k".into())),
        ("sequence".into(), apache_avro::types::Value::Long(9)),
    ]);
    let mut old_framed = Vec::new();
    wire::write_header(&mut old_framed, 1);
    old_framed.extend(
        GenericDatumWriter::builder(&old)
            .build()
            .unwrap()
            .write_value_to_vec(v)
            .unwrap(),
    );
    let decoded = codec.decode(&old_framed).unwrap();
    assert_eq!(
        (decoded.bucket.as_str(), decoded.sequence, decoded.size),
        ("b", 9, None)
    );
    assert!(decoded.metadata.is_empty() && decoded.previous.is_none());

    old_framed[4] = 77;
    assert!(
        codec
            .decode(&old_framed)
            .unwrap_err()
            .to_string()
            .contains("schema id 77")
    );
}

/// Version 3's fields emptied (the values an older writer's events decode with).
fn clear_v3(event: &mut ObjectEvent) {
    event.headers.clear();
    event.checksum = None;
    event.part_sizes = None;
    event.removed_version_id = None;
    if let Some(p) = event.previous.as_mut() {
        p.headers.clear();
        p.checksum = None;
        p.part_sizes = None;
    }
}

/// A record as version 2 lays it out: without version 3's fields, also in `previous`.
fn strip_v3(fields: &mut Vec<(String, Value)>) {
    const V3: [&str; 4] = ["headers", "checksum", "part_sizes", "removed_version_id"];
    fields.retain(|(name, _)| !V3.contains(&name.as_str()));
    for (name, v) in fields.iter_mut() {
        if name == "previous"
            && let Value::Union(1, inner) = v
            && let Value::Record(state) = inner.as_mut()
        {
            state.retain(|(name, _)| !V3.contains(&name.as_str()));
        }
    }
}

#[test]
fn events_written_with_version_2_decode_with_no_version_3_fields() {
    let v2 = tidemark_schemas::OBJECT_EVENT
        .iter()
        .find(|f| f.version == 2)
        .unwrap();
    let v2 = Arc::new(Schema::parse_str(v2.text).unwrap());
    let source = Arc::new(Fixed(HashMap::from([
        (2, v2.clone()),
        (3, Arc::new(current_schema())),
    ])));
    let codec = EventCodec::new(3, source).unwrap();
    let mut rng = fastrand::Rng::with_seed(13);
    for _ in 0..200 {
        let mut event = random_event(&mut rng);
        clear_v3(&mut event);
        let Value::Record(mut fields) = value::to_value(&event) else {
            unreachable!()
        };
        strip_v3(&mut fields);
        let mut framed = Vec::new();
        wire::write_header(&mut framed, 2);
        framed.extend(
            GenericDatumWriter::builder(&v2)
                .build()
                .unwrap()
                .write_value_to_vec(Value::Record(fields))
                .unwrap(),
        );
        assert_eq!(codec.decode(&framed).unwrap(), event);
    }
}

#[test]
fn events_written_with_version_1_decode_with_no_user_agent() {
    let v1 = tidemark_schemas::OBJECT_EVENT
        .iter()
        .find(|f| f.version == 1)
        .unwrap();
    let v1 = Arc::new(Schema::parse_str(v1.text).unwrap());
    let source = Arc::new(Fixed(HashMap::from([
        (1, v1.clone()),
        (2, Arc::new(current_schema())),
    ])));
    let codec = EventCodec::new(2, source).unwrap();
    let mut rng = fastrand::Rng::with_seed(11);
    for _ in 0..200 {
        let mut event = random_event(&mut rng);
        clear_v3(&mut event);
        // As an older Tidemark wrote it: version 1 has every field but `user_agent` and
        // version 3's.
        let Value::Record(mut fields) = value::to_value(&event) else {
            unreachable!()
        };
        strip_v3(&mut fields);
        fields.retain(|(name, _)| name != "user_agent");
        let mut framed = Vec::new();
        wire::write_header(&mut framed, 1);
        framed.extend(
            GenericDatumWriter::builder(&v1)
                .build()
                .unwrap()
                .write_value_to_vec(Value::Record(fields))
                .unwrap(),
        );
        event.user_agent = None;
        assert_eq!(codec.decode(&framed).unwrap(), event);
        assert_eq!(
            codec.decode_for_index(&framed).unwrap().sequence,
            event.sequence
        );
    }
}
