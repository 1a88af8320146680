//! Re-delivery of a time range (`tidemark replay`, `/v1/replays`) to a real loopback receiver
//! (`tests/py/webhook_receiver.py`), while the subscription's live delivery goes on.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::receiver::Receiver;
use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn webhook_sub(name: &str, url: &str) -> Value {
    json!({
        "name": name,
        "sink": {"type": "webhook", "url": url, "format": "s3"},
        "retry": fast_retry(5),
        "delivery": {"max_in_flight": 16},
    })
}

/// `n` mutations over `keys` keys: mostly puts, some tags and deletes (only of objects that
/// exist, tracked in `existing`).
fn workload(bucket: &str, n: usize, keys: usize, round: usize) -> Vec<Value> {
    thread_local! {
        static EXISTING: std::cell::RefCell<HashSet<String>> = Default::default();
    }
    EXISTING.with_borrow_mut(|existing| {
        (0..n)
            .map(|i| {
                let key = format!("k{:02}", i % keys);
                let id = format!("{bucket}/{key}");
                match ((i + round) % 7, existing.contains(&id)) {
                    (5, true) => json!({"op": "tag", "bucket": bucket, "key": key, "tags": {"r": round.to_string()}}),
                    (6, true) => {
                        existing.remove(&id);
                        json!({"op": "delete", "bucket": bucket, "key": key})
                    }
                    _ => {
                        existing.insert(id);
                        json!({"op": "put", "bucket": bucket, "key": key, "size": i + 1})
                    }
                }
            })
            .collect()
    })
}

/// A strictly increasing instant between two batches of appends.
fn instant() -> String {
    std::thread::sleep(Duration::from_millis(30));
    let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    std::thread::sleep(Duration::from_millis(30));
    t
}

