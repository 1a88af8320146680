//! Webhook delivery end to end: a real `tidemark serve` delivering to `tests/py/webhook_receiver.py`,
//! which checks what arrives with libraries that share no code with Tidemark (`standardwebhooks`
//! for signatures, the `cloudevents` SDK for CloudEvents). Every test asserts on what the receiver
//! saw on the wire and on what the subscription API shows a user.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::receiver::{Receiver, assert_per_key_order, only_event, verify_signature};
use common::*;
use serde_json::{Value, json};

const BUCKET: &str = "photos";
/// How long a test waits for anything that should take milliseconds.
const WAIT: Duration = Duration::from_secs(20);

/// A circuit short enough that a failing endpoint costs a test milliseconds.
fn fast_circuit() -> Value {
    json!({"failure_threshold": 3, "open_ms": 300})
}

fn start_server(scratch: &Path) -> Server {
    Server::start(&scratch.join("data"), &["--allow-destinations", "loopback"])
}

/// A webhook subscription from now on, with fast retries; `sink` fields are merged in.
fn webhook_sub(name: &str, url: &str, sink: Value, max_attempts: u32) -> Value {
    let mut spec = json!({
        "name": name,
        "sink": {"type": "webhook", "url": url},
        "retry": fast_retry(max_attempts),
        "circuit": fast_circuit(),
    });
    for (k, v) in sink.as_object().unwrap() {
        spec["sink"][k] = v.clone();
    }
    spec
}

fn put_op(key: &str, size: u64) -> Value {
    json!({"op": "put", "bucket": BUCKET, "key": key, "size": size, "content_type": "image/jpeg"})
}

/// `n` puts round-robin over `keys`.
fn puts(server: &Server, keys: &[&str], n: usize) -> Vec<(String, String)> {
    let muts = (0..n)
        .map(|i| put_op(keys[i % keys.len()], 100 + i as u64))
        .collect();
    ingest(server, muts)
}

fn ids_of(acked: &[(String, String)]) -> Vec<String> {
    acked.iter().map(|(_, id)| id.clone()).collect()
}

/// Wait until the subscription's position reached the end of the log.
fn wait_no_lag(server: &Server, name: &str) -> Value {
    wait_status(server, name, "no lag", WAIT, |s| s["lag"] == 0)
}

fn new_secret() -> String {
    let bytes: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
    format!("whsec_{}", BASE64.encode(bytes))
}

