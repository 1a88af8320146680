//! The S3 API end to end: boto3 (`tests/py/s3_client.py`) against a real
//! `tidemark serve --s3-listen`, then every mutation checked as its event in the log.

mod common;

use std::process::Command;

use common::{Backend, Server, log_events};
use serde_json::{Value, json};

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/s3_client.py");

#[test]
fn boto3_drives_every_operation_and_each_mutation_is_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &[
            "--s3-listen",
            "127.0.0.1:0",
            "--s3-access-key",
            "AKTEST",
            "--s3-secret-key",
            "s3cr3t",
        ],
    );
    let s3 = server.s3_url.clone().expect("s3 address");
    let out = Command::new("python3")
        .args([CLIENT, &s3, "AKTEST", "s3cr3t"])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "s3_client.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let events = log_events(&Backend::Embedded, &data);
    let seen = |t: &str, key: &str| {
        events
            .iter()
            .filter(|e| e["event_type"] == t && e["key"] == key && e["bucket"] == "photos")
            .count()
    };
    assert_eq!(seen("BucketCreated", ""), 1, "{events:#?}");
    assert_eq!(seen("BucketRemoved", ""), 1);
    assert_eq!(seen("ObjectCreated:Put", "a/1.txt"), 1);
    assert_eq!(seen("ObjectCreated:Copy", "a/2.txt"), 1);
    assert_eq!(seen("ObjectCreated:Copy", "b.txt"), 1);
    assert_eq!(seen("ObjectTagging:Put", "a/1.txt"), 1);
    assert_eq!(seen("ObjectTagging:Delete", "a/1.txt"), 1);
    for key in ["a/1.txt", "a/2.txt", "b.txt"] {
        assert_eq!(seen("ObjectRemoved:Delete", key), 1, "{key}");
    }
    // Refused requests changed nothing (no other objects, no other buckets); the four
    // refused by authentication to an existing bucket are on record: wrong secret, unknown
    // key, expired presigned URL, anonymous.
    assert_eq!(seen("ObjectAccess:Denied", "evil"), 2);
    assert_eq!(seen("ObjectAccess:Denied", "b.txt"), 2);
    let mut denied: Vec<&Value> = events
        .iter()
        .filter(|e| e["event_type"] == "ObjectAccess:Denied")
        .collect();
    denied.sort_by_key(|e| e["event_time"].as_str().unwrap().to_string());
    let claimed: Vec<&Value> = denied.iter().map(|e| &e["requester"]).collect();
    assert_eq!(
        claimed,
        [
            &json!("AKTEST"),
            &json!("NOPE"),
            &json!("AKTEST"),
            &Value::Null
        ]
    );
    assert!(denied.iter().all(|e| e["source_ip"] == "127.0.0.1"));
    assert!(
        events.iter().all(|e| e["bucket"] == "photos"
            && ["a/1.txt", "a/2.txt", "b.txt", "evil", ""].contains(&e["key"].as_str().unwrap())),
        "{events:#?}"
    );
    assert_eq!(events.len(), 14, "{events:#?}");
    server.stop();
}
