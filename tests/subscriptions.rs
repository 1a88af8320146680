//! Subscriptions over HTTP against a real webhook receiver: their lifecycle (create, list,
//! status, remove, restart), where they start, delivery surviving SIGKILL, bad specs refused
//! with the field named, and the delivery metrics on `/metrics`.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::receiver::Receiver;
use common::*;
use serde_json::{Value, json};

const ALLOW_LOOPBACK: &[&str] = &["--allow-destinations", "loopback"];

fn webhook(name: &str, receiver: &Receiver) -> Value {
    json!({
        "name": name,
        "sink": {"type": "webhook", "url": receiver.url(&format!("/{name}"))},
        "retry": fast_retry(5),
    })
}

/// Distinct `webhook-id`s the receiver got on path `/name`.
fn ids_at(receiver: &Receiver, name: &str) -> HashSet<String> {
    let path = format!("/{name}");
    receiver
        .requests()
        .iter()
        .filter(|r| r["path"] == path.as_str())
        .filter_map(|r| r["webhook_id"].as_str().map(str::to_string))
        .collect()
}

fn wait_ids(receiver: &Receiver, name: &str, want: &[String]) -> HashSet<String> {
    wait_for(
        &format!("{} events at /{name}", want.len()),
        Duration::from_secs(20),
        || missing_from(ids_at(receiver, name), want),
    )
}

