//! S3 behaviour real clients rely on, each cause with boto3 (`tests/py/s3_compat.py`, written
//! from the S3 API reference) against `tidemark serve --s3-listen`, then what the log holds.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::{Value, json};

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/s3_compat.py");

fn start(data: &Path) -> Server {
    Server::start(
        data,
        &[
            "--s3-listen",
            "127.0.0.1:0",
            "--s3-access-key",
            "AKTEST",
            "--s3-secret-key",
            "s3cr3t",
        ],
    )
}

/// Runs one scenario of `s3_compat.py`; the facts it printed.
fn scenario(server: &Server, name: &str) -> Value {
    let s3 = server.s3_url.clone().expect("s3 address");
    let out = Command::new("python3")
        .args([CLIENT, &s3, "AKTEST", "s3cr3t", name])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "s3_compat.py {name} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap()
}

fn create_bucket(server: &Server, bucket: &str) {
    common::aws::Aws::new(&server.data_dir, server).ok(&["create-bucket", "--bucket", bucket]);
}

#[test]
fn delimiter_listings_page_to_the_end_and_encode_names() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"));
    create_bucket(&server, "tree");
    let mut mutations: Vec<Value> = (0..990)
        .map(|i| json!({"op": "put", "bucket": "tree", "key": format!("p{:03}/k{i}", i % 300), "size": 1}))
        .collect();
    mutations.extend(
        (0..10)
            .map(|i| json!({"op": "put", "bucket": "tree", "key": format!("top{i}"), "size": 1})),
    );
    ingest(&server, mutations);
    scenario(&server, "listing");
}

#[test]
fn answers_carry_request_ids_and_small_s3_rules_hold() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"));
    scenario(&server, "basics");
}

#[test]
fn digests_that_do_not_match_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data);
    let facts = scenario(&server, "integrity");
    server.stop();
    let events = log_events(&Backend::Embedded, &data);
    let count = |key: &str| {
        events
            .iter()
            .filter(|e| e["bucket"] == "sums" && e["key"] == key)
            .count()
    };
    for key in facts["refused"].as_array().unwrap() {
        assert_eq!(count(key.as_str().unwrap()), 0, "{key}: {events:#?}");
    }
    assert_eq!(count("keep.txt"), 1, "only the first upload of keep.txt");
    assert_eq!(count("trailer.txt"), 1);
}

#[test]
fn conditional_writes_let_exactly_one_racer_win() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data);
    let facts = scenario(&server, "conditional");
    server.stop();
    let events = log_events(&Backend::Embedded, &data);
    let created = |key: &str| {
        events
            .iter()
            .filter(|e| e["bucket"] == "cond" && e["key"] == key)
            .filter(|e| {
                e["event_type"]
                    .as_str()
                    .unwrap()
                    .starts_with("ObjectCreated:")
            })
            .count()
    };
    for key in facts["races"].as_array().unwrap() {
        assert_eq!(
            created(key.as_str().unwrap()),
            1,
            "{key}: one winner, one event"
        );
    }
    assert_eq!(
        created("once.txt"),
        2,
        "the create and the If-Match replace"
    );
    assert_eq!(
        created("multi.bin"),
        1,
        "a retried completion appends nothing"
    );
    assert_eq!(created("never.txt"), 0);
}

#[test]
fn delete_markers_stack_and_version_listings_page() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data);
    scenario(&server, "versioning");
    server.stop();
    let events = log_events(&Backend::Embedded, &data);
    let markers = |key: &str| {
        events
            .iter()
            .filter(|e| e["bucket"] == "ver" && e["key"] == key)
            .filter(|e| e["event_type"] == "ObjectRemoved:DeleteMarkerCreated")
            .count()
    };
    assert_eq!(markers("k"), 2);
    assert_eq!(markers("ghost"), 1);
    assert_eq!(markers("ghost2"), 1);
}

#[test]
fn a_suspended_bucket_writes_the_null_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"));
    scenario(&server, "suspended");
}

#[test]
fn parts_copied_from_object_ranges_assemble_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"));
    scenario(&server, "part_copy");
}
