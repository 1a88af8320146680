use std::fs::OpenOptions;
use std::io::Write;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::log::contract_tests;

fn rec(key: &str, value: &str) -> NewRecord {
    NewRecord::new(
        Bytes::copy_from_slice(key.as_bytes()),
        Bytes::copy_from_slice(value.as_bytes()),
    )
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

async fn read_all(log: &EmbeddedLog, topic: &str, p: u32) -> Vec<Record> {
    let range = log.offsets(topic, p).await.unwrap();
    log.read(topic, p, range.start, usize::MAX, Duration::ZERO)
        .await
        .unwrap()
}

fn newest_segment(dir: &Path) -> PathBuf {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

#[tokio::test]
async fn contract_suite_fsync_always() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), LogConfig::default()).unwrap();
    contract_tests::run_all(&log, "t-").await;
}

#[tokio::test]
async fn contract_suite_small_segments_and_interval_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        fsync: FsyncPolicy::Interval(Duration::from_millis(5)),
        ..small_segments()
    };
    let log = EmbeddedLog::open(dir.path(), config).unwrap();
    contract_tests::run_all(&log, "t-").await;
}

#[tokio::test]
async fn reads_across_rolled_segments_and_reopens_from_index_files() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<String> = (0..500)
        .map(|i| format!("value-{i:04}-{}", "x".repeat(i % 40)))
        .collect();
    {
        let log = EmbeddedLog::open(dir.path(), small_segments()).unwrap();
        log.ensure_topic("t", &TopicSpec::new(1)).await.unwrap();
        for chunk in values.chunks(37) {
            log.append("t", chunk.iter().map(|v| rec("k", v)).collect())
                .await
                .unwrap();
        }
        assert!(log.stats("t").unwrap()[0].segments > 5);
        let got = read_all(&log, "t", 0).await;
        assert_eq!(
            got.iter().map(|r| r.value.clone()).collect::<Vec<_>>(),
            values
                .iter()
                .map(|v| Bytes::from(v.clone()))
                .collect::<Vec<_>>()
        );
        // Reads that start in the middle of any segment begin at exactly that offset.
        for from in [0u64, 1, 99, 250, 499] {
            let got = log.read("t", 0, from, 3, Duration::ZERO).await.unwrap();
            assert_eq!(got[0].offset, from);
        }
    }
    let part = dir.path().join("t/0");
    let indexes = std::fs::read_dir(&part)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "index")
        })
        .count();
    assert!(indexes > 4, "sealed segments have index files");
    // A damaged index file is rebuilt by scanning, not trusted.
    let first_index = part.join(format!("{:020}.index", 0));
    std::fs::write(&first_index, b"garbage").unwrap();
    let log = EmbeddedLog::open(dir.path(), small_segments()).unwrap();
    let got = read_all(&log, "t", 0).await;
    assert_eq!(got.len(), 500);
    assert_eq!(
        log.read("t", 0, 3, 1, Duration::ZERO).await.unwrap()[0].offset,
        3
    );
}

/// Kinds of damage a crash (or a bad disk) leaves at the end of the newest segment.
#[derive(Debug, Clone, Copy)]
enum Damage {
    TruncateMidRecord,
    FlipLastByte,
    AppendZeros,
    AppendGarbage,
}

#[tokio::test]
async fn torn_or_corrupt_tail_is_truncated_on_open() {
    for damage in [
        Damage::TruncateMidRecord,
        Damage::FlipLastByte,
        Damage::AppendZeros,
        Damage::AppendGarbage,
    ] {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = EmbeddedLog::open(dir.path(), LogConfig::default()).unwrap();
            log.ensure_topic("t", &TopicSpec::new(1)).await.unwrap();
            for i in 0..20 {
                log.append("t", vec![rec("k", &format!("v{i}"))])
                    .await
                    .unwrap();
            }
        }
        let seg = newest_segment(&dir.path().join("t/0"));
        let len = std::fs::metadata(&seg).unwrap().len();
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&seg)
            .unwrap();
        let survivors = match damage {
            Damage::TruncateMidRecord => {
                f.set_len(len - 3).unwrap();
                19
            }
            Damage::FlipLastByte => {
                use std::os::unix::fs::FileExt;
                let mut b = [0u8];
                f.read_at(&mut b, len - 1).unwrap();
                f.write_at(&[b[0] ^ 0x5a], len - 1).unwrap();
                19
            }
            Damage::AppendZeros => {
                f.write_all_at_end(&[0u8; 100]);
                20
            }
            Damage::AppendGarbage => {
                f.write_all_at_end(&[0xffu8; 37]);
                20
            }
        };
        drop(f);
        let log = EmbeddedLog::open(dir.path(), LogConfig::default()).unwrap();
        let got = read_all(&log, "t", 0).await;
        assert_eq!(got.len(), survivors, "{damage:?}");
        for (i, r) in got.iter().enumerate() {
            assert_eq!(
                r.value,
                Bytes::from(format!("v{i}")),
                "{damage:?}: earlier records intact"
            );
        }
        // Appends continue right after the last intact record.
        let pos = log.append("t", vec![rec("k", "after")]).await.unwrap();
        assert_eq!(pos[0].offset, survivors as u64, "{damage:?}");
        drop(log);
        let log = EmbeddedLog::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(
            read_all(&log, "t", 0).await.len(),
            survivors + 1,
            "{damage:?}"
        );
    }
}