/// The exact bytes of a captured request's body.
fn body_of(req: &Value) -> Vec<u8> {
    BASE64.decode(req["body_b64"].as_str().unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn signatures_verify_with_standardwebhooks_across_a_rotation() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let server = start_server(dir);
    let (a, b) = (new_secret(), new_secret());

    // Secret A only: a receiver holding A verifies every delivery (it answers 401 otherwise).
    let ra = Receiver::start(dir, "holds-a", &["--secret", &a]);
    let spec = webhook_sub("signed", &ra.url("/hook"), json!({"secret": a}), 3);
    create_subscription(&server, &spec);
    let first = puts(&server, &["k0", "k1"], 4);
    ra.wait_delivered(&ids_of(&first), WAIT);
    for req in ra.requests() {
        assert_eq!(req["verified"], true, "{}", req["verify_error"]);
    }
    assert_secrets_hidden(&server, "signed", &[&a], 1);

    // Rotation: both secrets sign; the new receiver holds only B.
    let rb = Receiver::start(dir, "holds-b", &["--secret", &b]);
    let mut rotated = spec.clone();
    rotated["sink"]["url"] = rb.url("/hook").into();
    rotated["sink"]["secret"] = json!([a, b]);
    let (status, resp) = server.put("/v1/subscriptions/signed", &rotated);
    assert_eq!(status, 200, "{resp}");
    assert_secrets_hidden(&server, "signed", &[&a, &b], 2);
    wait_until_running_at(&server, &ra, &rb);

    let after = puts(&server, &["k0", "k1"], 4);
    rb.wait_delivered(&ids_of(&after), WAIT);
    let reqs = rb.requests();
    for req in &reqs {
        assert_eq!(req["verified"], true, "B verifies: {}", req["verify_error"]);
        let sigs = req["headers"]["webhook-signature"].as_str().unwrap();
        assert_eq!(
            sigs.split(' ').filter(|s| s.starts_with("v1,")).count(),
            2,
            "{sigs}"
        );
        // A receiver still holding only A verifies the same request.
        let ts = req["headers"]["webhook-timestamp"].as_str().unwrap();
        verify_signature(&a, req, &body_of(req), ts, &[]).expect("A verifies after the rotation");
    }
    check_tampering_fails(&a, reqs.last().unwrap());
}

/// GET of the subscription (and the list and status) shows `secret:` references only.
fn assert_secrets_hidden(server: &Server, name: &str, secrets: &[&str], refs: usize) {
    let (_, sub) = server.get(&format!("/v1/subscriptions/{name}"));
    let (_, list) = server.get("/v1/subscriptions");
    let status = subscription_status(server, name);
    for text in [sub.to_string(), list.to_string(), status.to_string()] {
        for s in secrets {
            let key = s.strip_prefix("whsec_").unwrap();
            assert!(!text.contains(key), "a secret value is shown: {text}");
        }
    }
    let shown = match &sub["sink"]["secret"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(v) => v.iter().map(|s| s.as_str().unwrap().to_string()).collect(),
        other => panic!("sink.secret is {other}"),
    };
    assert_eq!(shown.len(), refs, "{sub}");
    assert!(shown.iter().all(|s| s.starts_with("secret:")), "{shown:?}");
}

/// A replaced subscription restarts asynchronously: events acknowledged just after the PUT may
/// still go to the old endpoint. Send one event at a time until one reaches the new one.
fn wait_until_running_at(server: &Server, old: &Receiver, new: &Receiver) {
    for i in 0..20 {
        let id = ids_of(&puts(server, &["warmup"], 1)).remove(0);
        let at_new = wait_for("the warm-up event", WAIT, || {
            if new.delivered_ids().contains(&id) {
                Ok(true)
            } else if old.delivered_ids().contains(&id) {
                Ok(false)
            } else {
                Err(format!("warm-up {i} not delivered"))
            }
        });
        if at_new {
            return;
        }
    }
    panic!("the replaced subscription never delivered to its new URL");
}

/// A captured, validly signed request no longer verifies once its body or timestamp changes,
/// nor once it is older than the receiver's tolerance.
fn check_tampering_fails(secret: &str, req: &Value) {
    let body = body_of(req);
    let ts = req["headers"]["webhook-timestamp"].as_str().unwrap();
    let ts_num: i64 = ts.parse().unwrap();
    verify_signature(secret, req, &body, ts, &[]).expect("the captured request verifies");

    let mut tampered = body.clone();
    let at = tampered.iter().position(|&c| c == b'k').unwrap();
    tampered[at] = b'K';
    let err =
        verify_signature(secret, req, &tampered, ts, &[]).expect_err("a tampered body must fail");
    assert!(err.contains("No matching signature"), "{err}");

    let old = (ts_num - 3600).to_string();
    let err =
        verify_signature(secret, req, &body, &old, &[]).expect_err("an old timestamp must fail");
    assert!(err.contains("too old"), "{err}");
    // Even with a tolerance that admits it, the changed timestamp breaks the signature: the
    // timestamp is signed with the body.
    let err = verify_signature(secret, req, &body, &old, &["--tolerance", "7200"])
        .expect_err("a re-dated request must fail");
    assert!(err.contains("No matching signature"), "{err}");

    let other = new_secret();
    verify_signature(&other, req, &body, ts, &[]).expect_err("another secret must not verify");

    // The genuine request, replayed later than the receiver's tolerance, is refused.
    wait_for("the request to age 2 s", Duration::from_secs(5), || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        if now >= ts_num + 2 {
            Ok(())
        } else {
            Err(format!("now {now}"))
        }
    });
    let err = verify_signature(secret, req, &body, ts, &["--tolerance", "1"])
        .expect_err("a replay older than the tolerance must fail");
    assert!(err.contains("too old"), "{err}");
}

