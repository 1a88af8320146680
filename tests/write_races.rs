//! One typed write path: S3 and HTTP writers racing on the same keys get only documented
//! answers (never a 500 because an object vanished between a check and a write), and the log
//! and the index agree afterwards.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

#[test]
fn concurrent_deletes_tags_and_copies_get_documented_answers() {
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
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/s3_race.py"))
        .args([
            server.s3_url.as_deref().unwrap(),
            &server.url,
            "races",
            "60",
            "8",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "s3_race.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["bad"], serde_json::json!([]), "answers: {}", v["answers"]);
    let answers = v["answers"].as_object().unwrap();
    // The race did happen: some writes found their object gone.
    assert!(
        answers
            .keys()
            .any(|k| k.ends_with(" 404") || k.ends_with("not_found")),
        "{answers:?}"
    );
    let acked: Vec<String> = v["acked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect();
    server.wait_caught_up();
    server.stop();
    assert_log_and_index_intact(&Backend::Embedded, &data, &acked, dir.path());
}
