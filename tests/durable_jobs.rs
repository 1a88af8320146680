//! Jobs that survive their node: restores and replays killed mid-way (SIGKILL) resume when the
//! node starts again and end exactly as an uninterrupted run ends (the same compensating
//! events, once each; every replayed event at least once); a cancelled job stays cancelled;
//! the job listings survive a restart; on Kafka, a restore whose node stopped is finished by
//! the other node once the lease of the first has expired.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::receiver::Receiver;
use common::*;
use serde_json::{Value, json};

const BUCKET: &str = "docs";
const WAIT: Duration = Duration::from_secs(120);

fn instant() -> String {
    std::thread::sleep(Duration::from_millis(10));
    let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    std::thread::sleep(Duration::from_millis(10));
    t
}

fn put(key: &str, size: usize) -> Value {
    json!({"op": "put", "bucket": BUCKET, "key": key, "size": size, "etag": format!("e{size}"),
           "metadata": {"n": key}})
}

/// Objects described (no content, so any node restores them), then an instant T, then every
/// kind of change a restore undoes: 1050 steps, 50 of them two mutations (metadata and tags).
fn changes_after_an_instant(server: &Server) -> String {
    let keys: Vec<String> = (0..900).map(|i| format!("k{i:04}")).collect();
    for chunk in keys.chunks(300) {
        ingest(server, chunk.iter().map(|k| put(k, 10)).collect());
    }
    server.wait_caught_up();
    let t = instant();
    let mut after = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        after.push(match i {
            0..400 => json!({"op": "delete", "bucket": BUCKET, "key": k}),
            400..600 => put(k, 20),
            600..700 => json!({"op": "tag", "bucket": BUCKET, "key": k, "tags": {"x": "1"}}),
            700..800 => {
                json!({"op": "metadata", "bucket": BUCKET, "key": k, "metadata": {"n": "changed"}})
            }
            800..850 => json!({"op": "metadata", "bucket": BUCKET, "key": k, "metadata": {}}),
            _ => continue,
        });
        if (800..850).contains(&i) {
            after.push(json!({"op": "tag", "bucket": BUCKET, "key": k, "tags": {"y": "2"}}));
        }
    }
    after.extend((0..200).map(|i| put(&format!("new{i:03}"), 5)));
    for chunk in after.chunks(300) {
        ingest(server, chunk.to_vec());
    }
    server.wait_caught_up();
    t
}

fn job(server: &Server, kind: &str, id: &str) -> Value {
    let (status, j) = server.get(&format!("/v1/{kind}/{id}"));
    assert_eq!(status, 200, "{j}");
    j
}

fn finished(server: &Server, kind: &str, id: &str) -> Value {
    wait_for(&format!("{kind} {id} to end"), WAIT, || {
        let j = job(server, kind, id);
        if j["state"] == "running" {
            Err(j.to_string())
        } else {
            Ok(j)
        }
    })
}

/// Per key, the event types of the events job `id` wrote, in log order.
fn events_of(backend: &Backend, server: &Server, id: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in log_events(backend, &server.data_dir) {
        if e["request_id"] == id {
            out.entry(e["key"].as_str().unwrap().to_string())
                .or_default()
                .push(e["event_type"].as_str().unwrap().to_string());
        }
    }
    out
}

/// The bucket as a user sees it.
fn visible(server: &Server) -> BTreeMap<String, Value> {
    server.wait_caught_up();
    let (status, v) = server.get(&format!("/v1/objects?bucket={BUCKET}&limit=10000"));
    assert_eq!(status, 200, "{v}");
    v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let seen = json!({"size": o["size"], "etag": o["etag"], "metadata": o["metadata"],
                              "tags": o["tags"], "content_type": o["content_type"]});
            (o["key"].as_str().unwrap().to_string(), seen)
        })
        .collect()
}

fn start_restore(server: &Server, t: &str, rate: Option<u32>) -> String {
    let (status, j) = server.post(
        "/v1/restores",
        json!({"bucket": BUCKET, "at": t, "rate": rate}).to_string(),
    );
    assert_eq!(status, 202, "{j}");
    j["id"].as_str().unwrap().to_string()
}