#[test]
fn failing_then_recovering_receiver_gets_everything_in_order() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let server = start_server(dir);
    let r = Receiver::start(dir, "flaky", &["--fail-first", "5"]);
    create_subscription(
        &server,
        &webhook_sub("flaky", &r.url("/hook"), json!({}), 10),
    );

    let keys = ["k0", "k1", "k2", "k3", "k4"];
    let mut acked = Vec::new();
    for round in 0..5 {
        // Puts and tag changes interleaved over the keys, in five requests (a key is tagged only
        // once it exists).
        let muts = (0..10)
            .map(|i| {
                let key = keys[(round + i) % keys.len()];
                if round > 0 && i % 3 == 2 {
                    json!({"op": "tag", "bucket": BUCKET, "key": key, "tags": {"round": round.to_string()}})
                } else {
                    put_op(key, (round * 10 + i) as u64 + 1)
                }
            })
            .collect();
        acked.extend(ingest(&server, muts));
    }
    assert_eq!(acked.len(), 50);
    r.wait_delivered(&ids_of(&acked), Duration::from_secs(30));

    let reqs = r.requests();
    let failed: Vec<&Value> = reqs.iter().filter(|q| q["status"] != 200).collect();
    assert_eq!(
        failed.len(),
        5,
        "the receiver failed its first five requests"
    );
    let delivered_ok: HashSet<String> = reqs
        .iter()
        .filter(|q| q["status"] == 200)
        .map(|q| only_event(q).id)
        .collect();
    for req in &reqs {
        // Duplicates (a failed attempt and its retry) carry the same webhook-id: the event id.
        assert_eq!(
            req["webhook_id"].as_str(),
            Some(only_event(req).id.as_str()),
            "{req}"
        );
    }
    for req in &failed {
        assert!(
            delivered_ok.contains(&only_event(req).id),
            "a failed event was retried"
        );
    }
    assert_per_key_order(&reqs, &acked);

    let s = wait_no_lag(&server, "flaky");
    assert!(s["delivered"].as_u64().unwrap() >= 50, "{s}");
    assert!(s["failed_attempts"].as_u64().unwrap() >= 5, "{s}");
    assert_eq!(s["dead_letters"], 0, "{s}");
}

#[test]
fn down_receiver_opens_the_circuit_and_another_subscription_keeps_flowing() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let server = start_server(dir);
    let port = free_port();
    let healthy = Receiver::start(dir, "healthy", &[]);
    let down_url = format!("http://127.0.0.1:{port}/hook");
    create_subscription(&server, &webhook_sub("down", &down_url, json!({}), 1000));
    let healthy_spec = webhook_sub("healthy", &healthy.url("/hook"), json!({}), 3);
    create_subscription(&server, &healthy_spec);

    let acked = puts(&server, &["k0", "k1", "k2", "k3"], 20);
    // The healthy subscription gets everything while the other endpoint refuses connections.
    healthy.wait_delivered(&ids_of(&acked), WAIT);
    assert_per_key_order(&healthy.requests(), &acked);
    let s = wait_status(&server, "down", "an open circuit", WAIT, |s| {
        matches!(s["circuit"].as_str(), Some("open" | "half-open"))
            && s["failed_attempts"].as_u64() > Some(0)
    });
    assert_eq!(s["delivered"], 0, "{s}");
    assert_eq!(s["lag"], 20, "{s}");
    assert!(s["circuit_opened"].as_u64() >= Some(1), "{s}");
    assert!(s["last_error"]["message"].is_string(), "{s}");
    assert_eq!(s["dead_letters"], 0, "{s}");

    // The endpoint comes up: everything arrives, in order per key, and the circuit closes.
    let back = Receiver::start_on(dir, "back", port, &[]);
    back.wait_delivered(&ids_of(&acked), WAIT);
    assert_per_key_order(&back.requests(), &acked);
    let s = wait_status(&server, "down", "a closed circuit", WAIT, |s| {
        s["circuit"] == "closed" && s["lag"] == 0
    });
    assert_eq!(s["delivered"], 20, "{s}");
    assert_eq!(s["dead_letters"], 0, "{s}");
}

