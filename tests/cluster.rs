//! Two `tidemark serve` nodes on one Kafka cluster. Each writes the partitions the ingest group
//! gives it and forwards the rest to their owner, so mutations sent to either node are applied
//! once, by the key's one writer, and end up in both nodes' indexes. When one node stops, the
//! other takes its partitions over and keeps serving, losing no acknowledged mutation.
//!
//! The nodes use dynamic group membership here: Tansu 0.6 stalls a group when a second static
//! member joins (docs/KAFKA.md). For the same reason the stop is graceful (a SIGKILLed member
//! keeps its partitions in Tansu's group).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const ARGS: &[&str] = &[
    "--partitions",
    "4",
    "--kafka-static-membership",
    "false",
    "--kafka-session-timeout-ms",
    "6000",
];

fn writes(server: &Server) -> BTreeSet<u64> {
    let (_, v) = server.get("/healthz");
    v["writes_partitions"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

fn post_batch(url: &str, rng: &mut fastrand::Rng, n: usize) -> (u16, Value) {
    let mutations: Vec<_> = (0..n)
        .map(|_| random_mutation(rng, "cluster", 80))
        .collect();
    let resp = client()
        .post(format!("{url}/v1/mutations"))
        .body(json!({ "mutations": mutations }).to_string())
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

#[test]
fn two_nodes_share_the_partitions_and_one_takes_over() {
    let backend = Backend::kafka();
    let scratch = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (scratch.path().join("a"), scratch.path().join("b"));
    let a = Server::start_on(&backend, &dir_a, ARGS);
    let b = Server::start_on(&backend, &dir_b, ARGS);

    // The group splits the four partitions between the nodes.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (wa, wb) = (writes(&a), writes(&b));
        if wa.len() + wb.len() == 4 && wa.is_disjoint(&wb) && !wa.is_empty() && !wb.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no split: {wa:?} {wb:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Mutations sent to either node are all acknowledged, whichever node writes their key.
    let mut rng = fastrand::Rng::with_seed(11);
    let mut acked = Vec::new();
    for i in 0..20 {
        let url = if i % 2 == 0 { &a.url } else { &b.url };
        let (status, resp) = post_batch(url, &mut rng, 25);
        assert_eq!(status, 200, "{resp}");
        for r in resp["results"].as_array().unwrap() {
            match r["event_id"].as_str() {
                Some(id) => acked.push(id.to_string()),
                None => assert_eq!(r["error"]["code"], "not_found", "{r}"),
            }
        }
    }
    a.wait_caught_up();
    b.wait_caught_up();
    let index_a = index_dump(&dir_a);
    assert!(index_a.lines().count() > 20);
    assert_eq!(
        index_a,
        index_dump(&dir_b),
        "both nodes index every mutation"
    );

    // A stops while a client keeps writing to B: B takes A's partitions and keeps serving.
    let acked = Arc::new(Mutex::new(acked));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (url, acked, stop) = (b.url.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(12);
            let mut refused = 0;
            while !stop.load(Ordering::SeqCst) {
                let (status, resp) = post_batch(&url, &mut rng, 10);
                assert_eq!(status, 200, "{resp}");
                for r in resp["results"].as_array().unwrap() {
                    match r["event_id"].as_str() {
                        Some(id) => acked.lock().unwrap().push(id.to_string()),
                        None if r["error"]["code"] == "unavailable" => refused += 1,
                        None => assert_eq!(r["error"]["code"], "not_found", "{r}"),
                    }
                }
            }
            refused
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    a.stop();
    let deadline = Instant::now() + Duration::from_secs(90);
    while writes(&b).len() < 4 {
        assert!(
            Instant::now() < deadline,
            "B did not take over: {:?}",
            writes(&b)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    let refused = writer.join().unwrap();
    // After the takeover every mutation goes through.
    let (status, resp) = post_batch(&b.url, &mut rng, 20);
    assert_eq!(status, 200);
    assert!(
        resp["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["error"]["code"] != "unavailable"),
        "{resp}"
    );
    acked.lock().unwrap().extend(acked_ids(&resp));
    eprintln!("{refused} mutations were refused (unavailable) during the takeover");
    b.wait_caught_up();

    assert_log_and_index_intact(&backend, &dir_b, &acked.lock().unwrap(), scratch.path());
    b.stop();
}

/// A node killed with SIGKILL under load: nothing it acknowledged is lost, and the other node
/// keeps serving (reads, and writes of its own partitions; against Kafka the dead node's
/// partitions move to it after the session timeout, against Tansu they stay with the dead
/// member, see docs/KAFKA.md, so those writes are answered `unavailable`).
#[test]
fn a_killed_node_loses_no_acknowledged_mutation() {
    let backend = Backend::kafka();
    let scratch = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (scratch.path().join("a"), scratch.path().join("b"));
    let a = Server::start_on(&backend, &dir_a, ARGS);
    let b = Server::start_on(&backend, &dir_b, ARGS);
    let deadline = Instant::now() + Duration::from_secs(90);
    while writes(&a).len() + writes(&b).len() < 4 || writes(&a).is_empty() || writes(&b).is_empty()
    {
        assert!(Instant::now() < deadline, "no split");
        std::thread::sleep(Duration::from_millis(100));
    }
    let b_owns = writes(&b);

    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = [a.url.clone(), b.url.clone()]
        .into_iter()
        .enumerate()
        .map(|(n, url)| {
            let (acked, stop) = (acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(20 + n as u64);
                while !stop.load(Ordering::SeqCst) {
                    let mutations: Vec<_> = (0..10)
                        .map(|_| random_mutation(&mut rng, "killed", 80))
                        .collect();
                    let body = json!({ "mutations": mutations }).to_string();
                    let Ok(resp) = client()
                        .post(format!("{url}/v1/mutations"))
                        .body(body)
                        .send()
                    else {
                        return;
                    };
                    let Ok(v) = resp.json::<Value>() else { return };
                    acked.lock().unwrap().extend(acked_ids(&v));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    a.kill();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }

    // B still answers: reads, and writes of the partitions it owns.
    assert_eq!(b.get("/v1/objects?bucket=killed&limit=5").0, 200);
    let mut rng = fastrand::Rng::with_seed(30);
    let mine: Vec<Value> = std::iter::from_fn(|| Some(random_mutation(&mut rng, "killed", 80)))
        .filter(|m| m["op"] == "put")
        .filter(|m| {
            let key = format!("killed/{}", m["key"].as_str().unwrap());
            b_owns.contains(&u64::from(murmur_partition(key.as_bytes(), 4)))
        })
        .take(10)
        .collect();
    let (status, resp) = b.post("/v1/mutations", json!({ "mutations": mine }).to_string());
    assert_eq!(status, 200, "{resp}");
    assert_eq!(acked_ids(&resp).len(), 10, "{resp}");
    acked.lock().unwrap().extend(acked_ids(&resp));
    b.wait_caught_up();

    let acked = acked.lock().unwrap();
    assert!(acked.len() > 20, "{} acknowledged", acked.len());
    assert_log_and_index_intact(&backend, &dir_b, &acked, scratch.path());
    b.stop();
}

/// The partition Tidemark picks for a key (murmur2, as Kafka's Java client).
fn murmur_partition(key: &[u8], partitions: u32) -> u32 {
    tidemark_core::log::partition_for(key, partitions)
}

/// Wait until the ingest group split the partitions between `a` and `b`.
fn wait_split(a: &Server, b: &Server) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (wa, wb) = (writes(a), writes(b));
        if wa.len() + wb.len() == 4 && wa.is_disjoint(&wb) && !wa.is_empty() && !wb.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "no split: {wa:?} {wb:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A job of `kind` (`restores`, `sync`) once it is no longer running.
fn finished_job(server: &Server, kind: &str, job: &Value) -> Value {
    let path = format!("/v1/{kind}/{}", job["id"].as_str().unwrap());
    wait_for("the job to finish", Duration::from_secs(120), || {
        let (_, j) = server.get(&path);
        if j["state"] == "running" {
            Err(j.to_string())
        } else {
            Ok(j)
        }
    })
}

fn bucket_keys(server: &Server, bucket: &str) -> BTreeSet<String> {
    server.wait_caught_up();
    let (_, v) = server.get(&format!("/v1/objects?bucket={bucket}&limit=1000"));
    v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap().to_string())
        .collect()
}

/// Restore and sync jobs write through the node writer: keys whose partition the other node
/// writes are forwarded to it, not refused.
#[test]
fn restore_and_sync_write_keys_either_node_owns() {
    let backend = Backend::kafka();
    let scratch = tempfile::tempdir().unwrap();
    let a = Server::start_on(&backend, &scratch.path().join("a"), ARGS);
    let b = Server::start_on(&backend, &scratch.path().join("b"), ARGS);
    wait_split(&a, &b);

    let keys: Vec<String> = (0..40).map(|i| format!("doc-{i:02}")).collect();
    let puts: Vec<Value> = keys
        .iter()
        .map(|k| json!({"op": "put", "bucket": "restored", "key": k, "size": 7}))
        .collect();
    ingest(&a, puts);
    a.wait_caught_up();
    std::thread::sleep(Duration::from_millis(5));
    let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    std::thread::sleep(Duration::from_millis(5));
    let deletes: Vec<Value> = keys
        .iter()
        .map(|k| json!({"op": "delete", "bucket": "restored", "key": k}))
        .collect();
    ingest(&b, deletes);
    assert!(bucket_keys(&a, "restored").is_empty());

    let (status, job) = a.post(
        "/v1/restores",
        json!({"bucket": "restored", "at": t}).to_string(),
    );
    assert_eq!(status, 202, "{job}");
    let done = finished_job(&a, "restores", &job);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["failed"], 0, "{done}");
    assert_eq!(done["result"]["restored_objects"], 40, "{done}");
    let want: BTreeSet<String> = keys.iter().cloned().collect();
    assert_eq!(bucket_keys(&a, "restored"), want);
    assert_eq!(bucket_keys(&b, "restored"), want);

    // A directory synced through node B: every file, whoever writes its key.
    let source = scratch.path().join("source");
    std::fs::create_dir(&source).unwrap();
    for k in &keys {
        std::fs::write(source.join(k), k.as_bytes()).unwrap();
    }
    let (status, job) = b.post(
        "/v1/sync",
        json!({"bucket": "synced", "source": source}).to_string(),
    );
    assert_eq!(status, 202, "{job}");
    let done = finished_job(&b, "sync", &job);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["failed"], json!([]), "{done}");
    assert_eq!(done["result"]["applied"]["created"], 40, "{done}");
    assert_eq!(bucket_keys(&a, "synced"), want);
    assert_eq!(bucket_keys(&b, "synced"), want);
    a.stop();
    b.stop();
}
