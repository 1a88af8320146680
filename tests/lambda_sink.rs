//! The `lambda` sink against a loopback stand-in of Lambda's Invoke API that checks each
//! request's Signature Version 4 with botocore: S3-format payloads reach the function, a
//! function error is retried until it succeeds, `Event` invocations are handed over, the
//! service down at the start and killed mid-stream is waited for, Tidemark killed with
//! SIGKILL loses nothing, a replay invokes its range again, and a missing function or wrong
//! credentials show in status while other subscriptions flow; bad settings are refused by
//! name.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::queues::*;
use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

fn lambda_sink(endpoint: &str, function: &str, kind: &str, secret: &str) -> Value {
    json!({"type": "lambda", "function": function, "invocation_type": kind,
           "endpoint": endpoint,
           "credentials": {"access_key_id": ACCESS_KEY, "secret_access_key": secret}})
}

/// Event ids each function got in verified, successful invocations.
fn delivered(receiver: &LambdaReceiver, function: &str) -> Vec<String> {
    receiver
        .invocations()
        .iter()
        .filter(|i| i["function"] == function && i["verified"] == true)
        .filter(|i| i["function_error"] == false && i["status"].as_u64() < Some(300))
        .flat_map(|i| {
            i["payload"]["Records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["tidemark"]["eventId"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn functions_get_signed_s3_records_and_failures_are_retried_or_shown() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--allow-destinations", "loopback"],
    );
    // The service is down when the subscriptions start.
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let arn = "arn:aws:lambda:eu-west-1:123456789012:function:thumbs";
    let subs = [
        ("sync", arn, "RequestResponse", SECRET_KEY),
        ("flaky", "flaky:live", "RequestResponse", SECRET_KEY),
        ("async", "indexer", "Event", SECRET_KEY),
        ("missing", "missing", "RequestResponse", SECRET_KEY),
        ("badkey", "thumbs", "RequestResponse", "not-the-secret"),
    ];
    for (name, function, kind, secret) in subs {
        create_subscription(
            &server,
            &queue_sub(name, lambda_sink(&endpoint, function, kind, secret), 5),
        );
    }
    let acked: Vec<String> = ingest(
        &server,
        (0..60)
            .map(|i| json!({"op": "put", "bucket": "media", "key": format!("k{}", i % 12), "size": i}))
            .collect(),
    )
    .into_iter()
    .map(|(_, id)| id)
    .collect();
    wait_status(&server, "sync", "an error", WAIT, |s| {
        !s["last_error"].is_null()
    });
    let receiver = LambdaReceiver::start_on(dir.path(), port, 3);

    let want: HashSet<String> = acked.iter().cloned().collect();
    for (name, function) in [("sync", arn), ("flaky", "flaky:live"), ("async", "indexer")] {
        wait_status(&server, name, "delivered", WAIT, |s| {
            s["delivered"] == acked.len() && s["lag"] == 0
        });
        let got = delivered(&receiver, function);
        assert_eq!(
            got.iter().cloned().collect::<HashSet<_>>(),
            want,
            "{name}: every event"
        );
        assert_eq!(got.len(), acked.len(), "{name}: once each");
    }
    let invocations = receiver.invocations();
    assert!(
        invocations
            .iter()
            .any(|i| i["function"] == "flaky:live" && i["function_error"] == true),
        "the flaky function failed first"
    );
    assert!(
        invocations
            .iter()
            .filter(|i| i["function"] == "indexer")
            .all(|i| i["invocation_type"] == "Event" && i["status"] == 202)
    );
    // The region of an ARN is the one signed for; a name signs for the default region.
    for i in &invocations {
        let want = if i["function"] == arn {
            "eu-west-1"
        } else {
            "us-east-1"
        };
        if i["verified"] == true {
            assert_eq!(i["region"], want, "{i}");
        }
    }
    let sync = subscription_status(&server, "sync");
    assert_eq!(sync["dead_letters"], 0, "{sync}");

    for (name, needle) in [
        ("missing", "ResourceNotFoundException"),
        ("badkey", "InvalidSignatureException"),
    ] {
        let s = wait_status(&server, name, needle, WAIT, |s| {
            s["last_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(needle))
        });
        assert_eq!(s["delivered"], 0, "{s}");
    }
}

#[test]
fn bad_lambda_settings_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let base = json!({"type": "lambda", "function": "thumbs"});
    let with = |k: &str, v: Value| {
        let mut s = base.clone();
        s[k] = v;
        s
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            with("function", json!("a b")),
            "sink.function",
            "not a function name",
        ),
        (
            with("function", json!("arn:aws:s3:::bucket")),
            "sink.function",
            "not a function name",
        ),
        (
            with("invocation_type", json!("DryRun")),
            "sink.invocation_type",
            "'DryRun'",
        ),
        (with("format", json!("avro")), "sink.format", "'avro'"),
        (
            with("endpoint", json!("ftp://h")),
            "sink.endpoint",
            "http(s)://",
        ),
        (
            with("endpoint", json!("http://169.254.169.254")),
            "sink.endpoint",
            "link-local",
        ),
    ];
    assert_sinks_refused(&server, cases);
}