#[test]
fn a_restore_killed_mid_way_resumes_and_ends_as_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    // The same history on two nodes: one restores without interruption, one is killed.
    let twin = Server::start(&dir.path().join("twin"), &[]);
    let t = changes_after_an_instant(&twin);
    let then = {
        let (_, v) = twin.get(&format!("/v1/objects?bucket={BUCKET}&at={t}&limit=10000"));
        v["objects"].as_array().unwrap().len()
    };
    assert_eq!(then, 900);
    let id = start_restore(&twin, &t, None);
    let want = finished(&twin, "restores", &id);
    assert_eq!(want["state"], "succeeded", "{want}");
    assert_eq!(want["result"]["restored_objects"], 1050, "{want}");
    let want_events = events_of(&Backend::Embedded, &twin, &id);
    let want_visible = visible(&twin);
    twin.stop();

    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let t = changes_after_an_instant(&server);
    // 150 objects a second: seven batches, killed after the second.
    let id = start_restore(&server, &t, Some(150));
    let at_kill = wait_for("two batches", WAIT, || {
        let j = job(&server, "restores", &id);
        match j["progress"]["done"].as_u64() {
            Some(done) if done >= 300 => Ok(j),
            _ => Err(j.to_string()),
        }
    });
    server.kill();
    let done_at_kill = at_kill["progress"]["done"].as_u64().unwrap();
    assert!(done_at_kill < 1050, "killed mid-way: {at_kill}");

    let server = Server::start(&data, &[]);
    let got = finished(&server, "restores", &id);
    assert_eq!(got["state"], "succeeded", "{got}");
    assert_eq!(got["resumes"], 1, "{got}");
    assert_eq!(
        got["result"], want["result"],
        "the result of an uninterrupted run"
    );
    assert_eq!(got["progress"], want["progress"]);
    // Each key got exactly the compensating events the uninterrupted run wrote: none twice.
    let got_events = events_of(&Backend::Embedded, &server, &id);
    assert_eq!(got_events.len(), 1050);
    assert_eq!(got_events, want_events);
    assert_eq!(visible(&server), want_visible);
    assert_eq!(visible(&server).len(), 900);
}

#[test]
fn a_replay_killed_mid_way_resumes_and_every_event_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--allow-destinations", "loopback"];
    let server = Server::start(&data, &args);
    let receiver = Receiver::start(dir.path(), "hook", &[]);
    let sub = json!({
        "name": "thumbs",
        "sink": {"type": "webhook", "url": receiver.url("/hook"), "format": "s3"},
        "retry": fast_retry(5),
    });
    create_subscription(&server, &sub);
    ingest(
        &server,
        (0..20).map(|i| put(&format!("before{i}"), i)).collect(),
    );
    let t1 = instant();
    let range: Vec<String> = ingest(
        &server,
        (0..300)
            .map(|i| put(&format!("k{:02}", i % 40), i))
            .collect(),
    )
    .into_iter()
    .map(|(_, id)| id)
    .collect();
    let t2 = instant();
    receiver.wait_delivered(&range, WAIT);

    // 40 events a second: seven or eight seconds; killed after 60 re-deliveries.
    let (status, j) = server.post(
        "/v1/replays",
        json!({"subscription": "thumbs", "from": t1, "to": t2, "rate": 40}).to_string(),
    );
    assert_eq!(status, 202, "{j}");
    let id = j["id"].as_str().unwrap().to_string();
    let replayed = |r: &Receiver| -> Vec<String> {
        r.requests()
            .iter()
            .filter(|q| q["status"] == 200)
            .flat_map(|q| q["records"].as_array().cloned().unwrap_or_default())
            .filter(|rec| rec["tidemark"]["replay"] == id.as_str())
            .map(|rec| rec["tidemark"]["eventId"].as_str().unwrap().to_string())
            .collect()
    };
    wait_for("60 re-deliveries", WAIT, || {
        let n = replayed(&receiver).len();
        if n >= 60 { Ok(()) } else { Err(format!("{n}")) }
    });
    server.kill();
    let before_restart = replayed(&receiver).len();
    assert!(before_restart < 300, "killed mid-way: {before_restart}");

    let server = Server::start(&data, &args);
    let got = finished(&server, "replays", &id);
    assert_eq!(got["state"], "succeeded", "{got}");
    assert_eq!(got["resumes"], 1, "{got}");
    assert_eq!(got["progress"], json!({"done": 300, "total": 300}), "{got}");
    assert!(got["result"]["delivered"].as_u64().unwrap() >= 300, "{got}");
    // At least once: every event of the range, with its own id, marked as this replay's.
    let seen: HashSet<String> = replayed(&receiver).into_iter().collect();
    let want: HashSet<String> = range.iter().cloned().collect();
    assert_eq!(seen, want);
    let (_, list) = server.get("/v1/replays");
    assert_eq!(list["replays"][0]["id"], id.as_str(), "{list}");
}

