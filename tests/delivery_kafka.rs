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

/// A filter uploaded on one node is on every node (its record on `_config`, its bytes in the
/// content store the nodes share): the other node lists it, compiles it from those bytes, and
/// filters a subscription with it.
#[test]
fn filters_uploaded_on_one_node_work_on_another() {
    let backend = Backend::kafka();
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), "hooks", &[]);
    let shared = dir.path().join("content");
    let args = &[
        "--allow-destinations",
        "loopback",
        "--content-store",
        shared.to_str().unwrap(),
    ];
    let a = Server::start_on(&backend, &dir.path().join("a"), args);
    let b = Server::start_on(&backend, &dir.path().join("b"), args);
    // Keeps keys under `raw/`, with 600 KB of data.
    let padding = "x".repeat(600 << 10);
    let wasm = wat::parse_str(format!(
        r#"(module
             (import "tidemark" "key" (func $key (param i32 i32) (result i32)))
             (memory (export "memory") 16)
             (data (i32.const 0) "raw/")
             (data (i32.const 4096) "{padding}")
             (func (export "tidemark_abi_version") (result i32) i32.const 1)
             (func (export "filter") (result i32)
               (if (i32.lt_s (call $key (i32.const 1024) (i32.const 1024)) (i32.const 4))
                 (then (return (i32.const 0))))
               (i32.eq (i32.load (i32.const 1024)) (i32.load (i32.const 0)))))"#
    ))
    .unwrap();
    let resp = client()
        .post(format!("{}/v1/filters/raw-only", a.url))
        .body(wasm.clone())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201, "{}", resp.text().unwrap());

    let shown = wait_for("node b sees the filter", WAIT, || {
        let (status, v) = b.get("/v1/filters/raw-only");
        if status == 200 {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    });
    assert_eq!(shown["versions"][0]["size"], wasm.len());
    let (status, v) = b.post(
        "/v1/filters/raw-only/test",
        json!({"events": [
            {"event_type": "ObjectCreated:Put", "bucket": "photos", "key": "raw/a", "size": 1},
            {"event_type": "ObjectCreated:Put", "bucket": "photos", "key": "cooked/a", "size": 1},
        ]})
        .to_string(),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["kept"].clone(), v["dropped"].clone()),
        (json!(1), json!(1)),
        "{v}"
    );

    create_subscription(
        &b,
        &json!({"name": "raw-hooks", "filter": "raw-only",
                "sink": {"type": "webhook", "url": receiver.url("/raw")},
                "retry": fast_retry(20)}),
    );
    let acked = ingest(
        &b,
        ["raw/1", "cooked/2", "raw/3", "cooked/4"]
            .iter()
            .map(|k| json!({"op": "put", "bucket": "photos", "key": k, "size": 1}))
            .collect(),
    );
    let raw: Vec<String> = [0, 2].iter().map(|i| acked[*i].1.clone()).collect();
    receiver.wait_delivered(&raw, WAIT);
    // Both members of the subscription's group filter their share: nothing else arrives.
    wait_status(&b, "raw-hooks", "no lag", WAIT, |s| s["lag"] == 0);
    std::thread::sleep(Duration::from_millis(300));
    let got = receiver.delivered_ids();
    assert!(
        !got.contains(&acked[1].1) && !got.contains(&acked[3].1),
        "{got:?}"
    );
}

#[test]
fn a_replay_on_kafka_redelivers_exactly_its_range() {
    let backend = Backend::kafka();
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), "replayed", &[]);
    let server = server(&backend, &dir.path().join("data"));
    create_subscription(
        &server,
        &json!({"name": "kafka-replay", "sink": {"type": "webhook", "url": receiver.url("/hook"), "format": "s3"},
                "retry": fast_retry(20)}),
    );
    let puts = |n: usize, round: usize| -> Vec<serde_json::Value> {
        (0..n)
            .map(|i| json!({"op": "put", "bucket": "kreplay", "key": format!("k{}", i % 6), "size": round * 1000 + i}))
            .collect()
    };
    let instant = || {
        std::thread::sleep(Duration::from_millis(50));
        let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        std::thread::sleep(Duration::from_millis(50));
        t
    };
    let mut all = ingest(&server, puts(30, 0));
    let t1 = instant();
    let range = ingest(&server, puts(40, 1));
    let t2 = instant();
    all.extend(range.clone());
    all.extend(ingest(&server, puts(20, 2)));
    receiver.wait_delivered(
        &all.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>(),
        WAIT,
    );

    let out = run(&[
        "replay",
        "--server",
        &server.url,
        "--json",
        "--subscription",
        "kafka-replay",
        "--from",
        &t1,
        "--to",
        &t2,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["result"]["delivered"], 40, "{job}");
    let id = job["id"].as_str().unwrap();
    let replayed: Vec<serde_json::Value> = receiver
        .requests()
        .iter()
        .flat_map(|r| r["records"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["tidemark"]["replay"] == id)
        .collect();
    let mut ids: Vec<&str> = replayed
        .iter()
        .map(|r| r["tidemark"]["eventId"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut expected: Vec<&str> = range.iter().map(|(_, id)| id.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected);
    assert_per_key_order(
        &receiver
            .requests()
            .into_iter()
            .filter(|r| r["records"][0]["tidemark"]["replay"] == id)
            .collect::<Vec<_>>(),
        &range,
    );
    wait_status(&server, "kafka-replay", "no lag", WAIT, |s| {
        s["lag"] == 0 && s["delivered"] == 90
    });
}
