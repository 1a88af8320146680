//! The `redis-stream` sink against a real `redis-server` on loopback, read back with redis-py:
//! every acknowledged event arrives (again only after an outage, with the same id), each key's
//! events in order in its stream; Redis down at the start and killed mid-stream; Tidemark
//! killed with SIGKILL mid-delivery; a replayed range; bad settings refused by name, and a
//! wrong password shown in status while other subscriptions flow.

mod common;

use std::time::Duration;

use common::queues::*;
use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

/// (event id, bucket/key, sequence) of each entry, checking the fields every entry carries.
fn seen(entries: &[Value]) -> Vec<(String, String, i64)> {
    entries
        .iter()
        .map(|e| {
            let data: Value = serde_json::from_str(e["data"].as_str().unwrap()).unwrap();
            assert_eq!(e["event_id"], data["event_id"], "{e}");
            assert_eq!(e["event_type"], data["event_type"], "{e}");
            assert_eq!(e["key"], data["key"], "{e}");
            assert_eq!(e["content_type"], "application/json", "{e}");
            assert_eq!(
                e["_stream"],
                format!("tidemark:{}", data["bucket"].as_str().unwrap()),
                "one stream per bucket"
            );
            (
                e["event_id"].as_str().unwrap().to_string(),
                format!(
                    "{}/{}",
                    e["bucket"].as_str().unwrap(),
                    e["key"].as_str().unwrap()
                ),
                data["sequence"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn wait_entries(redis: &RedisServer, acked: &[String]) -> Vec<Value> {
    wait_for("every acknowledged event in Redis", WAIT, || {
        let entries: Vec<Value> = redis
            .entries("tidemark:*")
            .into_iter()
            .filter(|e| e.get("replay").is_none())
            .collect();
        let ids: std::collections::HashSet<&str> = entries
            .iter()
            .filter_map(|e| e["event_id"].as_str())
            .collect();
        let missing = acked.iter().filter(|a| !ids.contains(a.as_str())).count();
        if missing == 0 {
            Ok(entries)
        } else {
            Err(format!("{missing} missing"))
        }
    })
}

#[test]
fn every_event_arrives_in_key_order_through_redis_outages() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--allow-destinations", "loopback"],
    );
    // Redis is down when the subscription starts.
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    create_subscription(
        &server,
        &queue_sub("streams", json!({"type": "redis-stream", "url": url}), 20),
    );
    let load = Load::start(&server.url, "photos", 7);
    let down = wait_status(&server, "streams", "an error", WAIT, |s| {
        !s["last_error"].is_null()
    });
    assert!(
        down["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{port}")),
        "{down}"
    );
    let mut redis = RedisServer::start(&dir.path().join("redis"), port, None);
    std::thread::sleep(Duration::from_millis(700));
    // Killed mid-stream, back a moment later on the same files.
    redis.kill_and_restart(Duration::from_millis(500));
    std::thread::sleep(Duration::from_millis(700));
    let acked = load.finish();
    assert!(acked.len() > 200, "{} acknowledged", acked.len());

    let entries = wait_entries(&redis, &acked);
    let repeats = assert_at_least_once_in_key_order(&seen(&entries), &acked, false);
    let status = wait_caught_up(&server, "streams", WAIT);
    assert_eq!(status["dead_letters"], 0, "{status}");
    eprintln!(
        "{} events, {repeats} repeated after the outage",
        acked.len()
    );
}

#[test]
fn sigkill_of_tidemark_loses_nothing_and_a_replay_redelivers_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let redis = RedisServer::start(&dir.path().join("redis"), free_port(), None);
    let args = ["--allow-destinations", "loopback"];
    let mut server = Server::start(&data, &args);
    create_subscription(
        &server,
        &queue_sub(
            "streams",
            json!({"type": "redis-stream", "url": redis.url()}),
            5,
        ),
    );
    let mut acked = Vec::new();
    for round in 0..2 {
        let load = Load::start(&server.url, "docs", round);
        std::thread::sleep(Duration::from_millis(900));
        server.kill();
        acked.extend(load.finish());
        server = Server::start(&data, &args);
    }
    let t1 = instant();
    let range = put_keys(
        &server,
        "docs",
        &(0..40).map(|i| format!("r{i}")).collect::<Vec<_>>(),
    );
    let t2 = instant();
    acked.extend(range.iter().cloned());
    let entries = wait_entries(&redis, &acked);
    assert_at_least_once_in_key_order(&seen(&entries), &acked, true);

    let job = replay(&server, "streams", &t1, &t2);
    let replayed = wait_for("the replayed range in Redis", WAIT, || {
        let r: Vec<Value> = redis
            .entries("tidemark:*")
            .into_iter()
            .filter(|e| e["replay"] == job.as_str())
            .collect();
        if r.len() >= range.len() {
            Ok(r)
        } else {
            Err(format!("{} replayed", r.len()))
        }
    });
    let mut ids: Vec<&str> = replayed
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    let mut want: Vec<&str> = range.iter().map(String::as_str).collect();
    ids.sort();
    want.sort();
    assert_eq!(ids, want, "the range, once each");
}

#[test]
fn bad_redis_settings_are_refused_by_name_and_a_wrong_password_shows_in_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let base = json!({"type": "redis-stream", "url": "redis://203.0.113.9:6379"});
    let with = |k: &str, v: Value| {
        let mut s = base.clone();
        s[k] = v;
        s
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (with("url", json!("http://h:1")), "sink.url", "redis://"),
        (
            with("url", json!("redis://u:pw@h:1")),
            "sink.url",
            "sink.password",
        ),
        (with("url", json!("redis://h:1/x")), "sink.url", "database"),
        (with("stream", json!("s:{nope}")), "sink.stream", "{nope}"),
        (with("format", json!("xml")), "sink.format", "'xml'"),
        (with("maxlen", json!(0)), "sink.maxlen", "at least 1"),
        (
            with("username", json!("u")),
            "sink.password",
            "needs a password",
        ),
        (
            with("url", json!("redis://10.1.2.3:6379")),
            "sink.url",
            "private",
        ),
        (
            with("url", json!("redis://127.0.0.1:6379")),
            "sink.url",
            "loopback",
        ),
    ];
    assert_sinks_refused(&server, cases);
    drop(server);

    let server = Server::start(
        &dir.path().join("data2"),
        &["--allow-destinations", "loopback"],
    );
    let redis = RedisServer::start(&dir.path().join("redis"), free_port(), Some("s3cret"));
    let sink = |password: &str| {
        json!({"type": "redis-stream", "url": redis.url(), "password": password,
               "stream": "tidemark:{bucket}", "maxlen": 1000})
    };
    create_subscription(&server, &queue_sub("wrong", sink("nope"), 10));
    let right = create_subscription(&server, &queue_sub("right", sink("s3cret"), 10));
    // The password went to the secret store: the subscription holds a reference.
    assert!(
        right["sink"]["password"]
            .as_str()
            .unwrap()
            .starts_with("secret:"),
        "{right}"
    );
    let acked: Vec<String> = ingest(
        &server,
        (0..30)
            .map(|i| json!({"op": "put", "bucket": "media", "key": format!("k{i}"), "size": 1}))
            .collect(),
    )
    .into_iter()
    .map(|(_, id)| id)
    .collect();
    let status = wait_status(&server, "wrong", "the refused password", WAIT, |s| {
        s["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("AUTH was refused"))
    });
    assert_eq!(status["delivered"], 0, "{status}");
    wait_status(&server, "right", "delivered", WAIT, |s| {
        s["delivered"] == acked.len()
    });
    let entries = redis.entries("tidemark:media");
    assert_eq!(entries.len(), acked.len(), "{entries:?}");
}