#[test]
fn a_cancelled_job_stays_cancelled_and_listings_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let t = changes_after_an_instant(&server);
    let slower = start_restore(&server, &t, Some(100));
    wait_for("a first batch", WAIT, || {
        let j = job(&server, "restores", &slower);
        if j["progress"]["done"].as_u64() > Some(0) {
            Ok(())
        } else {
            Err(j.to_string())
        }
    });
    let (status, c) = server.post(&format!("/v1/restores/{slower}/cancel"), "");
    assert_eq!(status, 202, "{c}");
    let cancelled = finished(&server, "restores", &slower);
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    // Running it again finishes the rest.
    let rest = start_restore(&server, &t, None);
    assert_eq!(finished(&server, "restores", &rest)["state"], "succeeded");
    // A sync job too: its listing survives as well.
    let source = dir.path().join("source");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join("a.txt"), b"alpha").unwrap();
    let (status, s) = server.post(
        "/v1/sync",
        json!({"bucket": "mirror", "source": source}).to_string(),
    );
    assert_eq!(status, 202, "{s}");
    let synced = finished(&server, "sync", s["id"].as_str().unwrap());
    assert_eq!(synced["state"], "succeeded", "{synced}");
    let (_, restores) = server.get("/v1/restores");
    let (_, syncs) = server.get("/v1/sync");
    let written = events_of(&Backend::Embedded, &server, &slower).len();
    server.kill();

    let server = Server::start(&data, &[]);
    let states = |list: &Value, field: &str| -> Vec<(String, String)> {
        list[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| {
                (
                    j["id"].as_str().unwrap().into(),
                    j["state"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    let want = states(&restores, "restores");
    assert_eq!(want.len(), 2);
    wait_for("the same restores listed", WAIT, || {
        let (_, now) = server.get("/v1/restores");
        let now = states(&now, "restores");
        if now == want {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    });
    let (_, now) = server.get("/v1/sync");
    assert_eq!(states(&now, "syncs"), states(&syncs, "syncs"));
    // It stays cancelled: nothing more is written for it after the restart.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(job(&server, "restores", &slower)["state"], "cancelled");
    assert_eq!(
        events_of(&Backend::Embedded, &server, &slower).len(),
        written
    );
    let (status, again) = server.post(&format!("/v1/restores/{slower}/cancel"), "");
    assert_eq!((status, again["state"].clone()), (202, json!("cancelled")));
}

/// Two nodes on Kafka: the node running a restore stops; once its lease expired the other
/// node takes the job over and finishes it, each key restored once.
#[test]
fn on_kafka_the_other_node_finishes_a_restore_whose_node_stopped() {
    let backend = Backend::kafka();
    let scratch = tempfile::tempdir().unwrap();
    let args = |name: &'static str| -> Vec<&'static str> {
        vec![
            "--partitions",
            "4",
            "--kafka-static-membership",
            "false",
            "--kafka-session-timeout-ms",
            "6000",
            "--node-id",
            name,
        ]
    };
    let a = Server::start_on(&backend, &scratch.path().join("a"), &args("a"));
    let b = Server::start_on(&backend, &scratch.path().join("b"), &args("b"));
    let keys: Vec<String> = (0..300).map(|i| format!("doc-{i:03}")).collect();
    ingest(&a, keys.iter().map(|k| put(k, 7)).collect());
    a.wait_caught_up();
    b.wait_caught_up();
    let t = instant();
    ingest(
        &b,
        keys.iter()
            .map(|k| json!({"op": "delete", "bucket": BUCKET, "key": k}))
            .collect(),
    );
    a.wait_caught_up();
    b.wait_caught_up();

    // 30 objects a second on A: ten seconds of work; A stops after the second batch.
    let id = start_restore(&a, &t, Some(30));
    wait_for("two batches on a", WAIT, || {
        let j = job(&a, "restores", &id);
        if j["progress"]["done"].as_u64() >= Some(60) {
            Ok(())
        } else {
            Err(j.to_string())
        }
    });
    let seen_on_b = job(&b, "restores", &id);
    assert_eq!(
        (seen_on_b["state"].clone(), seen_on_b["node"].clone()),
        (json!("running"), json!("a"))
    );
    a.stop();

    let done = finished(&b, "restores", &id);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        (done["node"].clone(), done["resumes"].clone()),
        (json!("b"), json!(1)),
        "{done}"
    );
    assert_eq!(done["result"]["restored_objects"], 300, "{done}");
    assert_eq!(done["result"]["done"]["recreate"], 300, "{done}");
    assert_eq!(
        (
            done["result"]["skipped"].clone(),
            done["result"]["failed"].clone()
        ),
        (json!(0), json!(0))
    );
    let events = events_of(&backend, &b, &id);
    assert_eq!(events.len(), 300);
    assert!(
        events.values().all(|e| e == &["ObjectCreated:Put"]),
        "{events:?}"
    );
    b.wait_caught_up();
    let (_, v) = b.get(&format!("/v1/objects?bucket={BUCKET}&limit=1000"));
    assert_eq!(v["objects"].as_array().unwrap().len(), 300);
    b.stop();
}
