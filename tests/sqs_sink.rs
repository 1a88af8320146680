//! The `sqs` sink against moto's SQS server on loopback, read back with boto3: standard and
//! FIFO queues get every acknowledged event with its attributes (FIFO: once, each object's
//! events in order in its message group); SQS down at the start, and lost mid-stream (a relay
//! in front of moto killed and restarted); Tidemark killed with SIGKILL mid-delivery; a replayed range; an unknown queue shown in status while other
//! subscriptions flow; bad settings refused by name.

mod common;

use std::time::Duration;

use common::moto::Moto;
use common::queues::*;
use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

fn sqs_sink(queue_url: &str) -> Value {
    json!({"type": "sqs", "queue_url": queue_url,
           "credentials": {"access_key_id": "testing", "secret_access_key": "testing"}})
}

/// (event id, bucket/key, sequence) of each message, checking its attributes and group.
fn seen(messages: &[Value], fifo: bool) -> Vec<(String, String, i64)> {
    messages
        .iter()
        .map(|m| {
            let r = &m["body"]["Records"][0];
            let id = r["tidemark"]["eventId"].as_str().unwrap().to_string();
            let bucket = r["s3"]["bucket"]["name"].as_str().unwrap();
            let key = m["attributes"]["tidemark_key"].as_str().unwrap();
            assert_eq!(m["attributes"]["tidemark_event_id"], id.as_str(), "{m}");
            assert_eq!(m["attributes"]["tidemark_bucket"], bucket, "{m}");
            assert!(m["attributes"]["tidemark_event_type"].is_string(), "{m}");
            let object = format!("{bucket}/{key}");
            if fifo {
                assert_eq!(m["group"], object.as_str(), "{m}");
                assert_eq!(m["dedupe"], id.as_str(), "{m}");
            }
            let seq = r["tidemark"]["sequence"].as_i64().unwrap();
            (id, object, seq)
        })
        .collect()
}

fn read_queue(endpoint: &str, url: &str, n: usize) -> Vec<Value> {
    read_lines(&["sqs-read", endpoint, url, &n.to_string(), "90"])
}

#[test]
fn standard_and_fifo_queues_get_every_event_once_sqs_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--allow-destinations", "loopback"];
    let mut server = Server::start(&data, &args);
    // SQS is down when the subscriptions start.
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let std_url = format!("{endpoint}/123456789012/changes");
    let fifo_url = format!("{endpoint}/123456789012/changes.fifo");
    create_subscription(&server, &queue_sub("std", sqs_sink(&std_url), 10));
    create_subscription(&server, &queue_sub("fifo", sqs_sink(&fifo_url), 10));
    create_subscription(
        &server,
        &queue_sub(
            "nowhere",
            sqs_sink(&format!("{endpoint}/123456789012/nowhere")),
            10,
        ),
    );
    // (moto's SQS slows with the queue's length: the load is kept to a few hundred events.)
    let mut rng = fastrand::Rng::with_seed(3);
    let mutations: Vec<Value> = (0..100)
        .map(|_| random_mutation(&mut rng, "photos", 30))
        .collect();
    let (code, resp) = server.post(
        "/v1/mutations",
        json!({ "mutations": mutations }).to_string(),
    );
    assert_eq!(code, 200, "{resp}");
    let mut acked = acked_ids(&resp);
    wait_status(&server, "std", "an error", WAIT, |s| {
        !s["last_error"].is_null()
    });
    let _moto = Moto::start_on(port);
    for name in ["changes", "changes.fifo"] {
        read_lines(&["sqs-create", &endpoint, name]);
    }
    let load = Load::paced(&server.url, "photos", 4, Duration::from_millis(80));
    std::thread::sleep(Duration::from_millis(1500));
    // SIGKILL mid-delivery; the restarted node goes on from its committed positions.
    server.kill();
    acked.extend(load.finish());
    server = Server::start(&data, &args);
    let t1 = instant();
    let range = put_keys(
        &server,
        "docs",
        &(0..25).map(|i| format!("r{i}")).collect::<Vec<_>>(),
    );
    let t2 = instant();
    acked.extend(range.iter().cloned());
    assert!(acked.len() > 100, "{} acknowledged", acked.len());

    let t = std::time::Instant::now();
    for name in ["std", "fifo"] {
        wait_caught_up(&server, name, WAIT);
    }
    eprintln!("caught up in {:?}", t.elapsed());
    let std_messages = read_queue(&endpoint, &std_url, acked.len());
    eprintln!(
        "{} acknowledged, {} standard messages",
        acked.len(),
        std_messages.len()
    );
    assert_at_least_once_in_key_order(&seen(&std_messages, false), &acked, true);
    let fifo_messages = read_queue(&endpoint, &fifo_url, acked.len());
    eprintln!(
        "{} FIFO messages, read in {:?}",
        fifo_messages.len(),
        t.elapsed()
    );
    let repeats = assert_at_least_once_in_key_order(&seen(&fifo_messages, true), &acked, true);
    assert_eq!(
        repeats, 0,
        "a FIFO queue drops what it saw within 5 minutes"
    );

    // The unknown queue is in status, named by SQS, while the others flowed.
    let status = subscription_status(&server, "nowhere");
    let message = status["last_error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("QueueDoesNotExist"), "{status}");
    assert_eq!(status["delivered"], 0, "{status}");

    // A replay of the range into the FIFO queue: delivered again, marked, in order.
    let job = replay(&server, "fifo", &t1, &t2);
    let replayed = read_queue(&endpoint, &fifo_url, range.len());
    let ids: Vec<&str> = replayed
        .iter()
        .map(|m| {
            assert_eq!(m["attributes"]["tidemark_replay"], job.as_str(), "{m}");
            m["attributes"]["tidemark_event_id"].as_str().unwrap()
        })
        .collect();
    let mut want: Vec<&str> = range.iter().map(String::as_str).collect();
    let mut got = ids.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want, "the range, once each");
}

