use std::sync::Arc;

use super::test_broker::TestBroker;
use super::*;
use crate::log::contract_tests;

fn connect(broker: &TestBroker) -> KafkaLog {
    KafkaLog::connect(KafkaConfig {
        brokers: broker.addr.clone(),
        linger_ms: 1,
        properties: TestBroker::producer_workaround(),
        ..KafkaConfig::default()
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_suite_on_kafka() {
    let broker = TestBroker::start();
    let log = connect(&broker);
    contract_tests::run_all_with(&log, "k-", TestBroker::QUIRKS).await;
    // Committed offsets live in the cluster: a new client sees them.
    drop(log);
    let log: Arc<dyn Log> = Arc::new(connect(&broker));
    assert_eq!(log.committed("c1", "k-commit", 1).await.unwrap(), Some(42));
}

#[test]
fn an_unreachable_cluster_is_named_in_the_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = KafkaLog::connect(KafkaConfig {
        brokers: format!("127.0.0.1:{port}"),
        request_timeout_ms: 1500,
        ..KafkaConfig::default()
    })
    .err()
    .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("--kafka-brokers"),
        "{msg}"
    );
}

async fn settle(
    a: &mut crate::log::Membership,
    b: &mut crate::log::Membership,
) -> (
    std::collections::BTreeSet<u32>,
    std::collections::BTreeSet<u32>,
) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        // Acknowledge revocations as they come, as an idle member would.
        while let Ok(r) = a.revoked.try_recv() {
            r.done();
        }
        while let Ok(r) = b.revoked.try_recv() {
            r.done();
        }
        let (x, y) = (a.assigned.borrow().clone(), b.assigned.borrow().clone());
        if x.len() + y.len() == 4 && x.is_disjoint(&y) && !x.is_empty() && !y.is_empty() {
            return (x, y);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no settled assignment: {x:?} {y:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_split_partitions_and_hand_over_only_after_revocation() {
    let broker = TestBroker::start();
    let config = KafkaConfig {
        brokers: broker.addr.clone(),
        session_timeout_ms: 3000,
        properties: TestBroker::producer_workaround(),
        ..KafkaConfig::default()
    };
    let one = KafkaLog::connect(config.clone()).unwrap();
    let two = KafkaLog::connect(config).unwrap();
    one.ensure_topic("g", &TopicSpec::new(4)).await.unwrap();

    let mut a = one.join_group("owners", "g").await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while a.assigned.borrow().len() < 4 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // A second member joins: the first must give partitions up, and they are only handed on
    // after it says it is done with them.
    let mut b = two.join_group("owners", "g").await.unwrap();
    let revocation = tokio::time::timeout(std::time::Duration::from_secs(60), a.revoked.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(!revocation.partitions.is_empty());
    let held = std::time::Instant::now();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        b.assigned.borrow().is_empty(),
        "nothing is assigned while a revocation is pending"
    );
    revocation.done();
    let (x, y) = settle(&mut a, &mut b).await;
    assert!(held.elapsed() >= std::time::Duration::from_millis(1500));
    assert_eq!(x.union(&y).count(), 4);

    // The second member leaves: the first owns everything again.
    drop(b);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        while let Ok(r) = a.revoked.try_recv() {
            r.done();
        }
        if a.assigned.borrow().len() == 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            a.assigned.borrow()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
