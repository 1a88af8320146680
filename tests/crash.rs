//! Crash safety: `tidemark serve` under concurrent write load is killed with SIGKILL at random
//! moments, 25 times (12 on Kafka, where the broker stays up). Every acknowledged mutation must
//! be in the log exactly once, each key's sequences must run 1, 2, 3, ... in log order, and the
//! live index must equal a rebuild.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;

const WRITERS: usize = 4;

#[test]
fn acknowledged_mutations_survive_sigkill() {
    sigkill_under_load(&Backend::Embedded, 25);
}

/// Fewer rounds on Kafka: a restarted node first takes its partitions back from the ingest
/// group, which takes Tansu about 8 s.
#[test]
fn acknowledged_mutations_survive_sigkill_on_kafka() {
    sigkill_under_load(&Backend::kafka(), 12);
}

fn node_args(_: &Backend) -> Vec<&'static str> {
    vec!["--partitions", "3"]
}

fn sigkill_under_load(backend: &Backend, kills: usize) {
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut rng = fastrand::Rng::with_seed(0xC0FFEE);

    for round in 0..kills {
        let server = Server::start_on(backend, &data, &node_args(backend));
        // On Kafka a restarted node first takes its partitions back from the group.
        server.wait_writing(3);
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (url, stop, acked) = (server.url.clone(), stop.clone(), acked.clone());
                let seed = (round * WRITERS + w) as u64;
                std::thread::spawn(move || write_until_killed(&url, &stop, &acked, seed))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.u64(150..700)));
        server.kill();
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            w.join().unwrap();
        }
    }

    // One more start: recovery must leave a node that accepts writes and catches up.
    let server = Server::start_on(backend, &data, &node_args(backend));
    let (status, resp) = server.post(
        "/v1/mutations",
        json!({"mutations": [{"op": "put", "bucket": "crash", "key": "final", "size": 1}]})
            .to_string(),
    );
    assert_eq!(status, 200, "{resp}");
    acked.lock().unwrap().extend(acked_ids(&resp));
    server.wait_caught_up();

    let acked = acked.lock().unwrap();
    assert!(
        acked.len() > 1000,
        "the load produced {} acknowledged mutations",
        acked.len()
    );
    // Every acknowledged event in the log exactly once, per-key sequences exactly 1, 2, 3, ...
    // (nothing lost in between, no sequence reused after a restart), live index == rebuild.
    assert_log_and_index_intact(backend, &data, &acked, scratch.path());
    assert!(index_dump(&data).lines().count() > 10);
    server.stop();
}

fn write_until_killed(url: &str, stop: &AtomicBool, acked: &Mutex<Vec<String>>, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    while !stop.load(Ordering::SeqCst) {
        let n = rng.usize(1..40);
        let mutations: Vec<_> = (0..n)
            .map(|_| random_mutation(&mut rng, "crash", 300))
            .collect();
        let body = json!({ "mutations": mutations }).to_string();
        let Ok(resp) = client.post(format!("{url}/v1/mutations")).body(body).send() else {
            return; // server killed
        };
        if resp.status() != 200 {
            return;
        }
        // Only a complete response is an acknowledgement.
        let Ok(v) = resp.json::<serde_json::Value>() else {
            return;
        };
        acked.lock().unwrap().extend(acked_ids(&v));
    }
}

/// Small uploads are packed and share the log's fsync: SIGKILL in the middle of a burst of
/// them, three times; every acknowledged one reads back with its SHA-256 after a restart.
/// Then, once no event in the log refers to them any more, a collection compacts the packs
/// and gives the space back.
#[test]
fn acknowledged_small_uploads_read_back_after_sigkill_and_pack_gc_frees_the_space() {
    use sha2::{Digest, Sha256};
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let args = ["--partitions", "1", "--blob-gc-interval-secs", "0"];
    for round in 0..3 {
        let server = Server::start(&data, &args);
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (url, stop, acked) = (server.url.clone(), stop.clone(), acked.clone());
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .unwrap();
                    let mut rng = fastrand::Rng::with_seed((round * WRITERS + w) as u64);
                    for i in 0.. {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let key = format!("r{round}-w{w}-{i}");
                        let mut body = vec![0u8; rng.usize(1..16 << 10)];
                        rng.fill(&mut body);
                        let sha = sha256_hex(&Sha256::digest(&body));
                        let Ok(resp) = client
                            .put(format!("{url}/v1/content/small/{key}"))
                            .body(body)
                            .send()
                        else {
                            return; // killed
                        };
                        if resp.status() != 200 || resp.bytes().is_err() {
                            return;
                        }
                        acked.lock().unwrap().push((key, sha));
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(400 + 300 * round as u64));
        server.kill();
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            w.join().unwrap();
        }
    }

    let server = Server::start(&data, &args);
    server.wait_caught_up();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 300, "{} uploads acknowledged", acked.len());
    let client = client();
    for (key, sha) in &acked {
        let resp = client
            .get(format!("{}/v1/content/small/{key}", server.url))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200, "{key} after the crashes");
        let body = resp.bytes().unwrap();
        assert_eq!(&sha256_hex(&Sha256::digest(&body)), sha, "{key}'s content");
    }
    let packs = data.join("blobs").join("packs");
    let before = pack_bytes(&packs);
    assert!(before > 1 << 20, "{before} bytes of packs");
    assert!(
        blob_files(&data).is_empty(),
        "no small upload got a file of its own"
    );
    server.stop();

    // Drop every key; retention then drops the events that named the content.
    let server = Server::start(
        &data,
        &[
            &args[..],
            &[
                "--blob-gc-grace-secs",
                "0",
                "--segment-bytes",
                "4096",
                "--retention-ms",
                "1",
                "--retention-check-ms",
                "50",
            ],
        ]
        .concat(),
    );
    for chunk in acked.chunks(500) {
        let deletes: Vec<_> = chunk
            .iter()
            .map(|(key, _)| json!({"op": "delete", "bucket": "small", "key": key}))
            .collect();
        let (status, v) = server.post("/v1/mutations", json!({ "mutations": deletes }).to_string());
        assert_eq!(status, 200, "{v}");
    }
    let mut freed = json!(null);
    wait_for(
        "pack GC to give the space back",
        Duration::from_secs(60),
        || {
            // Later events roll the segment that holds the deletes, so retention can drop it.
            let filler: Vec<_> = (0..20)
                .map(
                    |i| json!({"op": "put", "bucket": "filler", "key": format!("f{i}"), "size": 1}),
                )
                .collect();
            server.post("/v1/mutations", json!({ "mutations": filler }).to_string());
            let (status, gc) = server.post("/v1/admin/blobs/gc", "");
            assert_eq!(status, 200, "{gc}");
            if gc["packs_compacted"].as_u64() > Some(0) {
                freed = gc.clone();
            }
            let after = pack_bytes(&packs);
            if after * 10 < before {
                Ok(after)
            } else {
                Err(format!(
                    "{after} of {before} bytes of packs left; last collection {gc}"
                ))
            }
        },
    );
    assert!(
        freed["pack_bytes_reclaimed"].as_u64().unwrap() > 0,
        "{freed}"
    );
    server.stop();
}

fn sha256_hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn pack_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .map(|p| p.metadata().unwrap().len())
        .sum()
}

/// Blob files of their own under `<data>/blobs/<xx>/`.
fn blob_files(data: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(data.join("blobs")).unwrap() {
        let dir = dir.unwrap().path();
        if dir.file_name().unwrap().len() == 2 {
            out.extend(std::fs::read_dir(&dir).unwrap().map(|f| f.unwrap().path()));
        }
    }
    out
}
