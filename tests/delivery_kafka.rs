//! Subscriptions on the Kafka log (a Tansu broker on loopback): the same delivery as on the
//! embedded log, with the subscription in `_config`, its position as Kafka committed offsets
//! of its consumer group, and its dead letters in `_deadletters`, all surviving a restart.

mod common;

use std::time::Duration;

use common::receiver::{Receiver, assert_per_key_order};
use common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn server(backend: &Backend, data: &std::path::Path) -> Server {
    let server = Server::start_on(backend, data, &["--allow-destinations", "loopback"]);
    server.wait_writing(4);
    server
}

#[test]
fn webhook_delivery_and_dead_letters_on_kafka_survive_a_restart() {
    let backend = Backend::kafka();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let receiver = Receiver::start(dir.path(), "hooks", &[]);
    let server1 = server(&backend, &data);

    let keys: Vec<String> = (0..8).map(|i| format!("k{i}")).collect();
    let mutations = |round: usize| -> Vec<serde_json::Value> {
        (0..40)
            .map(|i| json!({"op": "put", "bucket": "photos", "key": keys[i % keys.len()], "size": round * 100 + i}))
            .collect()
    };
    let mut acked = ingest(&server1, mutations(1));
    create_subscription(
        &server1,
        &json!({
            "name": "kafka-hooks",
            "start": "earliest",
            "sink": {"type": "webhook", "url": receiver.url("/hook"), "format": "cloudevents-structured"},
            "retry": fast_retry(50),
        }),
    );
    // A subscription whose endpoint never answers: its events end in the dead-letter queue
    // (a circuit that never opens, so each event spends its one attempt at once).
    let nowhere = format!("http://127.0.0.1:{}/hook", free_port());
    create_subscription(
        &server1,
        &json!({"name": "kafka-dead", "start": "earliest",
                "sink": {"type": "webhook", "url": nowhere}, "retry": fast_retry(1),
                "circuit": {"failure_threshold": 1000}}),
    );
    acked.extend(ingest(&server1, mutations(2)));
    let ids: Vec<String> = acked.iter().map(|(_, id)| id.clone()).collect();
    receiver.wait_delivered(&ids, WAIT);
    wait_status(&server1, "kafka-hooks", "no lag", WAIT, |s| s["lag"] == 0);
    wait_dead_letters(&server1, "kafka-dead", ids.len(), WAIT);
    let delivered_before = receiver.requests().len();
    server1.stop();

    // After a restart: the subscriptions and dead letters are read back from Kafka, delivery
    // resumes from the committed offsets, and nothing acknowledged is missing.
    let server2 = server(&backend, &data);
    let (status, list) = server2.get("/v1/subscriptions");
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["subscriptions"].as_array().unwrap().len(), 2, "{list}");
    acked.extend(ingest(&server2, mutations(3)));
    let ids: Vec<String> = acked.iter().map(|(_, id)| id.clone()).collect();
    receiver.wait_delivered(&ids, WAIT);
    wait_status(&server2, "kafka-hooks", "no lag", WAIT, |s| {
        s["lag"] == 0 && s["state"] == "running"
    });
    let requests = receiver.requests();
    assert_per_key_order(&requests, &acked);
    // SIGTERM committed every finished delivery to the group: nothing delivered before the
    // restart is sent again.
    let before: std::collections::HashSet<&String> = ids[..80].iter().collect();
    let again: Vec<_> = requests[delivered_before..]
        .iter()
        .filter(|r| {
            r["webhook_id"]
                .as_str()
                .is_some_and(|id| before.contains(&id.to_string()))
        })
        .collect();
    assert!(
        again.is_empty(),
        "re-delivered after a graceful restart: {again:?}"
    );
    wait_dead_letters(&server2, "kafka-dead", ids.len(), WAIT);
}
