//! The `nats` sink against a real `nats-server` with JetStream on loopback, read back with
//! nats-py: every acknowledged event is stored (once: JetStream drops re-sent ids), each
//! key's events in order; the server down at the start, and killed mid-stream; Tidemark
//! killed with SIGKILL mid-delivery; a replayed range; bad settings refused by name, and a
//! missing stream or a wrong token shown in status while other subscriptions flow.

mod common;

use std::time::Duration;

use common::queues::*;
use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

/// (event id, bucket/key, sequence) of each message, checking its headers.
fn seen(messages: &[Value]) -> Vec<(String, String, i64)> {
    messages
        .iter()
        .map(|m| {
            let data: Value = serde_json::from_str(m["data"].as_str().unwrap()).unwrap();
            let id = data["event_id"].as_str().unwrap().to_string();
            let h = &m["headers"];
            assert_eq!(h["tidemark_event_id"], id.as_str(), "{m}");
            assert_eq!(h["tidemark_event_type"], data["event_type"], "{m}");
            assert_eq!(h["Content-Type"], "application/json", "{m}");
            let bucket = data["bucket"].as_str().unwrap();
            assert_eq!(m["subject"], format!("tidemark.{bucket}"), "{m}");
            if h.get("tidemark_replay").is_none() {
                assert_eq!(h["Nats-Msg-Id"], id.as_str(), "{m}");
            }
            let key = data["key"].as_str().unwrap();
            (
                id,
                format!("{bucket}/{key}"),
                data["sequence"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn wait_messages(nats: &NatsServer, acked: &[String]) -> Vec<Value> {
    wait_for("every acknowledged event in the stream", WAIT, || {
        let messages: Vec<Value> = nats
            .messages("CHANGES")
            .into_iter()
            .filter(|m| m["headers"].get("tidemark_replay").is_none())
            .collect();
        let ids: std::collections::HashSet<&str> = messages
            .iter()
            .filter_map(|m| m["headers"]["tidemark_event_id"].as_str())
            .collect();
        let missing = acked.iter().filter(|a| !ids.contains(a.as_str())).count();
        if missing == 0 {
            Ok(messages)
        } else {
            Err(format!("{missing} missing"))
        }
    })
}

#[test]
fn every_event_is_stored_once_in_key_order_through_nats_outages() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--allow-destinations", "loopback"],
    );
    // NATS is down when the subscription starts.
    let port = free_port();
    create_subscription(
        &server,
        &queue_sub(
            "jet",
            json!({"type": "nats", "url": format!("nats://127.0.0.1:{port}")}),
            20,
        ),
    );
    let load = Load::start(&server.url, "photos", 11);
    wait_status(&server, "jet", "an error", WAIT, |s| {
        !s["last_error"].is_null()
    });
    let mut nats = NatsServer::start(&dir.path().join("nats"), port, None);
    nats.add_stream("CHANGES", "tidemark.>");
    std::thread::sleep(Duration::from_millis(700));
    // Killed mid-stream, back a moment later on the same store.
    nats.kill_and_restart(Duration::from_millis(500));
    std::thread::sleep(Duration::from_millis(700));
    let acked = load.finish();
    assert!(acked.len() > 200, "{} acknowledged", acked.len());

    let messages = wait_messages(&nats, &acked);
    let repeats = assert_at_least_once_in_key_order(&seen(&messages), &acked, false);
    let status = wait_caught_up(&server, "jet", WAIT);
    assert_eq!(status["dead_letters"], 0, "{status}");
    eprintln!("{} events, {repeats} stored twice", acked.len());
}

#[test]
fn sigkill_of_tidemark_loses_nothing_and_a_replay_redelivers_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let nats = NatsServer::start(&dir.path().join("nats"), free_port(), None);
    nats.add_stream("CHANGES", "tidemark.>");
    let args = ["--allow-destinations", "loopback"];
    let mut server = Server::start(&data, &args);
    create_subscription(
        &server,
        &queue_sub("jet", json!({"type": "nats", "url": nats.url()}), 5),
    );
    let mut acked = Vec::new();
    for round in 0..2 {
        let load = Load::start(&server.url, "docs", 100 + round);
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
    let messages = wait_messages(&nats, &acked);
    let repeats = assert_at_least_once_in_key_order(&seen(&messages), &acked, true);
    assert_eq!(repeats, 0, "JetStream drops re-sent message ids");

    let job = replay(&server, "jet", &t1, &t2);
    let replayed = wait_for("the replayed range in the stream", WAIT, || {
        let r: Vec<Value> = nats
            .messages("CHANGES")
            .into_iter()
            .filter(|m| m["headers"]["tidemark_replay"] == job.as_str())
            .collect();
        if r.len() >= range.len() {
            Ok(r)
        } else {
            Err(format!("{} replayed", r.len()))
        }
    });
    let mut ids: Vec<&str> = replayed
        .iter()
        .map(|m| m["headers"]["tidemark_event_id"].as_str().unwrap())
        .collect();
    let mut want: Vec<&str> = range.iter().map(String::as_str).collect();
    ids.sort();
    want.sort();
    assert_eq!(ids, want, "the range, once each");
}

#[test]
fn bad_nats_settings_are_refused_by_name_and_problems_show_in_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let base = json!({"type": "nats", "url": "nats://203.0.113.9:4222"});
    let with = |k: &str, v: Value| {
        let mut s = base.clone();
        s[k] = v;
        s
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (with("url", json!("http://h:1")), "sink.url", "nats://"),
        (
            with("url", json!("nats://u:p@h")),
            "sink.url",
            "sink.username",
        ),
        (with("subject", json!("a.{nope}")), "sink.subject", "{nope}"),
        (with("subject", json!("a.*")), "sink.subject", "wildcards"),
        (with("subject", json!("a b")), "sink.subject", "no spaces"),
        (with("format", json!("xml")), "sink.format", "'xml'"),
        (with("username", json!("u")), "sink.password", "go together"),
        (with("url", json!("nats://10.1.2.3")), "sink.url", "private"),
    ];
    assert_sinks_refused(&server, cases);
    drop(server);

    let server = Server::start(
        &dir.path().join("data2"),
        &["--allow-destinations", "loopback"],
    );
    let nats = NatsServer::start(&dir.path().join("nats"), free_port(), Some("t0ken"));
    let sink = |token: &str, subject: &str| json!({"type": "nats", "url": nats.url(), "token": token, "subject": subject});
    create_subscription(
        &server,
        &queue_sub("wrong", sink("nope", "tidemark.{bucket}"), 10),
    );
    create_subscription(
        &server,
        &queue_sub("nostream", sink("t0ken", "elsewhere.{bucket}"), 10),
    );
    ingest(
        &server,
        (0..10)
            .map(|i| json!({"op": "put", "bucket": "media", "key": format!("k{i}"), "size": 1}))
            .collect(),
    );
    for (name, needle) in [
        ("wrong", "Authorization Violation"),
        (
            "nostream",
            "no JetStream stream takes subject 'elsewhere.media'",
        ),
    ] {
        let s = wait_status(&server, name, needle, WAIT, |s| {
            s["last_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(needle))
        });
        assert_eq!(s["delivered"], 0, "{s}");
    }
}
