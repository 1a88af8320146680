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