/// `Ok(got)` when `got` holds every one of `want`, else which are missing.
fn missing_from(got: HashSet<String>, want: &[String]) -> Result<HashSet<String>, String> {
    let missing: Vec<&String> = want.iter().filter(|id| !got.contains(*id)).collect();
    if missing.is_empty() {
        Ok(got)
    } else {
        Err(format!("{} missing: {missing:?}", missing.len()))
    }
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn names(server: &Server) -> Vec<String> {
    let (status, v) = server.get("/v1/subscriptions");
    assert_eq!(status, 200, "{v}");
    let mut n: Vec<String> = v["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

#[test]
fn crud_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let receiver = Receiver::start(dir.path(), "hooks", &[]);
    let server = Server::start(&data, ALLOW_LOOPBACK);

    // Written before any subscription exists.
    let before = put_keys(&server, "history", &keys("old", 3));

    let created = create_subscription(&server, &webhook("alpha", &receiver));
    assert_eq!(created["name"], "alpha", "{created}");
    assert_eq!(created["start"], "latest", "{created}");
    assert_eq!(created["state"], "active", "{created}");
    let mut from_start = webhook("from-start", &receiver);
    from_start["start"] = "earliest".into();
    create_subscription(&server, &from_start);

    // A duplicate name is a conflict and changes nothing.
    let mut dup = webhook("alpha", &receiver);
    dup["sink"]["url"] = receiver.url("/elsewhere").into();
    let (status, resp) = server.post("/v1/subscriptions", dup.to_string());
    assert_eq!(status, 409, "{resp}");
    assert!(
        resp["error"]["message"].as_str().unwrap().contains("alpha"),
        "{resp}"
    );
    let (status, got) = server.get("/v1/subscriptions/alpha");
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["sink"]["url"], receiver.url("/alpha"), "{got}");
    assert_eq!(names(&server), ["alpha", "from-start"]);
    // A page at a time, by name, with each one's status inline when asked.
    let (status, page) = server.get("/v1/subscriptions?limit=1&status=true");
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["subscriptions"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["subscriptions"][0]["name"], "alpha", "{page}");
    assert_eq!(
        page["subscriptions"][0]["status"]["name"], "alpha",
        "{page}"
    );
    assert!(
        page["subscriptions"][0]["status"]["partitions"].is_array(),
        "{page}"
    );
    assert_eq!(page["next_after"], "alpha", "{page}");
    let (_, page) = server.get("/v1/subscriptions?limit=1&after=alpha");
    assert_eq!(page["subscriptions"][0]["name"], "from-start", "{page}");
    assert!(page["subscriptions"][0].get("status").is_none(), "{page}");
    assert_eq!(page["next_after"], Value::Null, "{page}");
    for bad in ["limit=0", "limit=1001", "limit=x", "bogus=1"] {
        let (status, v) = server.get(&format!("/v1/subscriptions?{bad}"));
        assert_eq!(status, 400, "{bad}: {v}");
    }

    let after = put_keys(&server, "history", &keys("new", 4));
    wait_ids(&receiver, "alpha", &after);
    let all: Vec<String> = before.iter().chain(&after).cloned().collect();
    wait_ids(&receiver, "from-start", &all);
    // `latest` (the default) started after the earlier events.
    let alpha_got = ids_at(&receiver, "alpha");
    assert!(
        before.iter().all(|id| !alpha_got.contains(id)),
        "a `latest` subscription got events written before it existed"
    );

    let status = wait_status(&server, "alpha", "settled", Duration::from_secs(10), |s| {
        s["delivered"] == after.len() && s["lag"] == 0
    });
    for field in [
        "position",
        "lag",
        "delivered",
        "failed_attempts",
        "dead_letters",
    ] {
        assert!(status[field].is_u64(), "status.{field}: {status}");
    }
    assert_eq!(status["name"], "alpha", "{status}");
    assert_eq!(status["failed_attempts"], 0, "{status}");
    assert_eq!(status["dead_letters"], 0, "{status}");
    assert_eq!(status["circuit"], "closed", "{status}");
    assert!(status["last_error"].is_null(), "{status}");
    assert_eq!(
        status["position"],
        (before.len() + after.len()) as u64,
        "position is past every event in the log: {status}"
    );

    // Survives a restart and keeps delivering from where it was.
    server.stop();
    let server = Server::start(&data, ALLOW_LOOPBACK);
    assert_eq!(names(&server), ["alpha", "from-start"]);
    let (_, got) = server.get("/v1/subscriptions/alpha");
    assert_eq!(got["sink"]["url"], receiver.url("/alpha"), "{got}");
    let later = put_keys(&server, "history", &keys("later", 2));
    wait_ids(&receiver, "alpha", &later);
    wait_ids(&receiver, "from-start", &later);

    // A timestamp start: only events after the instant.
    let instant = tidemark_core::time::format_us(tidemark_core::time::now_us());
    let since = put_keys(&server, "history", &keys("since", 3));
    let mut timed = webhook("timed", &receiver);
    timed["start"] = instant.clone().into();
    let resp = create_subscription(&server, &timed);
    assert_eq!(resp["start"], instant.as_str(), "{resp}");
    wait_ids(&receiver, "timed", &since);
    let last = put_keys(&server, "history", &keys("last", 1));
    let timed_got = wait_ids(&receiver, "timed", &last);
    let earlier: Vec<&String> = before.iter().chain(&after).chain(&later).collect();
    assert!(
        earlier.iter().all(|id| !timed_got.contains(*id)),
        "a subscription starting at {instant} got earlier events"
    );

    // Delete: 204, then gone everywhere.
    let (status, _) = server.delete("/v1/subscriptions/alpha");
    assert_eq!(status, 204);
    let (status, resp) = server.get("/v1/subscriptions/alpha");
    assert_eq!(status, 404, "{resp}");
    let (status, resp) = server.get("/v1/subscriptions/alpha/status");
    assert_eq!(status, 404, "{resp}");
    let (status, _) = server.delete("/v1/subscriptions/alpha");
    assert_eq!(status, 404);
    assert_eq!(names(&server), ["from-start", "timed"]);
    // A deleted subscription delivers nothing more, also after a restart.
    server.stop();
    let server = Server::start(&data, ALLOW_LOOPBACK);
    assert_eq!(names(&server), ["from-start", "timed"]);
    let final_ids = put_keys(&server, "history", &keys("final", 2));
    wait_ids(&receiver, "from-start", &final_ids);
    let alpha_now = ids_at(&receiver, "alpha");
    assert!(
        final_ids.iter().all(|id| !alpha_now.contains(id)),
        "a deleted subscription still delivers"
    );
    server.stop();
}

#[test]
fn sigkill_during_delivery_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let receiver = Receiver::start(dir.path(), "hooks", &["--delay-ms", "5"]);
    let mut acked: Vec<String> = Vec::new();
    let mut killed_mid_delivery = 0;
    for round in 0..3 {
        let server = Server::start(&data, ALLOW_LOOPBACK);
        if round == 0 {
            let mut spec = webhook("survivor", &receiver);
            // Few in flight, so delivery takes long enough to be interrupted.
            spec["delivery"] = json!({"max_in_flight": 2});
            create_subscription(&server, &spec);
        }
        let seen_before = ids_at(&receiver, "survivor").len();
        for chunk in 0..6 {
            let batch: Vec<String> = (0..50)
                .map(|i| format!("r{round}/key-{}", (chunk * 50 + i) % 40))
                .collect();
            acked.extend(put_keys(&server, "survive", &batch));
        }
        // Kill once the receiver got some, but not all, of this round's events.
        let threshold = seen_before + 40;
        wait_for("some deliveries", Duration::from_secs(20), || {
            let got = ids_at(&receiver, "survivor").len();
            if got >= threshold {
                Ok(())
            } else {
                Err(format!("{got} of {threshold} delivered"))
            }
        });
        server.kill();
        let got = ids_at(&receiver, "survivor");
        let missing = acked.iter().filter(|id| !got.contains(*id)).count();
        println!(
            "round {round}: killed with {} of {} acknowledged events delivered",
            acked.len() - missing,
            acked.len()
        );
        if missing > 0 {
            killed_mid_delivery += 1;
        }
    }
    assert!(
        killed_mid_delivery > 0,
        "every kill came after delivery had finished; the test proves nothing"
    );
    let server = Server::start(&data, ALLOW_LOOPBACK);
    let got = wait_for(
        "every acknowledged event at the receiver",
        Duration::from_secs(25),
        || missing_from(ids_at(&receiver, "survivor"), &acked),
    );
    println!(
        "after restart: {} requests for {} events",
        receiver.webhook_ids().len(),
        acked.len()
    );
    let acked_set: HashSet<&String> = acked.iter().collect();
    assert_eq!(acked_set.len(), acked.len());
    assert!(
        got.iter().all(|id| acked_set.contains(id)),
        "the receiver got an event nobody wrote"
    );
    let status = wait_status(
        &server,
        "survivor",
        "no lag",
        Duration::from_secs(10),
        |s| s["lag"] == 0,
    );
    assert_eq!(status["dead_letters"], 0, "{status}");
    server.stop();
}

