//! Memory is set by configuration, not by the number of objects: a million distinct keys
//! (puts with user metadata, about 1.6 KB per key when every head lived in memory) through a
//! server with a 32 MiB cache stay within the cache plus a fixed overhead, and a restart
//! reaches ready without reading every head back.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const KEYS: usize = 1_000_000;
const BATCH: usize = 5_000;
const CACHE: u64 = 32 << 20;
/// What a server takes besides its caches: code, the runtime, the log's buffers, the
/// materializer's batches, request buffers (measured: about 120 MiB in a debug build).
const OVERHEAD: u64 = 320 << 20;

/// `VmRSS` and `VmHWM` of a process, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn batch(start: usize) -> String {
    let mutations: Vec<_> = (start..start + BATCH)
        .map(|i| {
            json!({"op": "put", "bucket": "scale", "key": format!("objects/{i:08}.bin"),
                   "size": i % 65536, "etag": format!("\"e{i:x}\""),
                   "content_type": "application/octet-stream",
                   "metadata": {"team": "ml", "camera": "x100", "run": format!("run-{}", i % 97)}})
        })
        .collect();
    json!({ "mutations": mutations }).to_string()
}

#[test]
fn a_million_keys_in_bounded_memory_and_a_restart_reads_no_heads() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cache = CACHE.to_string();
    let args = ["--cache-bytes", cache.as_str(), "--fsync", "interval"];
    let server = Server::start(&data, &args);
    let mut peak = 0;
    for start in (0..KEYS).step_by(BATCH) {
        let (status, v) = server.post("/v1/mutations", batch(start));
        assert_eq!(status, 200, "{v}");
        peak = peak.max(memory(server.pid()).0);
    }
    // Every key written once more: each needs its head back (sequence 2, previous state).
    for start in (0..KEYS / 10).step_by(BATCH) {
        let (status, v) = server.post("/v1/mutations", batch(start));
        assert_eq!(status, 200, "{v}");
        peak = peak.max(memory(server.pid()).0);
    }
    let (_, head) = server.get("/v1/objects/scale/objects/00000007.bin?history=true");
    assert_eq!(head["sequence"], 2, "{head}");
    assert!(
        peak < CACHE + OVERHEAD,
        "resident memory reached {} MiB with a {} MiB cache over {KEYS} keys",
        peak >> 20,
        CACHE >> 20
    );
    server.wait_caught_up();
    server.stop();

    // A restart reads no heads: ready at once, and its memory shows it.
    let started = Instant::now();
    let server = Server::start(&data, &args);
    wait_for("ready after the restart", Duration::from_secs(60), || {
        let (status, v) = server.get("/readyz");
        (status == 200).then_some(()).ok_or(v.to_string())
    });
    let ready_in = started.elapsed();
    let (_, hwm) = memory(server.pid());
    assert!(
        hwm < CACHE + OVERHEAD,
        "a restart over {KEYS} keys peaked at {} MiB",
        hwm >> 20
    );
    // Writes after the restart see the heads written before it.
    let (status, v) = server.post(
        "/v1/mutations",
        json!({"mutations": [{"op": "delete", "bucket": "scale", "key": "objects/00999999.bin"}]})
            .to_string(),
    );
    assert_eq!(status, 200, "{v}");
    assert!(v["results"][0]["event_id"].is_string(), "{v}");
    eprintln!(
        "{KEYS} keys: peak {} MiB while writing; restart ready in {ready_in:?}, peak {} MiB",
        peak >> 20,
        hwm >> 20
    );
    server.stop();
}