trait AppendAtEnd {
    fn write_all_at_end(&mut self, data: &[u8]);
}

impl AppendAtEnd for std::fs::File {
    fn write_all_at_end(&mut self, data: &[u8]) {
        use std::io::{Seek, SeekFrom};
        self.seek(SeekFrom::End(0)).unwrap();
        self.write_all(data).unwrap();
    }
}

#[tokio::test]
async fn retention_deletes_old_segments_by_size_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_check: Duration::from_millis(10),
        ..small_segments()
    };
    let log = EmbeddedLog::open(dir.path(), config).unwrap();
    let by_size = TopicSpec {
        retention_bytes: Some(8192),
        ..TopicSpec::new(1)
    };
    let by_age = TopicSpec {
        retention_ms: Some(1),
        ..TopicSpec::new(1)
    };
    log.ensure_topic("size", &by_size).await.unwrap();
    log.ensure_topic("age", &by_age).await.unwrap();
    for _ in 0..40 {
        let batch: Vec<_> = (0..10)
            .map(|i| rec("k", &format!("{i}{}", "y".repeat(90))))
            .collect();
        log.append("size", batch.clone()).await.unwrap();
        log.append("age", batch).await.unwrap();
    }
    // Retention runs on the writer thread between groups; give it a few ticks.
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        log.append("age", vec![rec("k", "tick")]).await.unwrap();
        let size = &log.stats("size").unwrap()[0];
        let age = &log.stats("age").unwrap()[0];
        if size.start > 0 && age.segments == 1 {
            break;
        }
    }
    let size = &log.stats("size").unwrap()[0];
    assert!(size.start > 0, "oldest segments deleted: {size:?}");
    assert!(
        size.bytes <= 8192 + 4096,
        "partition kept near the byte limit: {size:?}"
    );
    let got = read_all(&log, "size", 0).await;
    assert_eq!(got[0].offset, size.start);
    let err = log.read("size", 0, 0, 1, Duration::ZERO).await.unwrap_err();
    assert!(err.to_string().contains("retention"), "{err}");
    assert_eq!(
        log.stats("age").unwrap()[0].segments,
        1,
        "only the active segment is left"
    );
}

#[tokio::test]
async fn read_only_open_follows_a_writer_and_a_second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), small_segments()).unwrap();
    log.ensure_topic("t", &TopicSpec::new(2)).await.unwrap();
    log.append("t", (0..10).map(|i| rec(&format!("k{i}"), "v")).collect())
        .await
        .unwrap();

    let err = EmbeddedLog::open(dir.path(), LogConfig::default())
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("in use by another Tidemark process"),
        "{err}"
    );

    let reader = EmbeddedLog::open_read_only(dir.path()).unwrap();
    let count = |l: &EmbeddedLog| l.stats("t").unwrap().iter().map(|p| p.end).sum::<u64>();
    assert_eq!(count(&reader), 10);
    log.append(
        "t",
        (0..300)
            .map(|i| rec(&format!("k{i}"), "vvvvvvvvvvvvvvvvvvvvvvv"))
            .collect(),
    )
    .await
    .unwrap();
    log.ensure_topic("t2", &TopicSpec::new(1)).await.unwrap();
    assert!(reader.refresh().unwrap());
    assert_eq!(count(&reader), 310);
    assert!(reader.topic_names().contains(&"t2".to_string()));
    assert_eq!(
        read_all(&reader, "t", 0).await.len() + read_all(&reader, "t", 1).await.len(),
        310
    );
}