#[test]
fn exhausted_attempts_go_to_dead_letters_and_redrive_delivers_them() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let server = start_server(dir);
    let failing = Receiver::start(dir, "failing", &["--always-status", "500"]);
    let port = failing.port;
    let mut spec = webhook_sub("dlq", &failing.url("/hook"), json!({}), 2);
    // Keep the circuit out of the way: this test is about attempts.
    spec["circuit"] = json!({"failure_threshold": 100, "open_ms": 300});
    create_subscription(&server, &spec);

    let acked = puts(&server, &["k0", "k1", "k2", "k3"], 4);
    let letters = wait_dead_letters(&server, "dlq", 4, WAIT);
    let dead_events: HashSet<&str> = letters
        .iter()
        .map(|l| l["event_id"].as_str().unwrap())
        .collect();
    let acked_set: HashSet<&str> = acked.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(dead_events, acked_set);
    for l in &letters {
        assert_eq!(l["attempts"], 2, "{l}");
        assert_eq!(l["status"], 500, "{l}");
        assert!(l["error"].as_str().unwrap().contains("500"), "{l}");
        assert!(
            l.get("wire").is_none(),
            "the listing leaves the event bytes out: {l}"
        );
    }
    assert_eq!(failing.requests().len(), 8, "two attempts per event");
    let s = wait_no_lag(&server, "dlq");
    assert_eq!(s["dead_letters"], 4, "{s}");
    assert_eq!(s["dead_lettered"], 4, "{s}");

    // The queue is persisted: a restarted server lists the same letters.
    server.stop();
    let server = start_server(dir);
    let relisted = wait_dead_letters(&server, "dlq", 4, WAIT);
    for (before, after) in letters.iter().zip(&relisted) {
        assert_eq!(before["id"], after["id"]);
        assert_eq!(before["event_id"], after["event_id"]);
    }

    // The endpoint is fixed; redrive one letter by id, then the rest.
    failing.stop();
    let fixed = Receiver::start_on(dir, "fixed", port, &[]);
    redrive_one_then_all(&server, &fixed, &letters);
    assert_eq!(subscription_status(&server, "dlq")["dead_letters"], 0);
}

/// Redrive `letters[0]` by id, see only it delivered and gone from the queue; then redrive the
/// rest with an empty body (all).
fn redrive_one_then_all(server: &Server, fixed: &Receiver, letters: &[Value]) {
    let path = "/v1/subscriptions/dlq/dead-letters/redrive";
    let unknown = "01900000-0000-7000-8000-000000000000";
    let (status, v) = server.post(path, json!({"ids": [unknown]}).to_string());
    assert_eq!(status, 404, "redriving an unknown letter: {v}");

    let one = &letters[0];
    let (status, v) = server.post(path, json!({"ids": [one["id"]]}).to_string());
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["redriving"], 1, "{v}");
    let one_event = one["event_id"].as_str().unwrap().to_string();
    fixed.wait_delivered(std::slice::from_ref(&one_event), WAIT);
    let left = wait_dead_letters(server, "dlq", letters.len() - 1, WAIT);
    assert!(left.iter().all(|l| l["id"] != one["id"]), "{left:?}");
    assert_eq!(
        fixed.delivered_ids(),
        HashSet::from([one_event]),
        "only the one redriven"
    );

    let (status, v) = server.post(path, "");
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["redriving"], letters.len() - 1, "{v}");
    let all: Vec<String> = letters
        .iter()
        .map(|l| l["event_id"].as_str().unwrap().to_string())
        .collect();
    fixed.wait_delivered(&all, WAIT);
    wait_dead_letters(server, "dlq", 0, WAIT);
}

