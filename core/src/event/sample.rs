//! Deterministic, realistic events for benchmarks and demos: a put of a photo with metadata,
//! tags and the previous version as CDC "before".

use uuid::Uuid;

use super::{EventType, ObjectEvent, ObjectState, StringMap};

pub fn sample_event(i: u64) -> ObjectEvent {
    let metadata = StringMap::from([
        ("camera".to_string(), format!("cam-{}", i % 17)),
        ("team".to_string(), "ml".to_string()),
    ]);
    let tags = StringMap::from([("project".to_string(), "tidemark".to_string())]);
    let previous = ObjectState {
        version_id: Some(format!("{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15))),
        sequence: (i % 1000) as i64 + 1,
        size: 1_048_576 + (i % 4096) as i64,
        etag: Some(format!("\"{:032x}\"", i ^ 0xabcdef)),
        content_type: Some("image/jpeg".into()),
        sha256: None,
        metadata: metadata.clone(),
        tags: StringMap::new(),
        storage_class: Some("STANDARD".into()),
        last_modified: 1_795_356_000_000_000 + i as i64,
        ..ObjectState::default()
    };
    let after = ObjectState {
        version_id: Some(format!("{:032x}", i.wrapping_mul(0x2545_f491_4f6c_dd1d))),
        sequence: previous.sequence + 1,
        size: 2_097_152 + (i % 8192) as i64,
        etag: Some(format!("\"{:032x}\"", i ^ 0x123456)),
        tags,
        last_modified: previous.last_modified + 60_000_000,
        ..previous.clone()
    };
    let mut e = ObjectEvent::new(
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | u128::from(i)),
        EventType::ObjectCreatedPut,
        after.last_modified,
        "photos".into(),
        format!("raw/2026/11/22/img-{i:08}.jpg"),
        after.sequence,
        Some(after),
    );
    e.requester = Some("arn:aws:iam::123456789012:user/ingest".into());
    e.source_ip = Some("10.1.2.3".into());
    e.request_id = Some(format!("req-{i:016x}"));
    e.region = Some("eu-west-1".into());
    e.node = Some("node-1".into());
    e.previous = Some(previous);
    e
}
