use std::collections::BTreeMap;

use tidemark_core::event::{EventType, ObjectEvent, ObjectState};
use tidemark_core::index::{Batch, ObjectIndex};
use tidemark_core::log::OffsetRange;

use super::*;

fn put(key: &str, seq: i64) -> ObjectEvent {
    let state = ObjectState {
        sequence: seq,
        size: 10 * seq,
        etag: Some(format!("e{seq}")),
        ..ObjectState::default()
    };
    ObjectEvent::new(
        uuid::Uuid::now_v7(),
        EventType::ObjectCreatedPut,
        seq,
        "b".into(),
        key.into(),
        seq,
        Some(state),
    )
}

/// An index of 50 keys over partitions 0 and 1 (offsets 0..100 and 0..50), some deleted.
fn live_index(dir: &Path) -> ObjectIndex {
    let index = ObjectIndex::open(&dir.join("live.redb")).unwrap();
    let mut batch = Batch::default();
    for i in 0..100u64 {
        batch.add(0, i, put(&format!("k{:03}", i % 50), (i / 50 + 1) as i64));
    }
    for i in 0..50u64 {
        let mut e = put(&format!("z{i:03}"), 1);
        if i % 7 == 0 {
            e.event_type = EventType::ObjectRemovedDelete;
            e.size = None;
        }
        batch.add(1, i, e);
    }
    index.commit(batch).unwrap();
    index
}

fn dump(index: &ObjectIndex) -> Vec<(String, Vec<u8>)> {
    let mut rows = Vec::new();
    index
        .head_rows()
        .unwrap()
        .for_each(|k, r| {
            rows.push((k.to_string(), r.to_vec()));
            Ok(())
        })
        .unwrap();
    rows
}

fn log(starts: [u64; 2], ends: [u64; 2]) -> Vec<(u32, OffsetRange)> {
    (0..2)
        .map(|p| {
            let range = OffsetRange {
                start: starts[p],
                end: ends[p],
            };
            (p as u32, range)
        })
        .collect()
}

#[test]
fn a_snapshot_loads_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let live = live_index(dir.path());
    let snaps = dir.path().join("snapshots");
    let taken = take(&live, &snaps).unwrap();
    assert_eq!(taken.applied, BTreeMap::from([(0, 100), (1, 50)]));
    assert_eq!(taken.keys, 100);
    let (listed, skipped) = list(&snaps).unwrap();
    assert_eq!((listed, skipped), (vec![taken.clone()], vec![]));

    let scratch = ObjectIndex::create_scratch(&dir.path().join("scratch.redb")).unwrap();
    assert_eq!(load(&taken, &scratch).unwrap(), 100);
    assert_eq!(dump(&scratch), dump(&live));
    assert_eq!(scratch.applied().unwrap(), taken.applied);
}

#[test]
fn damage_is_detected_and_never_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let live = live_index(dir.path());
    let snaps = dir.path().join("snapshots");
    let taken = take(&live, &snaps).unwrap();
    let bytes = std::fs::read(&taken.path).unwrap();

    // A flipped bit in a row: the listing cannot tell, the load must.
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x10;
    std::fs::write(&taken.path, &flipped).unwrap();
    let (listed, _) = list(&snaps).unwrap();
    let scratch = ObjectIndex::create_scratch(&dir.path().join("s1.redb")).unwrap();
    let err = load(&listed[0], &scratch).unwrap_err().to_string();
    assert!(
        err.contains("checksum") || err.contains("snapshot"),
        "{err}"
    );

    // Cut short: not even listed.
    std::fs::write(&taken.path, &bytes[..bytes.len() - 100]).unwrap();
    let (listed, skipped) = list(&snaps).unwrap();
    assert!(listed.is_empty());
    assert!(skipped[0].contains("truncated"), "{skipped:?}");

    // Not a snapshot at all.
    std::fs::write(&taken.path, b"hello").unwrap();
    let (listed, skipped) = list(&snaps).unwrap();
    assert!(listed.is_empty() && skipped.len() == 1, "{skipped:?}");
}

#[test]
fn prune_keeps_the_newest_and_drops_what_the_log_no_longer_matches() {
    let dir = tempfile::tempdir().unwrap();
    let live = live_index(dir.path());
    let snaps = dir.path().join("snapshots");
    let first = take(&live, &snaps).unwrap();
    let mut batch = Batch::default();
    batch.add(0, 100, put("k000", 3));
    live.commit(batch).unwrap();
    let second = take(&live, &snaps).unwrap();
    let mut batch = Batch::default();
    batch.add(1, 50, put("z000", 2));
    live.commit(batch).unwrap();
    let third = take(&live, &snaps).unwrap();
    let (listed, _) = list(&snaps).unwrap();
    assert_eq!(listed, vec![third.clone(), second.clone(), first.clone()]);

    let deleted = prune(&snaps, 2, &log([0, 0], [101, 51])).unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].0, first.path);
    assert!(deleted[0].1.contains("newest 2"));

    // Retention moved partition 1's start past what `second` covers.
    let deleted = prune(&snaps, 5, &log([0, 51], [101, 51])).unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].0, second.path);
    assert!(deleted[0].1.contains("before the log start"), "{deleted:?}");

    // The log's tail was cut off below what `third` covers.
    let deleted = prune(&snaps, 5, &log([0, 0], [101, 50])).unwrap();
    assert_eq!(deleted[0].0, third.path);
    assert!(list(&snaps).unwrap().0.is_empty());
}
