//! On Kafka, the topic is readable by any Kafka tool: confluent-kafka (librdkafka 2.16, from
//! PyPI) consumes `objects`, finds the Confluent header on every value, resolves the schema id
//! in our registry and decodes every event with its own AvroDeserializer.

mod common;

use std::process::Command;

use common::*;
use serde_json::{Value, json};

#[test]
fn confluent_kafka_reads_and_decodes_the_topic() {
    let backend = Backend::kafka();
    let Backend::Kafka(broker) = &backend else {
        unreachable!()
    };
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let server = Server::start_on(&backend, &data, &[]);
    let mut rng = fastrand::Rng::with_seed(9);
    let mutations: Vec<Value> = (0..200)
        .map(|_| random_mutation(&mut rng, "interop", 40))
        .collect();
    let (status, resp) = server.post(
        "/v1/mutations",
        json!({ "mutations": mutations }).to_string(),
    );
    assert_eq!(status, 200, "{resp}");
    let acked = acked_ids(&resp);
    assert!(acked.len() > 100);

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/consume_confluent.py");
    let out = Command::new("python3")
        .arg(script)
        .args([&broker.addr, &server.url, &acked.len().to_string()])
        .output()
        .expect("python3 is needed for this test");
    assert!(
        out.status.success(),
        "confluent-kafka consumer failed (needs tests/py/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(theirs.len(), acked.len());

    // The same events as Tidemark decodes them itself, matched by log position.
    let ours = log_events(&backend, &data);
    let at = |v: &Value| {
        (
            v["partition"].as_u64().unwrap(),
            v["offset"].as_u64().unwrap(),
        )
    };
    for t in &theirs {
        let o = ours
            .iter()
            .find(|o| at(o) == at(t))
            .expect("same position in our view");
        for f in [
            "event_id",
            "event_type",
            "bucket",
            "key",
            "sequence",
            "size",
            "metadata",
            "tags",
        ] {
            assert_eq!(t[f], o[f], "field {f}: confluent-kafka {t} vs tidemark {o}");
        }
        assert_eq!(
            t["previous_sequence"],
            o["previous"]
                .get("sequence")
                .cloned()
                .unwrap_or(Value::Null)
        );
    }
    let (_, latest) = server.get("/subjects/objects-value/versions/latest");
    assert!(theirs.iter().all(|t| t["schema_id"] == latest["id"]));
    server.stop();
}