#[test]
fn cloudevents_binary_and_structured_parse_with_the_sdk() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let server = start_server(dir);
    let receivers = subscribe_in_every_format(&server, dir);

    let mut muts: Vec<Value> = (0..10)
        .map(|i| put_op(&format!("dir/img {}.jpg", i % 4), 10 + i))
        .collect();
    muts.push(
        json!({"op": "tag", "bucket": BUCKET, "key": "dir/img 0.jpg", "tags": {"stage": "raw"}}),
    );
    muts.push(json!({"op": "delete", "bucket": BUCKET, "key": "dir/img 1.jpg"}));
    let acked = ingest(&server, muts);
    let ids = ids_of(&acked);
    let log: HashMap<String, Value> = log_events(&Backend::Embedded, &server.data_dir)
        .into_iter()
        .map(|e| (e["event_id"].as_str().unwrap().to_string(), e))
        .collect();
    for r in receivers.values() {
        r.wait_delivered(&ids, WAIT);
    }

    for req in receivers["ce-binary"].requests() {
        assert!(
            req["headers"]["ce-specversion"] == "1.0",
            "binary mode: {req}"
        );
        check_cloudevents(&req, &log, 1);
    }
    for req in receivers["ce-structured"].requests() {
        let ctype = req["headers"]["content-type"].as_str().unwrap();
        assert!(ctype.starts_with("application/cloudevents+json"), "{ctype}");
        check_cloudevents(&req, &log, 1);
    }
    for req in receivers["s3"].requests() {
        check_s3(&req, &log);
    }
    let mut largest = 0;
    for req in receivers["ce-batch"].requests() {
        let ctype = req["headers"]["content-type"].as_str().unwrap();
        assert!(
            ctype.starts_with("application/cloudevents-batch+json"),
            "{ctype}"
        );
        largest = largest.max(check_cloudevents(&req, &log, 10));
    }
    assert!(largest > 1, "events were batched");
    assert_per_key_order(&receivers["ce-batch"].requests(), &acked);
}

/// One receiver and subscription per payload format, plus a batched CloudEvents one.
fn subscribe_in_every_format(server: &Server, dir: &Path) -> HashMap<&'static str, Receiver> {
    let formats = [
        ("ce-binary", "cloudevents-binary", None),
        ("ce-structured", "cloudevents-structured", None),
        ("s3", "s3", None),
        (
            "ce-batch",
            "cloudevents-structured",
            Some(json!({"max_events": 10, "max_wait_ms": 50})),
        ),
    ];
    let mut receivers = HashMap::new();
    for (name, format, batch) in formats {
        let r = Receiver::start(dir, name, &[]);
        let mut spec = webhook_sub(name, &r.url("/hook"), json!({"format": format}), 3);
        if let Some(batch) = batch {
            spec["batch"] = batch;
        }
        create_subscription(server, &spec);
        receivers.insert(name, r);
    }
    receivers
}

/// The SDK parsed the request without error into up to `max` events matching the log; returns
/// how many.
fn check_cloudevents(req: &Value, log: &HashMap<String, Value>, max: usize) -> usize {
    assert_eq!(req["ce_error"], Value::Null, "{req}");
    assert_eq!(req["status"], 200, "{req}");
    let events = req["cloudevents"]
        .as_array()
        .expect("parsed as CloudEvents");
    assert!((1..=max).contains(&events.len()), "{} events", events.len());
    for ce in events {
        let e = &log[ce["id"].as_str().unwrap()];
        assert_eq!(ce["specversion"], "1.0");
        let event_type = e["event_type"].as_str().unwrap();
        assert_eq!(
            ce["type"],
            format!("io.tidemark.object.{event_type}"),
            "{ce}"
        );
        assert_eq!(ce["subject"], e["key"], "{ce}");
        assert!(
            ce["source"].as_str().unwrap().ends_with("/buckets/photos"),
            "{ce}"
        );
        let seq = e["sequence"].as_i64().unwrap();
        assert_eq!(ce["sequence"], format!("{seq:019}"), "{ce}");
        assert!(ce["time"].is_string(), "{ce}");
    }
    events.len()
}

