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

/// rclone (Debian's) against the S3 endpoint: a directory tree synced up, checked, synced
/// back down and checked again, then changed and synced again; multipart uploads included
/// (a 12 MiB file with a 5 MiB cutoff).
#[test]
fn rclone_syncs_a_tree_up_and_back_with_no_differences() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"));
    let endpoint = server.s3_url.clone().unwrap();
    let local = dir.path().join("tree");
    let mut rng = fastrand::Rng::with_seed(20);
    let files: Vec<(String, usize)> = vec![
        ("a.txt".into(), 11),
        ("empty".into(), 0),
        ("docs/report 2026.pdf".into(), 70_000),
        ("docs/nested/deep/é+&=.bin".into(), 3_000),
        ("photos/big.raw".into(), 12 << 20),
        ("photos/small.jpg".into(), 150_000),
    ];
    for (name, size) in &files {
        let path = local.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let bytes: Vec<u8> = (0..*size).map(|_| rng.u8(..)).collect();
        std::fs::write(path, bytes).unwrap();
    }
    let rclone = |args: &[&str]| {
        let out = std::process::Command::new("rclone")
            .args(args)
            .args(["--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M"])
            .args(["--retries", "1", "--low-level-retries", "1"])
            // The AWS SDK inside rclone cannot take a CA bundle with its own transport.
            .env_remove("AWS_CA_BUNDLE")
            .env("RCLONE_CONFIG", "/dev/null")
            .env("RCLONE_CONFIG_TM_TYPE", "s3")
            .env("RCLONE_CONFIG_TM_PROVIDER", "Other")
            .env("RCLONE_CONFIG_TM_ACCESS_KEY_ID", "AKTEST")
            .env("RCLONE_CONFIG_TM_SECRET_ACCESS_KEY", "s3cr3t")
            .env("RCLONE_CONFIG_TM_ENDPOINT", &endpoint)
            .env("RCLONE_CONFIG_TM_REGION", "us-east-1")
            .env("RCLONE_CONFIG_TM_FORCE_PATH_STYLE", "true")
            .output()
            .expect("run rclone");
        assert!(
            out.status.success(),
            "rclone {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (up, back) = (local.to_str().unwrap(), dir.path().join("back"));
    let back = back.to_str().unwrap();
    rclone(&["mkdir", "tm:rclone"]);
    rclone(&["sync", up, "tm:rclone/tree"]);
    rclone(&["check", up, "tm:rclone/tree"]);
    rclone(&["sync", "tm:rclone/tree", back]);
    rclone(&["check", up, back]);
    // Changes: one file rewritten, one removed, one added; synced and checked again.
    std::fs::write(local.join("a.txt"), b"rewritten").unwrap();
    std::fs::remove_file(local.join("photos/small.jpg")).unwrap();
    std::fs::write(local.join("docs/new.txt"), b"new").unwrap();
    rclone(&["sync", up, "tm:rclone/tree"]);
    rclone(&["check", up, "tm:rclone/tree"]);
    let listed = rclone(&["lsf", "-R", "tm:rclone/tree"]);
    assert!(!listed.contains("small.jpg"), "{listed}");
    assert!(listed.contains("docs/nested/deep/é+&=.bin"), "{listed}");
}

#[test]
fn standard_headers_checksums_and_parts_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data);
    scenario(&server, "headers_parts");
    server.stop();
    // The event carries what the object keeps.
    let events = log_events(&Backend::Embedded, &data);
    let put = events
        .iter()
        .find(|e| e["bucket"] == "hdrs" && e["key"] == "a.txt")
        .unwrap();
    assert_eq!(put["headers"]["cache-control"], "max-age=60", "{put}");
    assert_eq!(put["headers"]["content-encoding"], "gzip", "{put}");
    let sum = events
        .iter()
        .find(|e| e["bucket"] == "hdrs" && e["key"] == "sum.txt")
        .unwrap();
    assert!(
        sum["checksum"].as_str().unwrap().starts_with("SHA256:"),
        "{sum}"
    );
    let parts = events
        .iter()
        .find(|e| e["bucket"] == "hdrs" && e["key"] == "parts.bin")
        .unwrap();
    assert_eq!(
        parts["part_sizes"],
        json!([5 << 20, 5 << 20, 1024]),
        "{parts}"
    );
}

#[test]
fn versions_are_removed_for_good_and_a_rebuild_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data);
    let facts = scenario(&server, "version_deletes");
    server.stop();
    let events = log_events(&Backend::Embedded, &data);
    let removed: Vec<&Value> = events
        .iter()
        .filter(|e| e["bucket"] == "vdel" && e["key"] == "k")
        .filter(|e| e["event_type"] == "ObjectRemoved:Delete")
        .map(|e| &e["removed_version_id"])
        .collect();
    assert_eq!(
        removed,
        facts["removed"]
            .as_array()
            .unwrap()
            .iter()
            .collect::<Vec<_>>(),
        "one ObjectRemoved:Delete naming each version removed, in order"
    );
    // The restored version is the object after its removal event.
    let first = events
        .iter()
        .find(|e| e["removed_version_id"] == facts["removed"][0])
        .unwrap();
    assert_eq!(first["headers"]["cache-control"], "c1", "{first}");
    // The index rebuilt from the log is the live one, history included.
    assert_eq!(
        rebuilt_dump(&Backend::Embedded, &data, dir.path()),
        index_dump(&data)
    );
}

#[test]
fn multipart_upload_listings_roll_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"));
    scenario(&server, "uploads");
}