#[test]
fn sqs_lost_mid_stream_is_waited_for_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--allow-destinations", "loopback"],
    );
    let moto = Moto::start();
    let moto_port = moto.endpoint.rsplit(':').next().unwrap().parse().unwrap();
    read_lines(&["sqs-create", &moto.endpoint, "changes.fifo"]);
    // Tidemark reaches moto only through the relay.
    let mut relay = common::relay::Relay::start(([127, 0, 0, 1], moto_port).into());
    let via_relay = format!("{}/123456789012/changes.fifo", relay.url());
    create_subscription(&server, &queue_sub("fifo", sqs_sink(&via_relay), 10));
    let load = Load::paced(&server.url, "photos", 9, Duration::from_millis(40));
    wait_status(&server, "fifo", "deliveries", WAIT, |s| {
        s["delivered"].as_u64() > Some(20)
    });
    relay.kill();
    let down = wait_status(&server, "fifo", "the outage in status", WAIT, |s| {
        !s["last_error"].is_null() && s["circuit_opened"].as_u64() > Some(0)
    });
    eprintln!("while down: {down}");
    std::thread::sleep(Duration::from_millis(1500));
    relay.up();
    std::thread::sleep(Duration::from_millis(500));
    let acked = load.finish();
    let status = wait_caught_up(&server, "fifo", WAIT);
    assert_eq!(status["dead_letters"], 0, "{status}");
    let url = format!("{}/123456789012/changes.fifo", moto.endpoint);
    let messages = read_queue(&moto.endpoint, &url, acked.len());
    let repeats = assert_at_least_once_in_key_order(&seen(&messages, true), &acked, true);
    assert_eq!(repeats, 0, "FIFO deduplication drops a re-sent batch");
    eprintln!("{} events through the outage", acked.len());
}

#[test]
fn bad_sqs_settings_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let base = sqs_sink("https://sqs.eu-west-1.amazonaws.com/123456789012/changes");
    let with = |k: &str, v: Value| {
        let mut s = base.clone();
        s[k] = v;
        s
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            with("queue_url", json!("sqs://q")),
            "sink.queue_url",
            "http(s)://",
        ),
        (
            with(
                "queue_url",
                json!("https://sqs.eu-west-1.amazonaws.com/changes"),
            ),
            "sink.queue_url",
            "not a queue URL",
        ),
        (with("format", json!("avro")), "sink.format", "'avro'"),
        (
            with("message_group", json!("{size}")),
            "sink.message_group",
            "{size}",
        ),
        (with("region", json!("EU West")), "sink.region", "region"),
        (with("timeout_ms", json!(5)), "sink.timeout_ms", "outside"),
        (
            with("credentials", json!({"access_key_id": "a"})),
            "sink",
            "secret_access_key",
        ),
        (
            with("queue_url", json!("http://10.0.0.5:9324/1/q")),
            "sink.queue_url",
            "private",
        ),
        (
            with("endpoint", json!("http://127.0.0.1:9324")),
            "sink.endpoint",
            "loopback",
        ),
    ];
    assert_sinks_refused(&server, cases);
    // An inline secret goes to the secret store; the subscription keeps a reference.
    let created = create_subscription(&server, &json!({"name": "ok", "sink": base}));
    let secret = created["sink"]["credentials"]["secret_access_key"]
        .as_str()
        .unwrap();
    assert!(secret.starts_with("secret:"), "{created}");
}
