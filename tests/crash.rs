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