#[tokio::test]
async fn committed_offsets_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EmbeddedLog::open(dir.path(), LogConfig::default()).unwrap();
        log.ensure_topic("t", &TopicSpec::new(2)).await.unwrap();
        log.commit("sink-a", "t", 1, 99).await.unwrap();
    }
    let log = EmbeddedLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.committed("sink-a", "t", 1).await.unwrap(), Some(99));
    let err = log.commit("bad name", "t", 0, 1).await.unwrap_err();
    assert!(err.to_string().contains("consumer name"), "{err}");
}

#[tokio::test]
async fn a_group_member_owns_every_partition() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), LogConfig::default()).unwrap();
    log.ensure_topic("t", &TopicSpec::new(3)).await.unwrap();
    let m = log.join_group("owners", "t").await.unwrap();
    assert_eq!(
        m.assigned.borrow().iter().copied().collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert!(log.join_group("owners", "missing").await.is_err());
}

#[tokio::test]
async fn compaction_keeps_the_newest_record_per_key_at_the_same_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        tombstone_retention: Duration::ZERO,
        ..small_segments()
    };
    let compacted = TopicSpec {
        compacted: true,
        ..TopicSpec::new(1)
    };
    let before;
    {
        let log = EmbeddedLog::open(dir.path(), config.clone()).unwrap();
        log.ensure_topic("c", &compacted).await.unwrap();
        log.ensure_topic("plain", &TopicSpec::new(1)).await.unwrap();
        // 10 keys rewritten 30 times; key 3 deleted (a tombstone) half way.
        for round in 0..30 {
            let batch: Vec<_> = (0..10)
                .map(|k| {
                    let value = if k == 3 && round >= 15 {
                        String::new()
                    } else {
                        format!("{round:02}-{}", "x".repeat(100))
                    };
                    rec(&format!("key-{k}"), &value)
                })
                .collect();
            log.append("c", batch.clone()).await.unwrap();
            log.append("plain", batch).await.unwrap();
        }
        before = read_all(&log, "c", 0).await;
        assert_eq!(before.len(), 300);
        let done = log.compact_now().unwrap();
        assert!(done.records_removed > 200, "{done:?}");
        assert!(done.bytes_freed > 0, "{done:?}");
        // The plain topic is left alone.
        assert_eq!(read_all(&log, "plain", 0).await.len(), 300);
    }
    // Reopened: every kept record is byte-for-byte the one written, at its offset (a
    // segment's last record, when replaced, is kept as a tombstone of its key); every key's
    // newest record is there; old versions and the expired tombstone are gone.
    let log = EmbeddedLog::open(dir.path(), config).unwrap();
    let after = read_all(&log, "c", 0).await;
    assert!(after.len() < 100, "{}", after.len());
    for r in &after {
        let written = &before[r.offset as usize];
        if r.value.is_empty() {
            assert_eq!((&r.key, r.timestamp), (&written.key, written.timestamp));
        } else {
            assert_eq!(written, r);
        }
    }
    for k in (0..10).filter(|k| *k != 3) {
        let newest = before
            .iter()
            .rev()
            .find(|r| r.key == format!("key-{k}").as_bytes())
            .unwrap();
        assert!(after.iter().any(|r| r.offset == newest.offset), "key-{k}");
    }
    let range = log.offsets("c", 0).await.unwrap();
    assert_eq!((range.start, range.end), (0, 300));
    // A read from inside a gap starts at the next record kept.
    let gap = (1..300u64)
        .find(|o| !after.iter().any(|r| r.offset == *o))
        .unwrap();
    let from_gap = log.read("c", 0, gap, 1, Duration::ZERO).await.unwrap();
    assert!(from_gap[0].offset > gap);
    // Appends go on after compaction.
    log.append("c", vec![rec("key-0", "new")]).await.unwrap();
    assert_eq!(log.offsets("c", 0).await.unwrap().end, 301);
}

/// Records over four partitions, a few per append, so each group touches several.
fn spread(n: usize) -> Vec<Vec<NewRecord>> {
    (0..n)
        .collect::<Vec<_>>()
        .chunks(5)
        .map(|c| {
            c.iter()
                .map(|i| rec(&format!("key-{i}"), &format!("value-{i}")))
                .collect()
        })
        .collect()
}