/// Each S3 record the receiver got: (event id, key, sequence, replay marker).
fn records(receiver: &Receiver) -> Vec<(String, String, i64, Option<String>)> {
    receiver
        .requests()
        .iter()
        .filter(|r| r["status"] == 200)
        .flat_map(|r| r["records"].as_array().cloned().unwrap_or_default())
        .map(|r| {
            (
                r["tidemark"]["eventId"].as_str().unwrap().to_string(),
                r["s3"]["object"]["key"].as_str().unwrap().to_string(),
                i64::from_str_radix(r["s3"]["object"]["sequencer"].as_str().unwrap(), 16).unwrap(),
                r["tidemark"]["replay"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn replay_cli(server: &Server, args: &[&str]) -> Value {
    let mut all = vec!["replay", "--server", &server.url, "--json"];
    all.extend_from_slice(args);
    let out = run(&all);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_range_is_redelivered_with_original_ids_in_order_beside_live_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--allow-destinations", "loopback"],
    );
    let receiver = Receiver::start(dir.path(), "hook", &[]);
    create_subscription(&server, &webhook_sub("thumbs", &receiver.url("/hook")));

    let before = ingest(&server, workload("photos", 140, 12, 0));
    let t1 = instant();
    let first_range = ingest(&server, workload("photos", 210, 12, 1));
    let t_mid = instant();
    let second_range = ingest(&server, workload("photos", 140, 12, 2));
    let t2 = instant();
    let after = ingest(&server, workload("photos", 70, 12, 3));
    let live_so_far: Vec<String> = [&before, &first_range, &second_range, &after]
        .iter()
        .flat_map(|b| b.iter().map(|(_, id)| id.clone()))
        .collect();
    receiver.wait_delivered(&live_so_far, WAIT);

    // A dry run sends nothing and counts per event type.
    let dry = replay_cli(
        &server,
        &[
            "--subscription",
            "thumbs",
            "--from",
            &t1,
            "--to",
            &t_mid,
            "--dry-run",
            "--first",
            "3",
        ],
    );
    assert_eq!(dry["state"], "succeeded", "{dry}");
    assert_eq!(dry["result"]["matched"], 210, "{dry}");
    let by_type = dry["result"]["by_type"].as_object().unwrap();
    assert_eq!(
        by_type.values().map(|v| v.as_u64().unwrap()).sum::<u64>(),
        210
    );
    assert!(by_type.contains_key("ObjectRemoved:Delete"), "{dry}");
    assert!(by_type.contains_key("ObjectTagging:Put"), "{dry}");
    assert_eq!(dry["result"]["first"].as_array().unwrap().len(), 3);
    for e in dry["result"]["first"].as_array().unwrap() {
        assert!(
            first_range
                .iter()
                .any(|(_, id)| e["event_id"] == id.as_str()),
            "{e}"
        );
    }
    assert_eq!(
        records(&receiver).len(),
        live_so_far.len(),
        "a dry run sends nothing"
    );

    // Two replays at once (the second over an overlapping range), while live events go on.
    let ingesting = {
        let url = server.url.clone();
        std::thread::spawn(move || {
            let client = client();
            let mut acked = Vec::new();
            for round in 0..10 {
                let body = json!({"mutations": workload("photos", 20, 12, 10 + round)});
                let resp: Value = client
                    .post(format!("{url}/v1/mutations"))
                    .body(body.to_string())
                    .send()
                    .unwrap()
                    .json()
                    .unwrap();
                acked.extend(acked_ids(&resp));
                std::thread::sleep(Duration::from_millis(20));
            }
            acked
        })
    };
    let second = {
        let (url, from, to) = (server.url.clone(), t_mid.clone(), t2.clone());
        std::thread::spawn(move || {
            let out = run(&[
                "replay",
                "--server",
                &url,
                "--json",
                "--subscription",
                "thumbs",
                "--from",
                &from,
                "--to",
                &to,
                "--rate",
                "2000",
            ]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        })
    };
    let job = replay_cli(
        &server,
        &["--subscription", "thumbs", "--from", &t1, "--to", &t_mid],
    );
    let job2 = second.join().unwrap();
    let live_more = ingesting.join().unwrap();
    for (j, n) in [(&job, 210), (&job2, 140)] {
        assert_eq!(j["state"], "succeeded", "{j}");
        assert_eq!(j["result"]["delivered"], n, "{j}");
        assert_eq!(j["result"]["dead_lettered"], 0, "{j}");
        assert_eq!(j["progress"]["done"], j["progress"]["total"], "{j}");
    }
    let (id1, id2) = (job["id"].as_str().unwrap(), job2["id"].as_str().unwrap());
    assert_ne!(id1, id2);

    let mut all_live = live_so_far.clone();
    all_live.extend(live_more);
    receiver.wait_delivered(&all_live, WAIT);
    let seen = records(&receiver);
    for (id, range) in [(id1, &first_range), (id2, &second_range)] {
        let replayed: Vec<_> = seen.iter().filter(|r| r.3.as_deref() == Some(id)).collect();
        // Exactly the events of the range, with their original ids, once each.
        let ids: HashSet<&str> = replayed.iter().map(|r| r.0.as_str()).collect();
        let expected: HashSet<&str> = range.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(ids, expected, "replay {id}: the range's events");
        assert_eq!(replayed.len(), range.len(), "replay {id}: once each");
        // Per key, in log order.
        let mut per_key: HashMap<&str, Vec<i64>> = HashMap::new();
        for r in &replayed {
            per_key.entry(r.1.as_str()).or_default().push(r.2);
        }
        for (key, seqs) in per_key {
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{key}: {seqs:?}");
        }
    }
    // Live delivery was not disturbed: every live event once, unmarked; position at the end.
    let live: Vec<&str> = seen
        .iter()
        .filter(|r| r.3.is_none())
        .map(|r| r.0.as_str())
        .collect();
    assert_eq!(live.len(), all_live.len(), "no live event twice");
    assert_eq!(
        live.iter().copied().collect::<HashSet<_>>(),
        all_live.iter().map(String::as_str).collect()
    );
    let status = wait_status(&server, "thumbs", "no lag", WAIT, |s| s["lag"] == 0);
    assert_eq!(status["delivered"], all_live.len(), "{status}");

    // The jobs stay listed with their outcome.
    let (code, list) = server.get("/v1/replays");
    assert_eq!(code, 200);
    assert_eq!(list["replays"].as_array().unwrap().len(), 3, "{list}");
    let (code, one) = server.get(&format!("/v1/replays/{id1}"));
    assert_eq!(
        (code, one["state"].clone()),
        (200, json!("succeeded")),
        "{one}"
    );
}

#[test]
fn a_replay_can_be_cancelled_and_says_how_far_it_got() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--allow-destinations", "loopback"],
    );
    let receiver = Receiver::start(dir.path(), "hook", &[]);
    create_subscription(&server, &webhook_sub("slow", &receiver.url("/hook")));
    let t1 = instant();
    let acked = ingest(&server, workload("bkt", 300, 5, 0));
    receiver.wait_delivered(
        &acked.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>(),
        WAIT,
    );
    // 50 events a second: the replay is still running when cancelled.
    let (code, job) = server.post(
        "/v1/replays",
        json!({"subscription": "slow", "from": t1, "rate": 50}).to_string(),
    );
    assert_eq!(code, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(500));
    let (code, _) = server.post(&format!("/v1/replays/{id}/cancel"), "");
    assert_eq!(code, 202);
    let done = wait_for("the replay to stop", WAIT, || {
        let (_, j) = server.get(&format!("/v1/replays/{id}"));
        if j["state"] == "running" {
            Err(j.to_string())
        } else {
            Ok(j)
        }
    });
    assert_eq!(done["state"], "cancelled", "{done}");
    let delivered = done["result"]["delivered"].as_u64().unwrap();
    assert!(delivered > 0 && delivered < 300, "{done}");
    assert!(done["progress"]["done"].as_u64().unwrap() < 300, "{done}");
}

#[test]
fn ctrl_c_cancels_the_replay_and_says_how_far_it_got() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--allow-destinations", "loopback"],
    );
    let receiver = Receiver::start(dir.path(), "hook", &[]);
    create_subscription(&server, &webhook_sub("c", &receiver.url("/hook")));
    let t1 = instant();
    let acked = ingest(&server, workload("ctrlc", 200, 5, 0));
    receiver.wait_delivered(
        &acked.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>(),
        WAIT,
    );
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args([
            "replay",
            "--server",
            &server.url,
            "--subscription",
            "c",
            "--from",
            &t1,
            "--rate",
            "40",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("cancelled after") && err.contains("of 200 records"),
        "{err}"
    );
    let (_, list) = server.get("/v1/replays");
    assert_eq!(list["replays"][0]["state"], "cancelled", "{list}");
}

#[test]
fn bad_replays_are_refused_by_name_and_send_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--allow-destinations", "loopback"],
    );
    let receiver = Receiver::start(dir.path(), "hook", &[]);
    create_subscription(&server, &webhook_sub("s", &receiver.url("/hook")));
    let t1 = instant();
    let acked = ingest(&server, workload("bkt", 20, 4, 0));
    receiver.wait_delivered(
        &acked.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>(),
        WAIT,
    );
    let (_, log_before) = server.get("/v1/log");
    for (body, code, field, needle) in [
        (
            json!({"subscription": "s", "from": "2999-01-01T00:00:00Z"}),
            400,
            "from",
            "in the future",
        ),
        (
            json!({"subscription": "s", "from": t1, "to": "2999-01-01T00:00:00Z"}),
            400,
            "to",
            "in the future",
        ),
        (
            json!({"subscription": "s", "from": "noonish"}),
            400,
            "from",
            "not an instant",
        ),
        (
            json!({"subscription": "s", "from": "-1h", "to": "-2h"}),
            400,
            "from",
            "not before",
        ),
        (
            json!({"subscription": "s", "from": "-1h", "rate": 0}),
            400,
            "rate",
            "positive",
        ),
        (
            json!({"subscription": "nope", "from": "-1h"}),
            404,
            "",
            "nope",
        ),
        (
            json!({"subscription": "s", "from": "-1h", "speed": 3}),
            400,
            "speed",
            "unknown field",
        ),
        (
            json!({"from": "-1h"}),
            400,
            "body",
            "missing field `subscription`",
        ),
    ] {
        let (status, v) = server.post("/v1/replays", body.to_string());
        assert_eq!(status, code, "{body}: {v}");
        if !field.is_empty() {
            assert_eq!(v["error"]["field"], field, "{body}: {v}");
        }
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {v}"
        );
    }
    // The CLI says the same and exits non-zero.
    let out = run(&[
        "replay",
        "--server",
        &server.url,
        "--subscription",
        "s",
        "--from",
        "-1h",
        "--to",
        "-2h",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not before"));
    // Nothing started, nothing sent, nothing written.
    let (_, list) = server.get("/v1/replays");
    assert_eq!(list["replays"], json!([]));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(records(&receiver).len(), 20);
    let (_, log_after) = server.get("/v1/log");
    assert_eq!(log_before, log_after);
}

#[test]
fn a_range_before_the_retention_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--allow-destinations",
            "loopback",
            "--partitions",
            "1",
            "--segment-bytes",
            "4096",
            "--retention-ms",
            "1",
            "--retention-check-ms",
            "50",
        ],
    );
    let receiver = Receiver::start(dir.path(), "hook", &[]);
    create_subscription(&server, &webhook_sub("r", &receiver.url("/hook")));
    let t0 = instant();
    for round in 0..5 {
        ingest(&server, workload("retained", 60, 10, round));
    }
    // Sealed segments are deleted: the log no longer starts at offset 0.
    wait_for("retention to delete a segment", WAIT, || {
        let (_, log) = server.get("/v1/log");
        let start = log["topics"]["objects"][0]["start"].as_u64().unwrap();
        if start > 0 {
            Ok(start)
        } else {
            Err(log.to_string())
        }
    });
    let (status, v) = server.post(
        "/v1/replays",
        json!({"subscription": "r", "from": t0}).to_string(),
    );
    assert_eq!(
        (status, v["error"]["field"].clone()),
        (400, json!("from")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("before the oldest event"),
        "{v}"
    );
    let (_, list) = server.get("/v1/replays");
    assert_eq!(list["replays"], json!([]));
}
