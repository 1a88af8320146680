use uuid::Uuid;

use super::*;
use crate::event::{EventType, ObjectEvent, ObjectState};

fn put(bucket: &str, key: &str, seq: i64, size: i64) -> ObjectEvent {
    let state = ObjectState {
        sequence: seq,
        size,
        etag: Some(format!("etag-{seq}")),
        last_modified: 1_000 + seq,
        ..ObjectState::default()
    };
    ObjectEvent::new(
        Uuid::now_v7(),
        EventType::ObjectCreatedPut,
        1_000 + seq,
        bucket.into(),
        key.into(),
        seq,
        Some(state),
    )
}

fn delete(bucket: &str, key: &str, seq: i64) -> ObjectEvent {
    ObjectEvent::new(
        Uuid::now_v7(),
        EventType::ObjectRemovedDelete,
        1_000 + seq,
        bucket.into(),
        key.into(),
        seq,
        None,
    )
}

#[test]
fn applies_batches_lists_pages_and_keeps_history() {
    let dir = tempfile::tempdir().unwrap();
    let index = ObjectIndex::open(&dir.path().join("index.redb")).unwrap();
    let mut batch = Batch::default();
    let events = [
        put("photos", "a/1.jpg", 1, 10),
        put("photos", "a/2.jpg", 1, 20),
        put("photos", "b/3.jpg", 1, 30),
        put("photos", "a/1.jpg", 2, 11),
        put("videos", "a/1.mp4", 1, 99),
        delete("photos", "a/2.jpg", 2),
    ];
    for (i, e) in events.iter().enumerate() {
        batch.add(0, i as u64, e.clone());
    }
    index.commit(batch).unwrap();
    assert_eq!(index.applied().unwrap(), BTreeMap::from([(0, 6)]));

    let all = index.list(Some("photos"), "", None, 100).unwrap();
    let keys: Vec<_> = all.iter().map(|l| l.key.as_str()).collect();
    assert_eq!(keys, ["a/1.jpg", "b/3.jpg"], "deleted keys are not listed");
    assert_eq!(all[0].state.size, 11);
    let a = index.list(Some("photos"), "a/", None, 100).unwrap();
    assert_eq!(a.len(), 1);
    let page1 = index.list(None, "", None, 2).unwrap();
    let page2 = index
        .list(
            None,
            "",
            Some(&format!("{}/{}", page1[1].bucket, page1[1].key)),
            2,
        )
        .unwrap();
    assert_eq!(page1.len() + page2.len(), 3);
    assert_eq!(page2[0].bucket, "videos");
    let after = index.list(Some("photos"), "", Some("a/1.jpg"), 10).unwrap();
    assert_eq!(after[0].key, "b/3.jpg");

    let history = index.history("photos", "a/2.jpg").unwrap();
    assert_eq!(
        history.iter().map(|h| h.event_type).collect::<Vec<_>>(),
        [EventType::ObjectCreatedPut, EventType::ObjectRemovedDelete]
    );
    let head = index.get("photos", "a/2.jpg").unwrap().unwrap();
    assert_eq!(
        (head.sequence, head.state),
        (2, None),
        "a deleted key keeps its sequence"
    );
    assert_eq!(index.heads_and_applied().unwrap().0.len(), 4);
}

#[test]
fn a_reader_process_view_sees_committed_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    let index = ObjectIndex::open(&path).unwrap();
    let mut batch = Batch::default();
    batch.add(1, 41, put("photos", "x", 1, 5));
    index.commit(batch).unwrap();
    let reader = ObjectIndex::open_read_only(&path).unwrap();
    assert_eq!(reader.list(None, "", None, 10).unwrap().len(), 1);
    assert_eq!(reader.applied().unwrap(), BTreeMap::from([(1, 42)]));
    let err = reader.commit(Batch::default()).unwrap_err();
    assert!(err.to_string().contains("read-only"));
}

#[test]
fn keys_include_deleted_ones_and_page_by_marker() {
    let dir = tempfile::tempdir().unwrap();
    let index = ObjectIndex::open(&dir.path().join("index.redb")).unwrap();
    let mut batch = Batch::default();
    let events = [
        put("photos", "a/1.jpg", 1, 10),
        put("photos", "a/2.jpg", 1, 20),
        put("photos", "b/3.jpg", 1, 30),
        put("photosx", "a/9.jpg", 1, 1),
        delete("photos", "a/2.jpg", 2),
    ];
    for (i, e) in events.iter().enumerate() {
        batch.add(0, i as u64, e.clone());
    }
    index.commit(batch).unwrap();
    let all = index.keys("photos", "", None, 100).unwrap();
    assert_eq!(all, ["a/1.jpg", "a/2.jpg", "b/3.jpg"]);
    assert_eq!(
        index.keys("photos", "a/", None, 100).unwrap(),
        ["a/1.jpg", "a/2.jpg"]
    );
    assert_eq!(
        index.keys("photos", "", Some("a/1.jpg"), 1).unwrap(),
        ["a/2.jpg"]
    );
    assert_eq!(
        index.keys("photos", "b/", Some("a/1.jpg"), 10).unwrap(),
        ["b/3.jpg"],
        "a marker before the prefix starts at the prefix"
    );
}