/// S3's notification structure, with the key form-encoded as S3 sends it.
fn check_s3(req: &Value, log: &HashMap<String, Value>) {
    assert_eq!(req["status"], 200, "{req}");
    let records = req["records"].as_array().expect("S3 Records");
    assert_eq!(records.len(), 1, "{req}");
    let r = &records[0];
    let e = &log[r["tidemark"]["eventId"].as_str().unwrap()];
    assert_eq!(r["eventName"], e["event_type"], "{r}");
    assert_eq!(r["s3"]["bucket"]["name"], BUCKET, "{r}");
    let key = e["key"].as_str().unwrap().replace(' ', "+");
    assert_eq!(r["s3"]["object"]["key"], key, "{r}");
    let seq = e["sequence"].as_i64().unwrap();
    assert_eq!(r["s3"]["object"]["sequencer"], format!("{seq:016X}"), "{r}");
    assert!(r["eventTime"].is_string(), "{r}");
}

#[test]
fn gone_endpoint_disables_the_subscription() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let server = start_server(dir);
    let gone = Receiver::start(dir, "gone", &["--always-status", "410"]);
    let spec = webhook_sub("gone", &gone.url("/hook"), json!({}), 5);
    create_subscription(&server, &spec);
    let first = puts(&server, &["k0"], 1);

    let s = wait_status(&server, "gone", "disabled", WAIT, |s| {
        s["state"] == "disabled"
    });
    assert!(
        s["disabled_reason"].as_str().unwrap().contains("410"),
        "{s}"
    );
    let (_, sub) = server.get("/v1/subscriptions/gone");
    assert_eq!(sub["state"], "disabled", "{sub}");
    assert!(
        sub["disabled_reason"].as_str().unwrap().contains("410"),
        "{sub}"
    );
    assert_eq!(gone.requests().len(), 1, "a 410 is not retried");
    let (status, v) = server.post("/v1/subscriptions/gone/dead-letters/redrive", "");
    assert!(status >= 400, "no redrive while disabled: {status} {v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("disabled"),
        "{v}"
    );
    // Acknowledged while disabled: kept for later, not dropped.
    let second = puts(&server, &["k0"], 1);

    // PUT re-enables, and delivery resumes at the event that got the 410.
    let fixed = Receiver::start(dir, "fixed", &[]);
    let mut replaced = spec.clone();
    replaced["sink"]["url"] = fixed.url("/hook").into();
    let (status, v) = server.put("/v1/subscriptions/gone", &replaced);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"], "active", "{v}");
    let both = [first, second].concat();
    fixed.wait_delivered(&ids_of(&both), WAIT);
    assert_per_key_order(&fixed.requests(), &both);
    let s = wait_no_lag(&server, "gone");
    assert_eq!(s["state"], "running", "{s}");
}

#[test]
fn retry_after_is_honored() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let server = start_server(dir);
    let args = [
        "--fail-first",
        "1",
        "--fail-status",
        "503",
        "--retry-after",
        "1",
    ];
    let r = Receiver::start(dir, "busy", &args);
    // Without Retry-After the retry would come within 200 ms (max_backoff_ms).
    create_subscription(&server, &webhook_sub("busy", &r.url("/hook"), json!({}), 3));
    let acked = puts(&server, &["k0"], 1);

    r.wait_requests(1, WAIT);
    let first = Instant::now();
    r.wait_requests(2, WAIT);
    let second = Instant::now();
    let gap = second - first;
    assert!(
        gap >= Duration::from_millis(900),
        "the retry came {gap:?} after a Retry-After: 1"
    );
    assert!(
        gap < Duration::from_secs(5),
        "the retry came {gap:?} after a Retry-After: 1"
    );

    let reqs = r.requests();
    assert_eq!(reqs[0]["status"], 503);
    assert_eq!(reqs[1]["status"], 200);
    assert_eq!(reqs[0]["webhook_id"], reqs[1]["webhook_id"]);
    assert_eq!(only_event(&reqs[1]).id, acked[0].1);
}
