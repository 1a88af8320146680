//! The behaviour every [`Log`] backend must show, as one suite run against each backend.

use std::time::Duration;

use bytes::Bytes;

use super::{Header, Log, NewRecord, TopicSpec, partition_for};
use crate::ErrorKind;

fn rec(key: &str, value: &str) -> NewRecord {
    NewRecord::new(
        Bytes::copy_from_slice(key.as_bytes()),
        Bytes::copy_from_slice(value.as_bytes()),
    )
}

/// Known deviations of the broker a suite runs against, from what Kafka does. Each one is a
/// broker bug written down in docs/KAFKA.md; product code does not work around them.
#[derive(Debug, Clone, Copy, Default)]
pub struct BrokerQuirks {
    /// A time lookup after the newest record answers offset 0 instead of "none" (Tansu 0.6).
    pub time_after_end_answers_zero: bool,
}

/// Run every contract test against `log`, using topics prefixed with `prefix`.
pub async fn run_all(log: &dyn Log, prefix: &str) {
    run_all_with(log, prefix, BrokerQuirks::default()).await;
}

pub async fn run_all_with(log: &dyn Log, prefix: &str, quirks: BrokerQuirks) {
    topics_are_created_once(log, &format!("{prefix}topics")).await;
    appends_read_back_in_order(log, &format!("{prefix}order")).await;
    reads_wait_for_appends(log, &format!("{prefix}wait")).await;
    time_index_finds_first_record_at_or_after(log, &format!("{prefix}time"), quirks).await;
    commits_are_remembered(log, &format!("{prefix}commit")).await;
    bad_requests_name_the_problem(log, &format!("{prefix}bad")).await;
}

async fn topics_are_created_once(log: &dyn Log, topic: &str) {
    assert_eq!(
        log.ensure_topic(topic, &TopicSpec::new(3)).await.unwrap(),
        3
    );
    // A second call keeps the existing topic as it is.
    assert_eq!(
        log.ensure_topic(topic, &TopicSpec::new(5)).await.unwrap(),
        3
    );
    assert_eq!(log.partitions(topic).unwrap(), 3);
}

async fn appends_read_back_in_order(log: &dyn Log, topic: &str) {
    log.ensure_topic(topic, &TopicSpec::new(4)).await.unwrap();
    let mut records = Vec::new();
    for i in 0..200 {
        let mut r = rec(&format!("b/k{}", i % 10), &format!("v{i}"));
        if i == 7 {
            r.headers.push(Header {
                name: "h".into(),
                value: Bytes::from_static(b"x"),
            });
        }
        records.push(r);
    }
    // Two appends issued back to back keep their order.
    let first = log.append(topic, records[..100].to_vec());
    let second = log.append(topic, records[100..].to_vec());
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    let positions: Vec<_> = first.into_iter().chain(second).collect();
    for (r, pos) in records.iter().zip(&positions) {
        assert_eq!(pos.partition, partition_for(&r.key, 4));
    }
    for p in 0..4 {
        let range = log.offsets(topic, p).await.unwrap();
        let got = log
            .read(topic, p, range.start, 1000, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(got.len() as u64, range.end - range.start);
        let expected: Vec<_> = records
            .iter()
            .filter(|r| partition_for(&r.key, 4) == p)
            .collect();
        assert_eq!(got.len(), expected.len());
        for (i, (g, e)) in got.iter().zip(expected).enumerate() {
            assert_eq!(g.offset, range.start + i as u64);
            assert_eq!(
                (&g.key, &g.value, &g.headers),
                (&e.key, &e.value, &e.headers)
            );
            assert_eq!(g.partition, p);
        }
        assert!(got.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
        // Reading from the middle starts exactly there.
        if got.len() > 3 {
            let mid = log
                .read(topic, p, got[3].offset, 2, Duration::ZERO)
                .await
                .unwrap();
            assert_eq!(mid, got[3..5].to_vec());
        }
    }
}

async fn reads_wait_for_appends(log: &dyn Log, topic: &str) {
    log.ensure_topic(topic, &TopicSpec::new(1)).await.unwrap();
    let end = log.offsets(topic, 0).await.unwrap().end;
    let empty = log
        .read(topic, 0, end, 10, Duration::from_millis(50))
        .await
        .unwrap();
    assert!(empty.is_empty());
    let reader = log.read(topic, 0, end, 10, Duration::from_secs(20));
    let writer = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        log.append(topic, vec![rec("b/k", "late")]).await.unwrap()
    };
    let (got, _) = tokio::join!(reader, writer);
    let got = got.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].value[..], b"late");
}

async fn time_index_finds_first_record_at_or_after(
    log: &dyn Log,
    topic: &str,
    quirks: BrokerQuirks,
) {
    log.ensure_topic(topic, &TopicSpec::new(1)).await.unwrap();
    log.append(
        topic,
        (0..50).map(|i| rec("b/k", &format!("early{i}"))).collect(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let boundary = crate::time::now_us();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let late = log
        .append(
            topic,
            (0..50).map(|i| rec("b/k", &format!("late{i}"))).collect(),
        )
        .await
        .unwrap();
    let range = log.offsets(topic, 0).await.unwrap();
    assert_eq!(
        log.offset_for_time(topic, 0, boundary).await.unwrap(),
        late[0].offset
    );
    assert_eq!(log.offset_for_time(topic, 0, 0).await.unwrap(), range.start);
    if !quirks.time_after_end_answers_zero {
        assert_eq!(
            log.offset_for_time(topic, 0, i64::MAX).await.unwrap(),
            range.end
        );
    }
}

async fn commits_are_remembered(log: &dyn Log, topic: &str) {
    log.ensure_topic(topic, &TopicSpec::new(2)).await.unwrap();
    assert_eq!(log.committed("c1", topic, 1).await.unwrap(), None);
    log.commit("c1", topic, 1, 42).await.unwrap();
    log.commit("c2", topic, 1, 7).await.unwrap();
    assert_eq!(log.committed("c1", topic, 1).await.unwrap(), Some(42));
    assert_eq!(log.committed("c2", topic, 1).await.unwrap(), Some(7));
    assert_eq!(log.committed("c1", topic, 0).await.unwrap(), None);
}

async fn bad_requests_name_the_problem(log: &dyn Log, topic: &str) {
    let err = log
        .append("no-such-topic", vec![rec("a", "b")])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("no-such-topic"), "{err}");
    log.ensure_topic(topic, &TopicSpec::new(1)).await.unwrap();
    let mut r = rec("a", "b");
    r.partition = Some(9);
    let err = log.append(topic, vec![r]).await.unwrap_err();
    assert!(err.to_string().contains("no partition 9"), "{err}");
    let end = log.offsets(topic, 0).await.unwrap().end;
    let err = log
        .read(topic, 0, end + 5, 1, Duration::ZERO)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("past the end"), "{err}");
    let err = log
        .ensure_topic("bad/name", &TopicSpec::new(1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid"), "{err}");
}