/// A spec that is valid against `receiver` (for mutating into bad ones).
fn valid(receiver: &Receiver) -> Value {
    json!({
        "name": "candidate",
        "rules": {"events": ["ObjectCreated:*"], "prefix": ["photos/"]},
        "sink": {"type": "webhook", "url": receiver.url("/hook"),
                 "format": "cloudevents-binary",
                 "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
        "retry": fast_retry(5),
    })
}

fn refused(server: &Server, body: &str, field: &str, needle: &str) {
    let (status, resp) = server.post("/v1/subscriptions", body.to_string());
    assert!((400..500).contains(&status), "{body}\n-> {status} {resp}");
    assert_eq!(resp["error"]["field"], field, "{body}\n-> {resp}");
    let message = resp["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.to_lowercase().contains(&needle.to_lowercase()),
        "{body}\n-> the message should mention '{needle}': {resp}"
    );
}

#[test]
fn bad_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), "hooks", &[]);
    let server = Server::start(&dir.path().join("data"), ALLOW_LOOPBACK);
    // The valid spec is accepted (then removed): every case below differs in one thing.
    create_subscription(&server, &valid(&receiver));
    assert_eq!(server.delete("/v1/subscriptions/candidate").0, 204);
    let existing = create_subscription(&server, &webhook("existing", &receiver));
    let (_, existing_before) = server.get("/v1/subscriptions/existing");

    let with = |change: &dyn Fn(&mut Value)| {
        let mut v = valid(&receiver);
        change(&mut v);
        v.to_string()
    };
    let too_many: Vec<String> = (0..300).map(|i| format!("p{i}/")).collect();
    let cases: Vec<(String, &str, &str)> = vec![
        (
            with(&|v| v["rules"]["regex"] = "(unclosed".into()),
            "rules.regex",
            "regular expression",
        ),
        (
            with(&|v| v["rules"]["events"] = json!(["ObjectCreated:*", "ObjectMoved:Put"])),
            "rules.events[1]",
            "unknown event type",
        ),
        (
            with(&|v| v["rules"]["events"] = json!(["ObjectMoved:*"])),
            "rules.events[0]",
            "ObjectMoved:*",
        ),
        (
            with(&|v| v["rules"]["prefix"] = json!(too_many)),
            "rules.prefix",
            "too complex",
        ),
        (
            with(&|v| v["sink"]["url"] = "not a url".into()),
            "sink.url",
            "not a url",
        ),
        (
            with(&|v| v["sink"]["url"] = "ftp://127.0.0.1/x".into()),
            "sink.url",
            "http",
        ),
        (
            with(&|v| v["sink"]["type"] = "pubsub".into()),
            "sink.type",
            "webhook",
        ),
        (
            with(&|v| v["sink"]["url"] = "http://169.254.169.254/latest".into()),
            "sink.url",
            "--allow-destinations private",
        ),
        (
            with(&|v| v["retry"]["max_atempts"] = 3.into()),
            "retry.max_atempts",
            "unknown field",
        ),
        (
            with(&|v| v["sink"]["secret"] = "nope".into()),
            "sink.secret",
            "whsec_",
        ),
        (
            with(&|v| v["sink"]["secret"] = "env:TIDEMARK_TEST_NO_SUCH_SECRET".into()),
            "sink.secret",
            "TIDEMARK_TEST_NO_SUCH_SECRET",
        ),
        (with(&|v| v["retyr"] = json!({})), "retyr", "unknown field"),
        (
            with(&|v| {
                v["sink"] = json!({"type": "function", "mode": "process", "timeout_ms": 1000})
            }),
            "sink.function",
            "declared",
        ),
        (
            with(&|v| v["start"] = "yesterday".into()),
            "start",
            "latest, earliest",
        ),
        (
            with(&|v| v["name"] = "has space".into()),
            "name",
            "has space",
        ),
        (
            with(&|v| {
                v.as_object_mut().unwrap().remove("sink");
            }),
            "body",
            "sink",
        ),
        ("{\"name\": \"x\", ".to_string(), "body", "malformed JSON"),
        (with(&|v| v["name"] = "existing".into()), "name", "exists"),
    ];
    for (body, field, needle) in &cases {
        if *field == "name" && *needle == "exists" {
            // A duplicate is a conflict (409) with a message naming the subscription.
            let (status, resp) = server.post("/v1/subscriptions", body.clone());
            assert_eq!(status, 409, "{resp}");
            assert!(resp.to_string().contains("existing"), "{resp}");
            continue;
        }
        refused(&server, body, field, needle);
    }

    // A server that was not told to allow loopback refuses such a destination, saying how.
    let strict = Server::start(&dir.path().join("strict"), &[]);
    refused(
        &strict,
        &valid(&receiver).to_string(),
        "sink.url",
        "--allow-destinations loopback",
    );
    let mut function = valid(&receiver);
    function["sink"] = json!({"type": "function", "mode": "http", "url": receiver.url("/fn")});
    refused(
        &strict,
        &function.to_string(),
        "sink.url",
        "--allow-destinations",
    );
    assert!(names(&strict).is_empty());
    strict.stop();

    // Nothing stored, the existing subscription unchanged.
    assert_eq!(names(&server), ["existing"]);
    let (_, existing_after) = server.get("/v1/subscriptions/existing");
    assert_eq!(existing_before, existing_after);
    assert_eq!(existing["updated_at"], existing_after["updated_at"]);
    // And it still delivers.
    let ids = put_keys(&server, "intact", &keys("k", 2));
    wait_ids(&receiver, "existing", &ids);
    server.stop();
}

