//! A torn or corrupt tail of the newest segment (what a crash or a bad disk leaves) is detected
//! on start and cut off; every earlier record is intact, the index follows the repaired log, and
//! appends continue from there.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::{Value, json};

fn newest_segment(partition_dir: &Path) -> PathBuf {
    let mut logs: Vec<_> = std::fs::read_dir(partition_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

/// Write 60 events to one partition, stop the server, damage the tail with `damage`, restart.
fn damaged_restart(damage: impl Fn(&Path)) {
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let server = Server::start(&data, &["--partitions", "1"]);
    let mut ids = Vec::new();
    for i in 0..60 {
        let body = json!({"mutations": [{"op": "put", "bucket": "torn", "key": format!("k{}", i % 7), "size": i}]});
        let (status, resp) = server.post("/v1/mutations", body.to_string());
        assert_eq!(status, 200, "{resp}");
        ids.extend(acked_ids(&resp));
    }
    server.wait_caught_up();
    server.stop();

    damage(&newest_segment(&data.join("log/objects/0")));

    let server = Server::start(&data, &["--partitions", "1"]);
    let stderr = server.stderr_text();
    assert!(
        stderr.contains("torn or corrupt tail detected"),
        "repair is reported:\n{stderr}"
    );
    assert!(
        stderr.contains("rebuilding the index from the log"),
        "index follows the log:\n{stderr}"
    );
    let (_, log) = server.get("/v1/log");
    assert_eq!(
        log["topics"]["objects"][0]["end"], 59,
        "only the damaged last record is dropped"
    );

    // The 59 earlier records are intact, in order.
    let events: Vec<Value> = log_events(&Backend::Embedded, &data);
    let got: Vec<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        ids[..59].iter().map(String::as_str).collect::<Vec<_>>()
    );

    // Appends continue at the truncation point, with the key's sequence continuing from the log.
    let (status, resp) = server.post(
        "/v1/mutations",
        json!({"mutations": [{"op": "put", "bucket": "torn", "key": "k3", "size": 1}]}).to_string(),
    );
    assert_eq!(status, 200);
    assert_eq!(resp["results"][0]["offset"], 59);
    server.wait_caught_up();
    let (_, obj) = server.get("/v1/objects/torn/k3");
    let k3_events = events.iter().filter(|e| e["key"] == "k3").count() as i64;
    assert_eq!(obj["sequence"], k3_events + 1);
    assert_eq!(
        index_dump(&data),
        rebuilt_dump(&Backend::Embedded, &data, scratch.path())
    );
    server.stop();
}

#[test]
fn truncated_tail_is_cut_at_the_last_whole_record() {
    damaged_restart(|seg| {
        let len = std::fs::metadata(seg).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(seg)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
    });
}

#[test]
fn corrupted_last_record_fails_its_crc_and_is_cut() {
    damaged_restart(|seg| {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(seg)
            .unwrap();
        let len = f.metadata().unwrap().len();
        let mut b = [0u8];
        f.read_at(&mut b, len - 20).unwrap();
        f.write_at(&[b[0] ^ 0x40], len - 20).unwrap();
    });
}
