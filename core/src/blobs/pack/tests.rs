//! Packs on their own: durability tickets, recovery after a crash, collection by compaction.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use super::*;

fn blob(i: usize, len: usize) -> (String, [u8; 32], Vec<u8>) {
    let mut data: Vec<u8> = (0..len).map(|j| ((i * 31 + j) % 251) as u8).collect();
    data[..8].copy_from_slice(&(i as u64).to_le_bytes());
    let digest: [u8; 32] = Sha256::digest(&data).into();
    (hex(&digest), digest, data)
}

fn packs_bytes(dir: &Path) -> u64 {
    pack_ids(dir).unwrap().iter().map(|(_, s)| s).sum()
}

#[test]
fn entries_read_back_dedup_and_survive_a_reopen_before_the_index_flush() {
    let dir = tempfile::tempdir().unwrap();
    let packs = Packs::open(dir.path()).unwrap();
    let mut last = 0;
    for i in 0..100 {
        let (_, sha, data) = blob(i, 100 + i * 40);
        let (dedup, ticket) = packs.put(sha, &data).unwrap();
        assert!(!dedup && ticket > last);
        last = ticket;
    }
    let (_, sha7, data7) = blob(7, 100 + 7 * 40);
    assert_eq!(packs.put(sha7, &data7).unwrap(), (true, 8));
    packs.sync_through(last).unwrap();
    assert_eq!(packs.read(&sha7).unwrap().unwrap(), data7);
    // Dropped right after the fsync: the index may not have them yet; the scan finds them.
    drop(packs);
    let packs = Packs::open(dir.path()).unwrap();
    for i in 0..100 {
        let (_, sha, data) = blob(i, 100 + i * 40);
        assert_eq!(packs.read(&sha).unwrap().unwrap(), data, "blob {i}");
    }
    assert!(packs.put(sha7, &data7).unwrap().0);
    assert!(packs.read(&[0; 32]).unwrap().is_none());
}

#[test]
fn a_torn_tail_is_cut_and_writes_go_on_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let packs = Packs::open(dir.path()).unwrap();
    let (_, a, da) = blob(1, 5000);
    let t = packs.put(a, &da).unwrap().1;
    packs.sync_through(t).unwrap();
    drop(packs);
    std::thread::sleep(FLUSH_EVERY * 2);
    // A crash in the middle of the next entry's write.
    let (_, b, db) = blob(2, 5000);
    let path = pack_path(dir.path(), 1);
    let mut bytes = std::fs::read(&path).unwrap();
    // (The file runs on with zeros written ahead.)
    let whole = (entry::HEADER + 5000) as usize;
    assert!(bytes[whole..].iter().all(|b| *b == 0));
    bytes.truncate(whole);
    bytes.extend_from_slice(&entry::encode(&b, 1, &db)[..3000]);
    std::fs::write(&path, &bytes).unwrap();
    let packs = Packs::open(dir.path()).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, whole);
    assert!(packs.read(&b).unwrap().is_none());
    let t = packs.put(b, &db).unwrap().1;
    packs.sync_through(t).unwrap();
    assert_eq!(packs.read(&a).unwrap().unwrap(), da);
    assert_eq!(packs.read(&b).unwrap().unwrap(), db);
}

#[test]
fn collection_drops_old_unreferenced_entries_and_compaction_gives_back_the_space() {
    let dir = tempfile::tempdir().unwrap();
    let packs = Packs::open(dir.path()).unwrap();
    let mut names = Vec::new();
    let mut last = 0;
    // Enough that the live ones take more than one batch of the rewrite.
    for i in 0..1000 {
        let (name, sha, data) = blob(i, 20_000);
        last = packs.put(sha, &data).unwrap().1;
        names.push((name, sha, data));
    }
    packs.sync_through(last).unwrap();
    let before = packs_bytes(dir.path());
    // Young: nothing goes, whatever is referenced.
    let young = packs.gc(&HashSet::new(), 0).unwrap();
    assert_eq!((young.kept, young.removed), (1000, 0));
    // Keep one in three.
    let keep: HashSet<String> = names.iter().step_by(3).map(|n| n.0.clone()).collect();
    let swept = packs.gc(&keep, i64::MAX).unwrap();
    assert_eq!((swept.kept, swept.removed), (334, 666));
    assert_eq!(swept.bytes_freed, 666 * 20_000);
    assert_eq!(swept.packs_compacted, 1);
    assert!(swept.pack_bytes_reclaimed > 13_000_000, "{swept:?}");
    let after = packs_bytes(dir.path());
    assert!(after * 2 < before, "{before} → {after} bytes of packs");
    for (i, (name, sha, data)) in names.iter().enumerate() {
        let read = packs.read(sha).unwrap();
        if keep.contains(name) {
            assert_eq!(read.as_deref(), Some(data.as_slice()), "kept blob {i}");
        } else {
            assert!(read.is_none(), "collected blob {i}");
        }
    }
    // The moves are in the index: a reopen (no scan needed) serves them.
    drop(packs);
    let packs = Packs::open(dir.path()).unwrap();
    for (name, sha, data) in &names {
        if keep.contains(name) {
            assert_eq!(packs.read(sha).unwrap().as_deref(), Some(data.as_slice()));
        }
    }
    // Everything unreferenced: the packs empty out.
    let all = packs.gc(&HashSet::new(), i64::MAX).unwrap();
    assert_eq!(all.removed, 334);
    assert!(
        packs_bytes(dir.path()) < 20_000,
        "{}",
        packs_bytes(dir.path())
    );
}

#[test]
fn a_reupload_keeps_an_entry_a_collection_would_take() {
    let dir = tempfile::tempdir().unwrap();
    let packs = Packs::open(dir.path()).unwrap();
    let (_, sha, data) = blob(3, 64);
    let t = packs.put(sha, &data).unwrap().1;
    packs.sync_through(t).unwrap();
    let cutoff = now_us() + 1;
    std::thread::sleep(Duration::from_millis(5));
    // Uploaded again after the cutoff (its event not appended yet).
    packs.put(sha, &data).unwrap();
    let stats = packs.gc(&HashSet::new(), cutoff).unwrap();
    assert_eq!((stats.kept, stats.removed), (1, 0));
    assert!(packs.read(&sha).unwrap().is_some());
}

#[test]
fn packs_seal_at_their_size_and_reads_span_them() {
    let dir = tempfile::tempdir().unwrap();
    let packs = Packs::open(dir.path()).unwrap();
    let n = (PACK_BYTES / MAX_PACKED as u64) as usize + 10;
    let mut last = 0;
    for i in 0..n {
        let (_, sha, data) = blob(i, MAX_PACKED);
        last = packs.put(sha, &data).unwrap().1;
    }
    packs.sync_through(last).unwrap();
    assert_eq!(pack_ids(dir.path()).unwrap().len(), 2);
    for i in [0, n / 2, n - 1] {
        let (_, sha, data) = blob(i, MAX_PACKED);
        assert_eq!(packs.read(&sha).unwrap().unwrap(), data);
    }
}