/// Mistakes inside `sink` are named down to the field, as they are everywhere else
/// (`retry.max_atempts`, `rules.any[0].prefixes`): the user must not have to guess which of the
/// sink's fields `unknown variant` or `expected u64` is about.
#[test]
fn bad_sink_fields_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), "hooks", &[]);
    let server = Server::start(&dir.path().join("data"), ALLOW_LOOPBACK);
    let with = |change: &dyn Fn(&mut Value)| {
        let mut v = valid(&receiver);
        change(&mut v);
        v.to_string()
    };
    let cases = [
        (with(&|v| v["sink"]["format"] = "xml".into()), "sink.format"),
        (
            with(&|v| v["sink"]["timeout_ms"] = "fast".into()),
            "sink.timeout_ms",
        ),
        (with(&|v| v["sink"]["urll"] = "x".into()), "sink.urll"),
    ];
    let mut wrong = Vec::new();
    for (body, field) in &cases {
        let (status, resp) = server.post("/v1/subscriptions", body.clone());
        if status != 400 || resp["error"]["field"] != *field {
            wrong.push(format!("expected 400 naming {field}, got {status} {resp}"));
        }
    }
    assert!(names(&server).is_empty());
    server.stop();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The value of the sample `name{labels}` in Prometheus text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_exposes_delivery_counters() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), "hooks", &[]);
    let server = Server::start(&dir.path().join("data"), ALLOW_LOOPBACK);
    create_subscription(&server, &webhook("x", &receiver));
    // One more, to an endpoint that refuses everything: its events end as dead letters.
    let refusing = Receiver::start(dir.path(), "refusing", &["--always-status", "500"]);
    let mut dead = webhook("y", &refusing);
    dead["retry"] = json!({"max_attempts": 2, "initial_backoff_ms": 10, "max_backoff_ms": 20});
    // Ten failures in a row: keep the breaker (30 s open by default) out of this test.
    dead["circuit"] = json!({"failure_threshold": 1000, "open_ms": 10});
    create_subscription(&server, &dead);

    let ids = put_keys(&server, "metered", &keys("m", 5));
    wait_ids(&receiver, "x", &ids);
    let text = wait_for("the counters on /metrics", Duration::from_secs(15), || {
        let (status, text) = server.get_text("/metrics");
        assert_eq!(status, 200);
        let x = sample(
            &text,
            r#"tidemark_deliveries_total{subscription="x",outcome="delivered"}"#,
        );
        let y = sample(&text, r#"tidemark_dead_letters{subscription="y"}"#);
        // The position is committed every 100 ms, so lag reaches 0 a little after delivery.
        let lag = sample(
            &text,
            r#"tidemark_subscription_lag_events{subscription="x"}"#,
        );
        if x == Some(5.0) && y == Some(5.0) && lag == Some(0.0) {
            Ok(text)
        } else {
            Err(format!(
                "x delivered {x:?}, y dead letters {y:?}, x lag {lag:?}"
            ))
        }
    });
    let has = |series: &str| {
        sample(&text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
    };
    assert_eq!(
        has(r#"tidemark_deliveries_total{subscription="y",outcome="dead_lettered"}"#),
        5.0
    );
    assert_eq!(
        has(r#"tidemark_deliveries_total{subscription="x",outcome="dead_lettered"}"#),
        0.0
    );
    assert_eq!(has(r#"tidemark_dead_letters{subscription="x"}"#), 0.0);
    assert_eq!(
        has(r#"tidemark_delivery_attempts_total{subscription="x",result="success"}"#),
        5.0
    );
    assert_eq!(
        has(r#"tidemark_delivery_attempts_total{subscription="y",result="failure"}"#),
        10.0
    );
    // The latency histogram: cumulative buckets ending in +Inf = count = attempts.
    assert_eq!(
        has(r#"tidemark_delivery_attempt_seconds_bucket{subscription="x",le="+Inf"}"#),
        5.0
    );
    assert_eq!(
        has(r#"tidemark_delivery_attempt_seconds_count{subscription="x"}"#),
        5.0
    );
    assert!(has(r#"tidemark_delivery_attempt_seconds_sum{subscription="x"}"#) > 0.0);
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(r#"tidemark_delivery_attempt_seconds_bucket{subscription="x""#))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(buckets.len() > 5, "{text}");
    assert!(
        buckets.windows(2).all(|w| w[0] <= w[1]),
        "cumulative: {text}"
    );
    assert!(text.contains("# TYPE tidemark_delivery_attempt_seconds histogram"));
    assert_eq!(
        has(r#"tidemark_subscription_lag_events{subscription="x"}"#),
        0.0
    );
    assert_eq!(
        has(r#"tidemark_circuit_state{subscription="x",state="closed"}"#),
        1.0
    );
    assert_eq!(
        has(r#"tidemark_circuit_state{subscription="x",state="open"}"#),
        0.0
    );
    for kind in [
        "# TYPE tidemark_deliveries_total counter",
        "# TYPE tidemark_subscription_lag_events gauge",
        "# TYPE tidemark_dead_letters gauge",
        "# TYPE tidemark_circuit_state gauge",
    ] {
        assert!(text.contains(kind), "{kind} missing:\n{text}");
    }
    server.stop();
}
