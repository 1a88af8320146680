//! S3 versioning end to end: boto3 (`tests/py/s3_versioning.py`) against a real
//! `tidemark serve --s3-listen`, before and after a restart, then the events in the log.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Backend, Server, log_events};

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/s3_versioning.py");

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

fn client(server: &Server, phase: &str) {
    let s3 = server.s3_url.clone().expect("s3 address");
    let out = Command::new("python3")
        .args([CLIENT, &s3, "AKTEST", "s3cr3t", phase])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "s3_versioning.py {phase} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn versions_stay_readable_after_a_delete_marker_and_the_setting_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data);
    client(&server, "before");
    server.stop();
    let server = start(&data);
    client(&server, "after-restart");
    let events = log_events(&Backend::Embedded, &data);
    let seen = |t: &str, bucket: &str, key: &str| {
        events
            .iter()
            .filter(|e| e["event_type"] == t && e["bucket"] == bucket && e["key"] == key)
            .count()
    };
    assert_eq!(seen("BucketConfig:Changed", "docs", ""), 1, "{events:#?}");
    assert_eq!(seen("ObjectCreated:Put", "docs", "report.txt"), 2);
    assert_eq!(
        seen("ObjectRemoved:DeleteMarkerCreated", "docs", "report.txt"),
        2
    );
    assert_eq!(seen("ObjectRemoved:Delete", "docs", "report.txt"), 0);
    assert_eq!(seen("ObjectRemoved:Delete", "plain", "k"), 1);
    // Refused requests (bad status, missing bucket) and the removal of a version the key
    // never had appended nothing:
    // 2 buckets, 1 config change, 5 puts, 2 markers (stacked) and 1 delete.
    assert_eq!(events.len(), 11, "{events:#?}");
    server.stop();
}
