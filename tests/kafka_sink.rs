//! The `kafka` sink against a real Kafka-protocol broker (Tansu on loopback), read back by an
//! independent client (confluent-kafka): every acknowledged event once, keyed `bucket/key`,
//! each key in one partition in sequence order; JSON and Confluent Avro values (decoded with
//! the schema from Tidemark's registry); bad settings refused by name.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const CONSUMER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/consume_topic.py");

fn consume(brokers: &str, topic: &str, expected: usize, extra: &[&str]) -> Vec<Value> {
    let out = Command::new("python3")
        .arg(CONSUMER)
        .args([brokers, topic, &expected.to_string()])
        .args(extra)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "consume_topic.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn create_topic(brokers: &str, topic: &str, partitions: u32) {
    let out = Command::new("python3")
        .arg(CONSUMER)
        .args(["create", brokers, topic, &partitions.to_string()])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "creating {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn kafka_spec(name: &str, brokers: &str, topic: &str, format: &str) -> Value {
    let mut properties = serde_json::Map::new();
    for (k, v) in TestBroker::producer_workaround() {
        properties.insert(k, v.into());
    }
    json!({"name": name, "start": "earliest", "sink": {
        "type": "kafka", "brokers": brokers, "topic": topic, "format": format,
        "properties": properties,
    }})
}

#[test]
fn events_reach_the_users_topic_once_in_key_order_as_json_and_avro() {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--allow-destinations", "loopback"],
    );
    create_topic(&broker.addr, "changes", 3);
    create_topic(&broker.addr, "changes-avro", 2);
    let mut rng = fastrand::Rng::with_seed(41);
    let mut acked: HashSet<String> = HashSet::new();
    for bucket in ["photos", "docs"] {
        let mutations: Vec<Value> = (0..150)
            .map(|_| random_mutation(&mut rng, bucket, 20))
            .collect();
        let (status, v) = server.post(
            "/v1/mutations",
            json!({ "mutations": mutations }).to_string(),
        );
        assert_eq!(status, 200, "{v}");
        acked.extend(acked_ids(&v));
    }
    create_subscription(
        &server,
        &kafka_spec("tojson", &broker.addr, "changes", "json"),
    );
    create_subscription(
        &server,
        &kafka_spec("toavro", &broker.addr, "changes-avro", "avro"),
    );
    for name in ["tojson", "toavro"] {
        wait_status(&server, name, "delivered", Duration::from_secs(120), |s| {
            s["lag"] == 0 && s["delivered"] == acked.len()
        });
    }

    let records = consume(&broker.addr, "changes", acked.len(), &[]);
    assert_eq!(records.len(), acked.len());
    let ids: HashSet<String> = records
        .iter()
        .map(|r| r["value"]["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, acked, "every acknowledged event once");
    // Keyed bucket/key: each key in one partition, its sequences ascending with offsets.
    let mut by_key: HashMap<String, (u64, Vec<(u64, i64)>)> = HashMap::new();
    for r in &records {
        let key = r["key"].as_str().unwrap().to_string();
        let v = &r["value"];
        assert_eq!(
            key,
            format!(
                "{}/{}",
                v["bucket"].as_str().unwrap(),
                v["key"].as_str().unwrap()
            )
        );
        assert_eq!(r["headers"]["tidemark_event_id"], v["event_id"]);
        let partition = r["partition"].as_u64().unwrap();
        let entry = by_key.entry(key.clone()).or_insert((partition, Vec::new()));
        assert_eq!(entry.0, partition, "{key} is in one partition");
        entry.1.push((
            r["offset"].as_u64().unwrap(),
            v["sequence"].as_i64().unwrap(),
        ));
    }
    for (key, (_, mut seen)) in by_key {
        seen.sort();
        assert!(
            seen.windows(2).all(|w| w[0].1 < w[1].1),
            "{key}: sequences follow offsets: {seen:?}"
        );
    }

    // Avro: the log's Confluent-framed records, decoded with the schema from our registry.
    let records = consume(
        &broker.addr,
        "changes-avro",
        acked.len(),
        &["--avro", &server.url],
    );
    let ids: HashSet<String> = records
        .iter()
        .map(|r| r["value"]["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, acked);
}

#[test]
fn bad_kafka_settings_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let base = json!({"type": "kafka", "brokers": "127.0.0.1:9092", "topic": "t"});
    let with = |k: &str, v: Value| {
        let mut s = base.clone();
        s[k] = v;
        s
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            with("brokers", json!("nohost")),
            "sink.brokers",
            "host:port",
        ),
        (
            with("topic", json!("bad topic")),
            "sink.topic",
            "topic name",
        ),
        (with("key", json!("{bucket}/{nope}")), "sink.key", "{nope}"),
        (with("format", json!("xml")), "sink.format", "'xml'"),
        (
            with("properties", json!({"enable.idempotence": "false"})),
            "sink.properties.enable.idempotence",
            "set by Tidemark",
        ),
        // Nothing that runs a program or reads a path on the server.
        (
            with(
                "properties",
                json!({"sasl.kerberos.kinit.cmd": "touch /tmp/owned"}),
            ),
            "sink.properties.sasl.kerberos.kinit.cmd",
            "not a property a subscription may set",
        ),
        (
            with("properties", json!({"ssl.ca.location": "/etc/shadow"})),
            "sink.properties.ssl.ca.location",
            "not a property a subscription may set",
        ),
        // Private and loopback brokers only where the operator allowed them.
        (
            with("brokers", json!("10.1.2.3:9092")),
            "sink.brokers",
            "private",
        ),
        (
            with("brokers", json!("127.0.0.1:9092")),
            "sink.brokers",
            "loopback",
        ),
    ];
    for (sink, field, needle) in cases {
        let spec = json!({"name": "bad", "sink": sink});
        let (status, v) = server.post("/v1/subscriptions", spec.to_string());
        assert_eq!(status, 400, "{spec}: {v}");
        assert_eq!(v["error"]["field"], field, "{spec}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{spec}: want '{needle}' in {v}"
        );
    }
}
