//! `_config` compaction on the embedded log, through a real server: entities updated many
//! times and deleted leave only their newest record on disk, and a restart loads exactly the
//! catalog the server had, generations (delivery positions) included.

mod common;

use std::path::Path;
use std::time::Duration;

use common::receiver::Receiver;
use common::*;
use serde_json::{Value, json};

/// Bytes under every directory named `_config` below `dir`.
fn config_bytes(dir: &Path) -> u64 {
    fn walk(dir: &Path, inside: bool) -> u64 {
        let mut total = 0;
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let here = inside || entry.file_name() == "_config";
            if path.is_dir() {
                total += walk(&path, here);
            } else if here {
                total += entry.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        total
    }
    walk(dir, false)
}

fn sub(name: &str, receiver: &Receiver, attempts: u32) -> Value {
    json!({
        "name": name,
        "sink": {"type": "webhook", "url": receiver.url(&format!("/{name}"))},
        "retry": fast_retry(attempts),
    })
}

fn listed(server: &Server) -> Vec<(String, Value, Value)> {
    let (status, v) = server.get("/v1/subscriptions");
    assert_eq!(status, 200, "{v}");
    let mut out: Vec<_> = v["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["retry"].clone(),
                s["created_at"].clone(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn compaction_reclaims_replaced_config_and_a_restart_loads_the_same_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let receiver = Receiver::start(dir.path(), "receiver", &[]);
    let args = |compaction_ms: &'static str| {
        [
            "--allow-destinations",
            "loopback",
            "--segment-bytes",
            "16384",
            "--compaction-check-ms",
            compaction_ms,
            "--tombstone-retention-ms",
            "0",
        ]
    };
    // First without compaction, to see what the changes take on disk.
    let server = Server::start(&data, &args("3600000"));
    for i in 0..10 {
        create_subscription(&server, &sub(&format!("s{i}"), &receiver, 1));
    }
    // Deliveries before the churn: the positions must survive it.
    let keys: Vec<String> = (0..20).map(|i| format!("early-{i}")).collect();
    let early = put_keys(&server, "bkt", &keys);
    receiver.wait_requests(200, Duration::from_secs(30));
    for round in 2..40 {
        for i in 0..10 {
            let name = format!("s{i}");
            let (status, v) = server.put(
                &format!("/v1/subscriptions/{name}"),
                &sub(&name, &receiver, round),
            );
            assert_eq!(status, 200, "{v}");
        }
    }
    for i in 0..5 {
        let (status, v) = server.delete(&format!("/v1/subscriptions/s{i}"));
        assert!(status == 204 || status == 200, "{status} {v}");
    }
    let expected = listed(&server);
    assert_eq!(expected.len(), 5);
    server.stop();
    let grown = config_bytes(&data);

    let server = Server::start(&data, &args("200"));
    assert_eq!(listed(&server), expected);
    // 390 changes; what is left is about a record per entity and per segment.
    let compacted = wait_for("compaction", Duration::from_secs(30), || {
        let now = config_bytes(&data);
        (now * 3 < grown)
            .then_some(now)
            .ok_or(format!("{now} of {grown}"))
    });
    eprintln!("_config: {grown} bytes before compaction, {compacted} after");
    server.stop();

    let server = Server::start(&data, &args("200"));
    assert_eq!(listed(&server), expected);
    // The same generations: nothing delivered before is delivered again.
    let before = receiver.requests().len();
    let keys: Vec<String> = (0..5).map(|i| format!("late-{i}")).collect();
    put_keys(&server, "bkt", &keys);
    receiver.wait_requests(before + 25, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let again = receiver
        .requests()
        .iter()
        .skip(before)
        .filter(|r| early.iter().any(|id| r["webhook_id"] == id.as_str()))
        .count();
    assert_eq!(
        again, 0,
        "events delivered before the restart were delivered again"
    );
}
