//! Crash safety: `tidemark serve` under concurrent write load is killed with SIGKILL at random
//! moments, 25 times (12 on Kafka, where the broker stays up). Every acknowledged mutation must
//! be in the log exactly once, each key's sequences must run 1, 2, 3, ... in log order, and the
//! live index must equal a rebuild.

mod common;

use std::collections::{HashMap, HashSet};
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

    let events = log_events(backend, &data);
    let acked = acked.lock().unwrap();
    assert!(
        acked.len() > 1000,
        "the load produced {} acknowledged mutations",
        acked.len()
    );
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        *seen.entry(e["event_id"].as_str().unwrap()).or_default() += 1;
    }
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "events appear more than once: {duplicated:?}"
    );
    let missing: Vec<_> = acked
        .iter()
        .filter(|id| !seen.contains_key(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events are missing from the log, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let unacked = events.len() - acked.iter().collect::<HashSet<_>>().len();
    eprintln!(
        "{} events in the log, {} acknowledged, {unacked} written but unacknowledged at a kill",
        events.len(),
        acked.len()
    );

    // Per key, sequences are exactly 1, 2, 3, ... in log order: nothing lost in between and no
    // sequence reused after a restart.
    let mut last: HashMap<String, i64> = HashMap::new();
    for e in &events {
        let k = format!(
            "{}/{}",
            e["bucket"].as_str().unwrap(),
            e["key"].as_str().unwrap()
        );
        let seq = e["sequence"].as_i64().unwrap();
        let prev = last.insert(k.clone(), seq).unwrap_or(0);
        assert_eq!(seq, prev + 1, "{k}: sequence {seq} follows {prev}");
    }

    let live = index_dump(&data);
    assert_eq!(
        live,
        rebuilt_dump(backend, &data, scratch.path()),
        "live index differs from a rebuild"
    );
    assert!(live.lines().count() > 10);
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
