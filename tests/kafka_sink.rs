//! The `kafka` sink against a real Kafka-protocol broker (Tansu on loopback), read back by an
//! independent client (confluent-kafka): every acknowledged event once, keyed `bucket/key`,
//! each key in one partition in sequence order; JSON and Confluent Avro values (decoded with
//! the schema from Tidemark's registry); bad settings refused by name.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

use common::queues::*;
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

fn signal(pid: u32, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

#[test]
fn a_frozen_broker_and_a_killed_tidemark_lose_nothing_and_a_replay_redelivers() {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--allow-destinations", "loopback"];
    create_topic(&broker.addr, "changes", 3);
    let mut server = Server::start(&data, &args);
    let mut spec = kafka_spec("tokafka", &broker.addr, "changes", "json");
    spec["sink"]["timeout_ms"] = json!(2000);
    let (retry, circuit) = patient();
    spec["retry"] = retry;
    spec["circuit"] = circuit;
    spec["batch"] = json!({"max_events": 20, "max_wait_ms": 5});
    create_subscription(&server, &spec);
    let load = Load::start(&server.url, "photos", 21);
    std::thread::sleep(Duration::from_millis(600));
    // The broker stops answering mid-stream (SIGSTOP), then comes back.
    signal(broker.pid(), "-STOP");
    wait_status(
        &server,
        "tokafka",
        "an error",
        Duration::from_secs(60),
        |s| !s["last_error"].is_null(),
    );
    signal(broker.pid(), "-CONT");
    std::thread::sleep(Duration::from_millis(600));
    // SIGKILL mid-delivery; the restarted node goes on from its committed positions.
    server.kill();
    let mut acked = load.finish();
    server = Server::start(&data, &args);
    let t1 = instant();
    let range = put_keys(
        &server,
        "docs",
        &(0..30).map(|i| format!("r{i}")).collect::<Vec<_>>(),
    );
    let t2 = instant();
    acked.extend(range.iter().cloned());
    wait_caught_up(&server, "tokafka", Duration::from_secs(120));

    let records = consume(&broker.addr, "changes", acked.len(), &[]);
    // In partition order (offsets), as a consumer of each partition sees them.
    let mut sorted: Vec<&Value> = records.iter().collect();
    sorted.sort_by_key(|r| (r["partition"].as_u64(), r["offset"].as_u64()));
    let seen: Vec<(String, String, i64)> = sorted
        .iter()
        .map(|r| {
            let v = &r["value"];
            (
                v["event_id"].as_str().unwrap().to_string(),
                r["key"].as_str().unwrap().to_string(),
                v["sequence"].as_i64().unwrap(),
            )
        })
        .collect();
    let repeats = assert_at_least_once_in_key_order(&seen, &acked, true);
    eprintln!("{} events, {repeats} repeated", acked.len());

    let job = replay(&server, "tokafka", &t1, &t2);
    let records = consume(&broker.addr, "changes", seen.len() + range.len(), &[]);
    let mut replayed: Vec<&str> = records
        .iter()
        .filter(|r| r["headers"]["tidemark_replay"] == job.as_str())
        .map(|r| r["value"]["event_id"].as_str().unwrap())
        .collect();
    let mut want: Vec<&str> = range.iter().map(String::as_str).collect();
    replayed.sort();
    want.sort();
    assert_eq!(replayed, want, "the range, once each");
}

#[test]
fn a_cluster_down_at_the_start_gets_every_event_once_it_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--allow-destinations", "loopback"],
    );
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let mut spec = kafka_spec("late", &brokers, "late", "json");
    spec["sink"]["timeout_ms"] = json!(2000);
    let (retry, circuit) = patient();
    spec["retry"] = retry;
    spec["circuit"] = circuit;
    create_subscription(&server, &spec);
    let acked: Vec<String> = ingest(
        &server,
        (0..60)
            .map(|i| json!({"op": "put", "bucket": "media", "key": format!("k{}", i % 9), "size": i}))
            .collect(),
    )
    .into_iter()
    .map(|(_, id)| id)
    .collect();
    wait_status(&server, "late", "an error", Duration::from_secs(60), |s| {
        !s["last_error"].is_null()
    });
    let broker = TestBroker::start_with(&tidemark_core::log::kafka::test_broker::BrokerOptions {
        port: Some(port),
        ..Default::default()
    });
    create_topic(&broker.addr, "late", 2);
    wait_caught_up(&server, "late", Duration::from_secs(120));
    let status = subscription_status(&server, "late");
    assert_eq!(status["dead_letters"], 0, "{status}");
    let records = consume(&broker.addr, "late", acked.len(), &[]);
    let mut sorted: Vec<&Value> = records.iter().collect();
    sorted.sort_by_key(|r| (r["partition"].as_u64(), r["offset"].as_u64()));
    let seen: Vec<(String, String, i64)> = sorted
        .iter()
        .map(|r| {
            let v = &r["value"];
            (
                v["event_id"].as_str().unwrap().to_string(),
                r["key"].as_str().unwrap().to_string(),
                v["sequence"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_at_least_once_in_key_order(&seen, &acked, false);
}

#[test]
fn avro_records_carry_the_ids_of_the_users_own_registry() {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().unwrap();
    // The user's registry: another node's built-in one (Confluent's API), with unrelated
    // schemas in it so its ids differ from ours.
    let registry = Server::start(&dir.path().join("registry"), &[]);
    for i in 0..3 {
        let schema = format!(
            r#"{{"type":"record","name":"Other{i}","fields":[{{"name":"a","type":"string"}}]}}"#
        );
        let (status, _) = registry.post(
            &format!("/subjects/other{i}-value/versions"),
            json!({ "schema": schema }).to_string(),
        );
        assert_eq!(status, 200);
    }
    let server = Server::start(
        &dir.path().join("data"),
        &["--allow-destinations", "loopback"],
    );
    create_topic(&broker.addr, "registered", 2);
    let mut spec = kafka_spec("theirs", &broker.addr, "registered", "avro");
    spec["sink"]["schema_registry"] = json!({"url": registry.url});
    create_subscription(&server, &spec);
    // The registry unreachable: shown in status, nothing delivered or dead-lettered.
    let mut spec = kafka_spec("noregistry", &broker.addr, "registered", "avro");
    spec["sink"]["schema_registry"] = json!({"url": format!("http://127.0.0.1:{}", free_port())});
    spec["retry"] = patient().0;
    create_subscription(&server, &spec);
    let acked: Vec<String> = ingest(
        &server,
        (0..40)
            .map(|i| json!({"op": "put", "bucket": "media", "key": format!("k{}", i % 7), "size": i}))
            .collect(),
    )
    .into_iter()
    .map(|(_, id)| id)
    .collect();
    wait_status(
        &server,
        "theirs",
        "delivered",
        Duration::from_secs(60),
        |s| s["delivered"] == acked.len(),
    );
    // Decoded by confluent-kafka with the schemas of the user's registry, by the records' ids.
    let records = consume(
        &broker.addr,
        "registered",
        acked.len(),
        &["--avro", &registry.url],
    );
    let ids: HashSet<String> = records
        .iter()
        .map(|r| r["value"]["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, acked.iter().cloned().collect::<HashSet<_>>());
    let (status, latest) = registry.get("/subjects/registered-value/versions/latest");
    assert_eq!(status, 200, "{latest}");
    assert!(latest["id"].as_u64() > Some(3), "{latest}");
    let s = wait_status(
        &server,
        "noregistry",
        "an error",
        Duration::from_secs(60),
        |s| {
            s["last_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("schema registry"))
        },
    );
    assert_eq!(
        (s["delivered"].as_u64(), s["dead_letters"].as_u64()),
        (Some(0), Some(0)),
        "{s}"
    );
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
        (
            with(
                "schema_registry",
                json!({"url": "https://registry.example"}),
            ),
            "sink.schema_registry",
            "avro",
        ),
    ];
    assert_sinks_refused(&server, cases);
}
