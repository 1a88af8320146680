//! The `amqp` sink against a real RabbitMQ (Debian's `rabbitmq-server`) on loopback, read back
//! with pika: persistent messages, each confirmed by the broker before it counts as delivered;
//! every acknowledged event in the bound queue, each key's events in order; the broker down
//! at the start and killed mid-stream; Tidemark killed with SIGKILL mid-delivery; a replayed
//! range; bad settings refused by name, and an unroutable exchange or a wrong password shown
//! in status while other subscriptions flow.

mod common;

use std::time::Duration;

use common::queues::*;
use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(120);

/// (event id, bucket/key, sequence) of each message, checking its properties and headers.
fn seen(messages: &[Value]) -> Vec<(String, String, i64)> {
    messages
        .iter()
        .map(|m| {
            let data: Value = serde_json::from_str(m["data"].as_str().unwrap()).unwrap();
            let id = data["event_id"].as_str().unwrap().to_string();
            assert_eq!(m["message_id"], id.as_str(), "{m}");
            assert_eq!(m["type"], data["event_type"], "{m}");
            assert_eq!(m["delivery_mode"], 2, "persistent: {m}");
            assert_eq!(m["content_type"], "application/json", "{m}");
            assert_eq!(m["headers"]["tidemark_event_id"], id.as_str(), "{m}");
            let bucket = data["bucket"].as_str().unwrap();
            assert_eq!(m["routing_key"], format!("changes.{bucket}"), "{m}");
            let key = data["key"].as_str().unwrap();
            (
                id,
                format!("{bucket}/{key}"),
                data["sequence"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn sink(url: &str) -> Value {
    json!({"type": "amqp", "url": url, "exchange": "objects", "routing_key": "changes.{bucket}"})
}

/// Take messages from `queue` until every acknowledged id was seen. A timeout names where
/// the missing ones sit among the acknowledged, subscription `sub`'s status and the server's
/// last log lines, so a failure says which side lost track.
fn take_all(
    rabbit: &RabbitServer,
    (server, sub): (&Server, &str),
    queue: &str,
    acked: &[String],
) -> Vec<Value> {
    let mut all = Vec::new();
    wait_for("every acknowledged event in the queue", WAIT, || {
        all.extend(rabbit.take(queue));
        let ids: std::collections::HashSet<&str> = all
            .iter()
            .filter_map(|m| m["message_id"].as_str())
            .collect();
        let missing: Vec<usize> = (0..acked.len())
            .filter(|&i| !ids.contains(acked[i].as_str()))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let log = server.stderr_text();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        Err(format!(
            "{} of {} missing (positions {:?}..{:?}), {} messages taken; status {}; server log \
             (newest first):\n{}",
            missing.len(),
            acked.len(),
            missing.first(),
            missing.last(),
            all.len(),
            subscription_status(server, sub),
            tail.join("\n")
        ))
    });
    all
}

#[test]
fn every_event_is_confirmed_in_key_order_through_broker_outages() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--allow-destinations", "loopback"];
    let mut server = Server::start(&data, &args);
    // RabbitMQ is down when the subscription starts.
    let port = free_port();
    create_subscription(
        &server,
        &queue_sub("rabbit", sink(&format!("amqp://127.0.0.1:{port}")), 20),
    );
    let load = Load::paced(&server.url, "photos", 31, Duration::from_millis(40));
    wait_status(&server, "rabbit", "an error", WAIT, |s| {
        !s["last_error"].is_null()
    });
    let mut rabbit = RabbitServer::start(&dir.path().join("rabbit"), port);
    rabbit.setup("objects", "changes", "changes.#");
    std::thread::sleep(Duration::from_millis(1000));
    // Killed mid-stream: what it confirmed was on disk (durable queue, persistent messages).
    rabbit.kill_and_restart(Duration::from_millis(300));
    std::thread::sleep(Duration::from_millis(1000));
    // And Tidemark killed with SIGKILL mid-delivery.
    server.kill();
    let mut acked = load.finish();
    server = Server::start(&data, &args);
    let t1 = instant();
    let range = put_keys(
        &server,
        "docs",
        &(0..30).map(|i| format!("r{i}")).collect::<Vec<_>>(),
    );
    let t2 = instant();
    acked.extend(range.iter().cloned());
    assert!(acked.len() > 100, "{} acknowledged", acked.len());

    let messages = take_all(&rabbit, (&server, "rabbit"), "changes", &acked);
    let repeats = assert_at_least_once_in_key_order(&seen(&messages), &acked, true);
    eprintln!("{} events, {repeats} repeated", acked.len());
    let status = wait_caught_up(&server, "rabbit", WAIT);
    assert_eq!(status["dead_letters"], 0, "{status}");

    let job = replay(&server, "rabbit", &t1, &t2);
    let replayed = wait_for("the replayed range in the queue", WAIT, || {
        let r: Vec<Value> = rabbit
            .take("changes")
            .into_iter()
            .filter(|m| m["headers"]["tidemark_replay"] == job.as_str())
            .collect();
        if r.len() == range.len() {
            Ok(r)
        } else {
            Err(format!("{} replayed", r.len()))
        }
    });
    let mut ids: Vec<&str> = replayed
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    let mut want: Vec<&str> = range.iter().map(String::as_str).collect();
    ids.sort();
    want.sort();
    assert_eq!(ids, want, "the range, once each");
}

#[test]
fn bad_amqp_settings_are_refused_by_name_and_problems_show_in_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let base = json!({"type": "amqp", "url": "amqp://203.0.113.9"});
    let with = |k: &str, v: Value| {
        let mut s = base.clone();
        s[k] = v;
        s
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (with("url", json!("http://h")), "sink.url", "amqp://"),
        (
            with("url", json!("amqp://u:p@h")),
            "sink.url",
            "sink.username",
        ),
        (
            with("url", json!("amqp://h/%zz")),
            "sink.url",
            "URL-encoded",
        ),
        (
            with("routing_key", json!("{nope}")),
            "sink.routing_key",
            "{nope}",
        ),
        (with("format", json!("xml")), "sink.format", "'xml'"),
        (with("url", json!("amqp://10.1.2.3")), "sink.url", "private"),
    ];
    assert_sinks_refused(&server, cases);
    drop(server);

    let server = Server::start(
        &dir.path().join("data2"),
        &["--allow-destinations", "loopback"],
    );
    let rabbit = RabbitServer::start(&dir.path().join("rabbit"), free_port());
    rabbit.setup("objects", "changes", "changes.#");
    let mut wrong = sink(&rabbit.url());
    wrong["password"] = json!("nope");
    create_subscription(&server, &queue_sub("wrongpw", wrong, 10));
    let mut nowhere = sink(&rabbit.url());
    nowhere["routing_key"] = json!("elsewhere.{bucket}");
    create_subscription(&server, &queue_sub("unroutable", nowhere, 10));
    let mut missing = sink(&rabbit.url());
    missing["exchange"] = json!("no-such-exchange");
    create_subscription(&server, &queue_sub("noexchange", missing, 10));
    let right = create_subscription(&server, &queue_sub("right", sink(&rabbit.url()), 10));
    assert!(
        right["sink"]["password"]
            .as_str()
            .unwrap()
            .starts_with("secret:"),
        "{right}"
    );
    let acked: Vec<String> = ingest(
        &server,
        (0..20)
            .map(|i| json!({"op": "put", "bucket": "media", "key": format!("k{i}"), "size": 1}))
            .collect(),
    )
    .into_iter()
    .map(|(_, id)| id)
    .collect();
    for (name, needle) in [
        ("wrongpw", "ACCESS_REFUSED"),
        ("unroutable", "no queue took a message"),
        ("noexchange", "NOT_FOUND"),
    ] {
        let s = wait_status(&server, name, needle, WAIT, |s| {
            s["last_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(needle))
        });
        assert_eq!(s["dead_letters"], 0, "{s}");
    }
    wait_status(&server, "right", "delivered", WAIT, |s| {
        s["delivered"] == acked.len()
    });
    let messages = take_all(&rabbit, (&server, "right"), "changes", &acked);
    assert_at_least_once_in_key_order(&seen(&messages), &acked, false);
}
