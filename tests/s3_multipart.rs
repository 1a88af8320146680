//! S3 multipart uploads end to end: boto3 (`tests/py/s3_multipart.py`) against a real
//! `tidemark serve --s3-listen`; each completion checked as its event in the log.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Backend, Server, log_events};
use serde_json::Value;

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/s3_multipart.py");
const KEYS: [&str; 6] = [
    "--s3-listen",
    "127.0.0.1:0",
    "--s3-access-key",
    "AKTEST",
    "--s3-secret-key",
    "s3cr3t",
];
/// The large upload: big enough that holding it in memory would show.
const BIG_MIB: u64 = 1024;

/// Run the client in `mode`; its last stdout line is JSON.
fn client(server: &Server, args: &[&str]) -> Value {
    let s3 = server.s3_url.clone().expect("s3 address");
    let out = Command::new("python3")
        .args([CLIENT, &s3, "AKTEST", "s3cr3t"])
        .args(args)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "s3_multipart.py {args:?} failed:\n{stdout}\n{}\nserver:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.stderr_text()
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("JSON result")
}

/// The most memory the process has held (`VmHWM`), in bytes.
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib << 10
}

fn completions(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["event_type"] == "ObjectCreated:CompleteMultipartUpload")
        .collect()
}

/// Content blob files under `<data-dir>/blobs/<xx>/`.
fn blob_files(data: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for dir in std::fs::read_dir(data.join("blobs")).unwrap() {
        let dir = dir.unwrap().path();
        if dir.file_name().unwrap().len() == 2 {
            for f in std::fs::read_dir(&dir).unwrap() {
                names.push(f.unwrap().file_name().to_string_lossy().into_owned());
            }
        }
    }
    names.sort();
    names
}

#[test]
fn a_one_gib_multipart_upload_round_trips_in_bounded_server_memory() {
    // On tmpfs: the parts, the blob and the client's file together are a few GiB.
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let data = dir.path().join("data");
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let server = Server::start(&data, &KEYS);
    let size = BIG_MIB.to_string();
    let out = client(&server, &["big", scratch.to_str().unwrap(), &size]);
    let peak = peak_memory(server.pid());
    eprintln!(
        "1 GiB multipart: upload {}s, download {}s, server peak memory {} MiB",
        out["upload_s"],
        out["download_s"],
        peak >> 20
    );
    assert!(
        peak < 300 << 20,
        "server peak memory {} MiB for a {BIG_MIB} MiB object",
        peak >> 20
    );
    let events = log_events(&Backend::Embedded, &data);
    let done = completions(&events);
    assert_eq!(done.len(), 1, "{events:#?}");
    let e = done[0];
    assert_eq!(e["key"], "one.bin");
    assert_eq!(e["size"].as_u64(), Some(BIG_MIB << 20), "{e:#}");
    assert_eq!(e["sha256"], out["sha256"], "{e:#}");
    assert_eq!(
        e["etag"].as_str().map(|t| t.trim_matches('"')),
        out["etag"].as_str()
    );
    assert!(out["etag"].as_str().unwrap().ends_with("-16"), "{out}");
    // The parts were removed once the object was stored.
    let left: Vec<_> = std::fs::read_dir(data.join("multipart")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    server.stop();
}

#[test]
fn parts_listing_abort_refusals_restart_and_duplicate_content() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &KEYS);
    let open = client(&server, &["api"]);
    let upload_id = open["open_upload"].as_str().unwrap().to_string();
    let events = log_events(&Backend::Embedded, &data);
    // Refused completions and the aborted upload appended nothing.
    let done = completions(&events);
    let keys: Vec<_> = done.iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["dup/a", "dup/b"], "{events:#?}");
    assert_eq!(
        events.len(),
        3,
        "BucketCreated and two completions: {events:#?}"
    );
    let five_and_tail = (5 << 20) + "the end".len() as u64;
    for e in &done {
        assert_eq!(e["size"].as_u64(), Some(five_and_tail), "{e:#}");
        assert!(e["etag"].as_str().unwrap().ends_with("-2"), "{e:#}");
    }
    // Identical content under two keys is one blob.
    assert_eq!(done[0]["sha256"], done[1]["sha256"]);
    assert_eq!(
        blob_files(&data),
        [done[0]["sha256"].as_str().unwrap()],
        "one blob for both keys"
    );

    // The open upload survives a restart and completes after it.
    server.stop();
    let server = Server::start(&data, &KEYS);
    client(&server, &["resume", &upload_id]);
    let events = log_events(&Backend::Embedded, &data);
    let done = completions(&events);
    assert_eq!(done.len(), 3, "{events:#?}");
    assert_eq!(done[2]["key"], "refused");
    assert_eq!(
        done[2]["size"].as_u64(),
        Some((5 << 20) + "the end".len() as u64)
    );
    server.stop();
}