/// (event id, bucket/key, sequence, replay job) of every record of the successful
/// invocations of `function`, in arrival order.
fn records(
    receiver: &LambdaReceiver,
    function: &str,
) -> Vec<(String, String, i64, Option<String>)> {
    let mut invocations = receiver.invocations();
    invocations.sort_by_key(|i| i["n"].as_u64());
    invocations
        .iter()
        .filter(|i| i["function"] == function && i["verified"] == true)
        .filter(|i| i["function_error"] == false && i["status"].as_u64() < Some(300))
        .flat_map(|i| i["payload"]["Records"].as_array().unwrap().clone())
        .map(|r| {
            let t = &r["tidemark"];
            (
                t["eventId"].as_str().unwrap().to_string(),
                format!(
                    "{}/{}",
                    r["s3"]["bucket"]["name"].as_str().unwrap(),
                    r["s3"]["object"]["key"].as_str().unwrap()
                ),
                t["sequence"].as_i64().unwrap(),
                t["replay"].as_str().map(str::to_string),
            )
        })
        .collect()
}

#[test]
fn the_service_and_tidemark_killed_lose_nothing_and_a_replay_invokes_its_range_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--allow-destinations", "loopback"];
    let receiver = LambdaReceiver::start_on(dir.path(), 0, 0);
    let mut server = Server::start(&data, &args);
    let sink = lambda_sink(
        &receiver.endpoint(),
        "thumbs",
        "RequestResponse",
        SECRET_KEY,
    );
    create_subscription(&server, &queue_sub("fn", sink, 5));
    let load = Load::start(&server.url, "photos", 41);
    std::thread::sleep(Duration::from_millis(900));
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

    let live = wait_for("every acknowledged event invoked", WAIT, || {
        let r = records(&receiver, "thumbs");
        let ids: HashSet<&str> = r.iter().map(|r| r.0.as_str()).collect();
        let missing = acked.iter().filter(|a| !ids.contains(a.as_str())).count();
        if missing == 0 {
            Ok(r)
        } else {
            Err(format!("{missing} missing"))
        }
    });
    let seen: Vec<(String, String, i64)> = live
        .into_iter()
        .filter(|r| r.3.is_none())
        .map(|r| (r.0, r.1, r.2))
        .collect();
    assert_at_least_once_in_key_order(&seen, &acked, true);

    let job = replay(&server, "fn", &t1, &t2);
    let replayed = wait_for("the replayed range invoked", WAIT, || {
        let r: Vec<String> = records(&receiver, "thumbs")
            .into_iter()
            .filter(|r| r.3.as_deref() == Some(job.as_str()))
            .map(|r| r.0)
            .collect();
        if r.len() >= range.len() {
            Ok(r)
        } else {
            Err(format!("{} replayed", r.len()))
        }
    });
    let mut ids = replayed;
    let mut want = range.clone();
    ids.sort();
    want.sort();
    assert_eq!(ids, want, "the range, once each");
}