async fn all_values(log: &EmbeddedLog, topic: &str, partitions: u32) -> Vec<Vec<Bytes>> {
    let mut out = Vec::new();
    for p in 0..partitions {
        out.push(
            read_all(log, topic, p)
                .await
                .into_iter()
                .map(|r| r.value)
                .collect(),
        );
    }
    out
}

#[tokio::test]
async fn a_crash_that_lost_segment_writes_is_repaired_from_the_write_ahead_file() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join(super::wal::FILE_NAME);
    let (want, saved) = {
        let log = EmbeddedLog::open(dir.path(), LogConfig::default()).unwrap();
        log.ensure_topic("t", &TopicSpec::new(4)).await.unwrap();
        for group in spread(200) {
            log.append("t", group).await.unwrap();
        }
        // What a crash now would leave of the file: every group's entry.
        (all_values(&log, "t", 4).await, std::fs::read(&wal).unwrap())
    };
    assert!(
        want.iter().all(|p| !p.is_empty()),
        "every partition written"
    );
    // The crash lost what the segments were given after their last fsync (all of it: they
    // were created empty and only written through the write-ahead file), and a torn entry
    // follows the last whole one.
    for p in 0..4 {
        let seg = newest_segment(&dir.path().join(format!("t/{p}")));
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(0)
            .unwrap();
    }
    let mut torn = saved.clone();
    let end = torn.iter().rposition(|b| *b != 0).unwrap() + 1;
    torn.truncate(end);
    torn.extend_from_slice(&[9, 0, 0, 0, 1, 2, 3]);
    std::fs::write(&wal, &torn).unwrap();
    let log = EmbeddedLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(all_values(&log, "t", 4).await, want);
    // Appends go on after them, and a clean close leaves nothing to replay.
    log.append("t", vec![rec("key-0", "after")]).await.unwrap();
    drop(log);
    let log = EmbeddedLog::open(dir.path(), LogConfig::default()).unwrap();
    let got = all_values(&log, "t", 4).await;
    assert_eq!(got.iter().map(Vec::len).sum::<usize>(), 201);
}

#[tokio::test]
async fn entries_for_sealed_or_removed_segments_are_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join(super::wal::FILE_NAME);
    let config = small_segments();
    let saved = {
        let log = EmbeddedLog::open(dir.path(), config.clone()).unwrap();
        log.ensure_topic("t", &TopicSpec::new(2)).await.unwrap();
        for group in spread(20) {
            log.append("t", group).await.unwrap();
        }
        let saved = std::fs::read(&wal).unwrap();
        // Enough more for both partitions to seal the segment those entries name.
        for group in spread(400) {
            log.append("t", group).await.unwrap();
        }
        assert!(log.stats("t").unwrap().iter().all(|s| s.segments > 1));
        saved
    };
    // Retention removed partition 0's first segment; partition 1's was sealed (compaction
    // may rewrite such a one): neither is written to.
    let first = |p: u32| dir.path().join(format!("t/{p}/{:020}.log", 0));
    std::fs::remove_file(first(0)).unwrap();
    let long_ago = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    std::fs::File::options()
        .write(true)
        .open(first(1))
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    std::fs::write(&wal, &saved).unwrap();
    let log = EmbeddedLog::open(dir.path(), config).unwrap();
    assert!(!first(0).exists(), "a removed segment is not made again");
    assert_eq!(
        std::fs::metadata(first(1)).unwrap().modified().unwrap(),
        long_ago,
        "a sealed segment is not written"
    );
    drop(log);
}

#[tokio::test]
async fn a_large_group_is_written_to_its_segments_directly() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), LogConfig::default()).unwrap();
    log.ensure_topic("t", &TopicSpec::new(4)).await.unwrap();
    let big = "x".repeat(4096);
    let group: Vec<NewRecord> = (0..400).map(|i| rec(&format!("k{i}"), &big)).collect();
    log.append("t", group).await.unwrap();
    let wal = std::fs::read(dir.path().join(super::wal::FILE_NAME)).unwrap();
    assert!(
        wal.len() < 1 << 20,
        "1.6 MB of frames did not go through the write-ahead file ({} bytes)",
        wal.len()
    );
    log.append("t", spread(10).remove(0)).await.unwrap();
    assert!(
        std::fs::read(dir.path().join(super::wal::FILE_NAME))
            .unwrap()
            .len()
            > 24
    );
}
