//! WASM filters through the real interfaces: upload over HTTP and the CLI with every kind of
//! bad module refused by name (and nothing stored lost), versions listed, tests on sample
//! events and on the log, filters attached to subscriptions (rules first, then the module)
//! with their failure policies and quarantine, hot swaps under load, delete refused while in
//! use, and compiled artifacts reused after a restart.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::receiver::{Receiver, assert_per_key_order, only_event};
use common::*;
use serde_json::{Value, json};

const ALLOW_LOOPBACK: &[&str] = &["--allow-destinations", "loopback"];
const RAW_CAMERA_LARGE: &str = include_str!("../plugins/examples/raw_camera_large.wat");

/// A module with the ABI's exports around `body` (the `filter` function's body).
fn module(extra: &str, body: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
             {extra}
             (memory (export "memory") 1)
             (func (export "tidemark_abi_version") (result i32) i32.const 1)
             (func (export "filter") (result i32) {body}))"#
    ))
    .unwrap()
}

fn keep_all(marker: i32) -> Vec<u8> {
    // `marker` makes modules with the same behaviour differ in their bytes.
    module(&format!("(global i32 (i32.const {marker}))"), "i32.const 1")
}

fn upload(server: &Server, name: &str, query: &str, bytes: Vec<u8>) -> (u16, Value) {
    let resp = client()
        .post(format!("{}/v1/filters/{name}{query}", server.url))
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

/// Upload, which must create a new version.
fn uploaded(server: &Server, name: &str, bytes: Vec<u8>) {
    let (status, v) = upload(server, name, "", bytes);
    assert_eq!(status, 201, "upload {name}: {v}");
}

fn refused(server: &Server, name: &str, query: &str, bytes: Vec<u8>, needle: &str) {
    let (status, v) = upload(server, name, query, bytes);
    assert_eq!(status, 400, "{needle}: {v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "want '{needle}' in: {v}");
}

fn sample(key: &str, size: i64, camera: bool) -> Value {
    let mut e = json!({
        "event_type": "ObjectCreated:Put", "bucket": "photos", "key": key, "size": size,
    });
    if camera {
        e["metadata"] = json!({"camera": "x100"});
    }
    e
}

fn put(bucket: &str, key: &str, size: u64, camera: bool) -> Value {
    let mut m = json!({"op": "put", "bucket": bucket, "key": key, "size": size});
    if camera {
        m["metadata"] = json!({"camera": "x100"});
    }
    m
}

fn webhook(name: &str, receiver: &Receiver, filter: Option<&str>) -> Value {
    let mut spec = json!({
        "name": name,
        "sink": {"type": "webhook", "url": receiver.url(&format!("/{name}"))},
        "retry": fast_retry(3),
    });
    if let Some(f) = filter {
        spec["filter"] = f.into();
    }
    spec
}

/// Event ids delivered (answered 200) at `/name`.
fn delivered_at(receiver: &Receiver, name: &str) -> HashSet<String> {
    let path = format!("/{name}");
    receiver
        .requests()
        .iter()
        .filter(|r| r["path"] == path.as_str() && r["status"] == 200)
        .map(|r| only_event(r).id)
        .collect()
}

fn metric(server: &Server, line_prefix: &str) -> f64 {
    let (_, text) = server.get_text("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_prefix} in:\n{text}"))
}

#[test]
fn a_wat_body_is_assembled_like_the_cli_does_and_bad_text_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let text = format!(";; a comment first\n(; and a block one ;)\n{RAW_CAMERA_LARGE}");
    let (status, v) = upload(&server, "camera", "", text.into_bytes());
    assert_eq!(status, 201, "{v}");
    // The same module as its binary form: the same version, not a new one.
    let (status, v) = upload(
        &server,
        "camera",
        "",
        wat::parse_str(RAW_CAMERA_LARGE).unwrap(),
    );
    assert_eq!((status, v["version"].clone()), (200, json!(1)), "{v}");
    refused(
        &server,
        "camera",
        "",
        b"(module (func (export \"filter\") (result i32) i32.const))".to_vec(),
        "WebAssembly text (.wat) that does not assemble",
    );
    let (_, v) = server.get("/v1/filters/camera");
    assert_eq!(v["versions"].as_array().map(Vec::len), Some(1), "{v}");
    server.stop();
}

#[test]
fn uploads_are_checked_versioned_listed_and_bad_modules_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let good = wat::parse_str(RAW_CAMERA_LARGE).unwrap();

    let (status, v) = upload(&server, "camera", "", good.clone());
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["version"], 1);
    assert_eq!(v["reference"], "camera@1");
    assert_eq!(v["abi_version"], 1);
    assert_eq!(v["size"], good.len());
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(v["limits"]["memory_bytes"], 16 << 20);
    assert_eq!(v["limits"]["timeout_ms"], 10);
    assert!(
        v["uploaded_by"]
            .as_str()
            .unwrap()
            .starts_with("anonymous@127.0.0.1")
    );
    // The same bytes and limits again: the existing version, nothing new stored.
    let (status, v) = upload(&server, "camera", "", good.clone());
    assert_eq!(
        (status, v["version"].clone(), v["created"].clone()),
        (200, json!(1), json!(false))
    );
    // Other limits make a new version.
    let (status, v) = upload(&server, "camera", "?fuel=5000&timeout_ms=5", good.clone());
    assert_eq!((status, v["version"].clone()), (201, json!(2)), "{v}");
    assert_eq!(v["limits"]["fuel"], 5000);

    // Everything wrong with a module is refused with what is wrong.
    refused(
        &server,
        "camera",
        "",
        b"hello".to_vec(),
        "not a WebAssembly binary",
    );
    refused(
        &server,
        "camera",
        "",
        b"\0asm\x01\0\0\0\x05junk".to_vec(),
        "not a valid WebAssembly module",
    );
    refused(
        &server,
        "camera",
        "",
        module(
            r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#,
            "i32.const 1",
        ),
        "WASI is not available",
    );
    refused(
        &server,
        "camera",
        "",
        module(r#"(import "tidemark" "open_socket" (func))"#, "i32.const 1"),
        "tidemark::open_socket",
    );
    refused(
        &server,
        "camera",
        "",
        wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "tidemark_abi_version") (result i32) i32.const 1))"#).unwrap(),
        "does not export `filter`",
    );
    refused(
        &server,
        "camera",
        "",
        wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "tidemark_abi_version") (result i32) i32.const 3) (func (export "filter") (result i32) i32.const 1))"#).unwrap(),
        "this host supports [1, 2]",
    );
    let mut huge = good.clone();
    huge.resize(11 << 20, 0);
    refused(&server, "camera", "", huge, "the limit is 10485760 bytes");
    refused(
        &server,
        "camera",
        "?memory_bytes=1000000000000",
        good.clone(),
        "exceed the server's maxima",
    );
    refused(
        &server,
        "bad name!",
        "",
        good.clone(),
        "not a valid filter name",
    );
    refused(&server, "camera", "", Vec::new(), "the body is empty");
    let (status, v) = upload(&server, "camera", "?fule=1", good.clone());
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("fule"),
        "{v}"
    );

    // None of that touched what is stored.
    let (status, v) = server.get("/v1/filters/camera");
    assert_eq!(status, 200, "{v}");
    let versions: Vec<i64> = v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(v["latest"], 2);
    let (status, v) = server.get("/v1/filters");
    assert_eq!(status, 200);
    assert_eq!(v["filters"][0]["name"], "camera");
    assert_eq!(v["filters"][0]["versions"], json!([1, 2]));
    let (status, v) = server.get("/v1/filters/nothing");
    assert_eq!(status, 404, "{v}");

    // Deleting a version keeps its number from being given out again.
    let (status, v) = server.delete("/v1/filters/camera@2");
    assert_eq!(status, 200, "{v}");
    let (_, v) = upload(&server, "camera", "?fuel=6000", good.clone());
    assert_eq!(v["version"], 3, "{v}");
    let (_, v) = server.get("/v1/filters/camera");
    assert_eq!(v["versions"][1]["state"], "deleted");
    assert_eq!(v["latest"], 3);
}

#[test]
fn filter_tests_report_each_verdict_on_samples_and_on_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let (status, _) = upload(
        &server,
        "camera",
        "",
        wat::parse_str(RAW_CAMERA_LARGE).unwrap(),
    );
    assert_eq!(status, 201);

    let events = json!([
        sample("raw/a.jpg", 20 << 20, true),
        sample("raw/b.jpg", 1 << 20, true),
        sample("cooked/c.jpg", 20 << 20, true),
        sample("raw/d.jpg", 20 << 20, false),
    ]);
    let (status, v) = server.post(
        "/v1/filters/camera/test",
        json!({"events": events}).to_string(),
    );
    assert_eq!(status, 200, "{v}");
    let verdicts: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["keep", "drop", "drop", "drop"]);
    assert_eq!(
        (v["kept"].clone(), v["evaluated"].clone()),
        (json!(1), json!(4))
    );
    assert_eq!(v["match_rate"], 0.25);
    assert!(v["results"][0]["fuel"].as_u64().unwrap() > 0, "{v}");
    assert!(v["results"][0]["time_us"].is_number(), "{v}");

    // A module that logs and fails on some events: per event, the error and the log lines.
    let (status, _) = upload(
        &server,
        "picky",
        "",
        module(
            r#"(import "tidemark" "log" (func $log (param i32 i32)))
               (import "tidemark" "size" (func $size (result i64)))
               (data (i32.const 0) "looking")"#,
            r#"(call $log (i32.const 0) (i32.const 7))
               (if (i64.gt_s (call $size) (i64.const 100)) (then unreachable))
               i32.const 0"#,
        ),
    );
    assert_eq!(status, 201);
    let (status, v) = server.post(
        "/v1/filters/picky@1/test",
        json!({"events": [sample("a", 10, false), sample("b", 1000, false)]}).to_string(),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"][0]["verdict"], "drop");
    assert_eq!(v["results"][0]["logs"], json!(["looking"]));
    assert_eq!(v["results"][1]["verdict"], "error");
    assert_eq!(v["results"][1]["error_kind"], "trap");
    assert_eq!(v["errors_by_kind"], json!({"trap": 1}));

    // Bad test requests are named.
    for (body, field) in [
        (json!({}), "events"),
        (json!({"events": [{"bucket": "b"}]}), "events[0].event_type"),
        (json!({"since": "yesterday"}), "since"),
        (
            json!({"since": "2026-01-01T00:00:00Z", "limit": 0}),
            "limit",
        ),
        (json!({"events": [], "bogus": 1}), "bogus"),
        (json!({"last": 0}), "last"),
        (
            json!({"last": 5, "since": "2026-01-01T00:00:00Z"}),
            "events",
        ),
    ] {
        let (status, v) = server.post("/v1/filters/camera/test", body.to_string());
        assert_eq!(status, 400, "{body}: {v}");
        let said = format!("{} {}", v["error"]["field"], v["error"]["message"]);
        assert!(said.contains(field), "want {field} named: {v}");
    }
    let (status, _) = server.post(
        "/v1/filters/camera@9/test",
        json!({"events": []}).to_string(),
    );
    assert_eq!(status, 404);

    // Over the real log, from a point in time, through the CLI too.
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let mut mutations = Vec::new();
    for i in 0..40 {
        let large = if i % 2 == 0 { 20 << 20 } else { 10 };
        let prefix = if i % 4 < 2 { "raw" } else { "cooked" };
        mutations.push(put(
            "photos",
            &format!("{prefix}/{i}.jpg"),
            large,
            i % 8 < 4,
        ));
    }
    ingest(&server, mutations);
    let since = before.to_rfc3339();
    let (status, v) = server.post(
        "/v1/filters/camera/test",
        json!({"since": since, "limit": 1000}).to_string(),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["evaluated"], 40);
    // Kept: under raw/ (i%8 in 0,1,4,5), large (even), with a camera (i%8 < 4): i%8 == 0.
    assert_eq!(v["kept"], 5, "{v}");
    // The newest 16 of the log (i = 24..40, over every partition): i%8 == 0 is 24 and 32.
    let (status, v) = server.post(
        "/v1/filters/camera/test",
        json!({"last": 16, "max_results": 100}).to_string(),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["evaluated"].clone(), v["kept"].clone()),
        (json!(16), json!(2)),
        "{v}"
    );
    assert_eq!(v["source"], json!({"log_last": 16}), "{v}");
    let mut keys: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap_or_default())
        .collect();
    keys.sort();
    let mut newest: Vec<String> = (24..40)
        .map(|i| format!("{}/{i}.jpg", if i % 4 < 2 { "raw" } else { "cooked" }))
        .collect();
    newest.sort();
    assert_eq!(keys, newest, "{v}");
    let out = tidemark(&[
        "filter",
        "test",
        "camera",
        "--last",
        "16",
        "--server",
        &server.url,
    ]);
    assert!(out.contains("16 events, 2 kept, 14 dropped"), "{out}");

    let jsonl = dir.path().join("events.jsonl");
    let lines: Vec<String> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.to_string())
        .collect();
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    let out = tidemark(&[
        "filter",
        "test",
        "camera",
        "--events",
        jsonl.to_str().unwrap(),
        "--server",
        &server.url,
    ]);
    assert!(
        out.contains("4 events, 1 kept, 3 dropped, 0 errors; match rate 25.0%"),
        "{out}"
    );
    assert!(out.contains("photos/raw/a.jpg  keep"), "{out}");
    let out = tidemark(&[
        "filter",
        "test",
        "camera",
        "--since",
        &since,
        "--limit",
        "20",
        "--server",
        &server.url,
    ]);
    assert!(out.contains("20 events"), "{out}");
    std::fs::write(&jsonl, "{not json}\n").unwrap();
    let out = run(&[
        "filter",
        "test",
        "camera",
        "--events",
        jsonl.to_str().unwrap(),
        "--server",
        &server.url,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("events.jsonl:1: not JSON"),
        "{out:?}"
    );
}

#[test]
fn the_cli_uploads_lists_and_removes_filters() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), ALLOW_LOOPBACK);
    let wasm = dir.path().join("camera.wasm");
    std::fs::write(&wasm, wat::parse_str(RAW_CAMERA_LARGE).unwrap()).unwrap();
    let out = tidemark(&[
        "filter",
        "upload",
        "camera",
        wasm.to_str().unwrap(),
        "--server",
        &server.url,
    ]);
    assert!(out.contains("uploaded camera@1"), "{out}");
    let out = tidemark(&[
        "filter",
        "upload",
        "camera",
        wasm.to_str().unwrap(),
        "--timeout-ms",
        "20",
        "--server",
        &server.url,
    ]);
    assert!(out.contains("uploaded camera@2"), "{out}");
    let out = tidemark(&["filter", "ls", "--server", &server.url]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("camera") && l.contains(" 2 ")),
        "{out}"
    );
    let out = tidemark(&["filter", "ls", "camera", "--server", &server.url]);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.contains(&format!(
            "{}@",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        )),
        "{out}"
    );

    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, b"not wasm").unwrap();
    let out = run(&[
        "filter",
        "upload",
        "camera",
        bad.to_str().unwrap(),
        "--server",
        &server.url,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a WebAssembly binary"),
        "{out:?}"
    );

    // In use: refused, naming the subscription; free again once it points elsewhere.
    let receiver = Receiver::start(dir.path(), "recv", &[]);
    create_subscription(&server, &webhook("thumbs", &receiver, Some("camera@1")));
    let out = run(&["filter", "rm", "camera", "--server", &server.url]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("used by subscription(s) thumbs"),
        "{out:?}"
    );
    // Version 2 is not pinned: it may go.
    tidemark(&["filter", "rm", "camera@2", "--server", &server.url]);
    let out = run(&["filter", "rm", "camera@1", "--server", &server.url]);
    assert!(!out.status.success());
    let (status, _) = server.put(
        "/v1/subscriptions/thumbs",
        &webhook("thumbs", &receiver, None),
    );
    assert_eq!(status, 200);
    let out = tidemark(&["filter", "rm", "camera", "--server", &server.url]);
    assert!(out.contains("deleted filter camera"), "{out}");
    let (status, _) = server.get("/v1/filters/camera");
    assert_eq!(status, 404);
}

#[test]
fn subscriptions_deliver_what_rules_and_filter_keep_and_failures_follow_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), ALLOW_LOOPBACK);
    let receiver = Receiver::start(dir.path(), "recv", &[]);
    uploaded(&server, "camera", wat::parse_str(RAW_CAMERA_LARGE).unwrap());
    // Fails (traps) on events whose size is 666, keeps the rest.
    uploaded(
        &server,
        "fragile",
        module(
            r#"(import "tidemark" "size" (func $size (result i64)))"#,
            "(if (i64.eq (call $size) (i64.const 666)) (then unreachable)) i32.const 1",
        ),
    );
    // Loops forever on every event.
    uploaded(&server, "spin", module("", "(loop $l (br $l)) i32.const 1"));

    // Unknown filters, versions, malformed references and policies are refused at create.
    let mut bad = webhook("bad", &receiver, Some("nothing"));
    let (status, v) = server.post("/v1/subscriptions", bad.to_string());
    assert_eq!(
        (status, v["error"]["field"].clone()),
        (400, json!("filter")),
        "{v}"
    );
    bad["filter"] = "camera@7".into();
    let (status, v) = server.post("/v1/subscriptions", bad.to_string());
    assert!(
        status == 400
            && v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("latest is 1"),
        "{v}"
    );
    bad["filter"] = "camera@x".into();
    let (status, _) = server.post("/v1/subscriptions", bad.to_string());
    assert_eq!(status, 400);
    bad["filter"] = "camera".into();
    bad["on_filter_error"] = "ignore".into();
    let (status, v) = server.post("/v1/subscriptions", bad.to_string());
    assert_eq!(
        (status, v["error"]["field"].clone()),
        (400, json!("on_filter_error")),
        "{v}"
    );

    // Rules first (bucket photos), then the module.
    let mut camera = webhook("camera", &receiver, Some("camera"));
    camera["rules"] = json!({"buckets": ["photos"]});
    create_subscription(&server, &camera);
    let mut dl = webhook("fragile-dl", &receiver, Some("fragile"));
    dl["filter_quarantine_after"] = 100.into();
    create_subscription(&server, &dl);
    let mut skip = webhook("fragile-skip", &receiver, Some("fragile"));
    skip["on_filter_error"] = "skip".into();
    create_subscription(&server, &skip);
    let mut deliver = webhook("fragile-deliver", &receiver, Some("fragile"));
    deliver["on_filter_error"] = "deliver".into();
    create_subscription(&server, &deliver);
    let mut spin = webhook("spin", &receiver, Some("spin"));
    spin["filter_quarantine_after"] = 3.into();
    create_subscription(&server, &spin);
    create_subscription(&server, &webhook("plain", &receiver, None));

    let acked = ingest(
        &server,
        vec![
            put("photos", "raw/1.jpg", 20 << 20, true), // camera keeps
            put("photos", "raw/2.jpg", 666, true),      // fragile fails
            put("other", "raw/3.jpg", 20 << 20, true),  // camera's rules pass over
            put("photos", "cooked/4.jpg", 20 << 20, true), // camera drops
            put("photos", "raw/5.jpg", 10, false),
        ],
    );
    let ids: Vec<String> = acked.iter().map(|(_, id)| id.clone()).collect();
    let all: HashSet<String> = ids.iter().cloned().collect();
    let without_666: HashSet<String> = ids.iter().filter(|id| **id != ids[1]).cloned().collect();

    let wait = |name: &str, want: &HashSet<String>| {
        wait_for(
            &format!("{name} deliveries"),
            Duration::from_secs(20),
            || {
                let got = delivered_at(&receiver, name);
                if &got == want {
                    Ok(())
                } else {
                    Err(format!("{got:?}"))
                }
            },
        )
    };
    wait("plain", &all);
    wait("camera", &HashSet::from([ids[0].clone()]));
    wait("fragile-deliver", &all);
    wait("fragile-skip", &without_666);
    wait("fragile-dl", &without_666);
    let letters = wait_dead_letters(&server, "fragile-dl", 1, Duration::from_secs(20));
    assert_eq!(letters[0]["event_id"], ids[1].as_str());
    assert!(
        letters[0]["error"]
            .as_str()
            .unwrap()
            .contains("the filter failed (trap)"),
        "{letters:?}"
    );

    // The looping filter: quarantined after three failures in a row; its events wait, others
    // flow. Partitions are filtered in parallel, so one more may fail per other partition
    // before they all see the quarantine.
    let s = wait_status(
        &server,
        "spin",
        "quarantined",
        Duration::from_secs(20),
        |s| s["filter"]["state"] == "quarantined",
    );
    let failed = s["filter_failed"].as_u64().unwrap() as usize;
    assert!((3..=5).contains(&failed), "{s}");
    assert!(
        s["filter"]["reason"]
            .as_str()
            .unwrap()
            .contains("failed on 3 events in a row"),
        "{s}"
    );
    assert_eq!(
        wait_dead_letters(&server, "spin", failed, Duration::from_secs(10)).len(),
        failed
    );
    assert!(delivered_at(&receiver, "spin").is_empty());
    let s = subscription_status(&server, "camera");
    assert_eq!(s["filter"]["state"], "active");
    assert_eq!(s["filter"]["version"], 1);
    assert_eq!(s["filtered_out"], 3, "{s}");
    assert_eq!(
        metric(
            &server,
            "tidemark_subscription_filter_quarantined{subscription=\"spin\"}"
        ),
        1.0
    );
    // Out of time or of fuel, whichever comes first.
    let spin_errors: f64 = ["timeout", "fuel"]
        .iter()
        .map(|k| {
            metric(
                &server,
                &format!(
                    "tidemark_filter_errors_total{{filter=\"spin\",version=\"1\",kind=\"{k}\"}}"
                ),
            )
        })
        .sum();
    assert_eq!(spin_errors as usize, failed);
    assert_eq!(
        metric(
            &server,
            "tidemark_filter_evaluations_total{filter=\"camera\",version=\"1\",outcome=\"kept\"}"
        ),
        1.0
    );
    assert!(
        metric(
            &server,
            "tidemark_filter_seconds_count{filter=\"camera\",version=\"1\"}"
        ) >= 4.0
    );
    let out = tidemark(&["sub", "status", "spin", "--server", &server.url]);
    assert!(out.contains("quarantined"), "{out}");

    // A fixed version lifts the quarantine without a restart: the waiting events flow.
    uploaded(&server, "spin", keep_all(1));
    wait_for("spin resumes", Duration::from_secs(20), || {
        let got = delivered_at(&receiver, "spin");
        // The dead-lettered events stay there; the others are delivered. (When all five were
        // dead-lettered nothing is left to deliver: wait for the new version to be taken.)
        let s = subscription_status(&server, "spin");
        if got.len() == 5 - failed && s["filter"]["version"] == 2 {
            Ok(())
        } else {
            Err(format!("{got:?} {}", s["filter"]))
        }
    });
    let s = subscription_status(&server, "spin");
    assert_eq!(
        (s["filter"]["state"].clone(), s["filter"]["version"].clone()),
        (json!("active"), json!(2)),
        "{s}"
    );
}

#[test]
fn init_parameters_configure_a_module_per_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), ALLOW_LOOPBACK);
    let receiver = Receiver::start(dir.path(), "recv", &[]);
    // init(params) refuses parameters that are not a JSON object (-7); the filter keeps
    // events whose key is as long as the parameters' JSON text.
    let wasm = wat::parse_str(
        r#"(module
             (import "tidemark" "key" (func $key (param i32 i32) (result i32)))
             (memory (export "memory") 1)
             (global $want (mut i32) (i32.const 0))
             (func (export "tidemark_abi_version") (result i32) i32.const 1)
             (func (export "tidemark_alloc") (param i32) (result i32) i32.const 4096)
             (func (export "init") (param $ptr i32) (param $len i32) (result i32)
               (if (i32.ne (i32.load8_u (local.get $ptr)) (i32.const 123)) (then (return (i32.const -7))))
               (global.set $want (local.get $len))
               i32.const 0)
             (func (export "filter") (result i32)
               (i32.eq (call $key (i32.const 0) (i32.const 0)) (global.get $want))))"#,
    )
    .unwrap();
    uploaded(&server, "length", wasm);
    let mut a = webhook("len7", &receiver, Some("length"));
    a["filter_params"] = json!({"n": 1}); // `{"n":1}` is 7 bytes
    create_subscription(&server, &a);
    let mut b = webhook("len8", &receiver, Some("length@1"));
    b["filter_params"] = json!({"n": 10}); // 8 bytes
    create_subscription(&server, &b);
    // Parameters init refuses are refused at create, naming them.
    let mut c = webhook("refused", &receiver, Some("length"));
    c["filter_params"] = json!([1]);
    let (status, v) = server.post("/v1/subscriptions", c.to_string());
    assert_eq!(
        (status, v["error"]["field"].clone()),
        (400, json!("filter_params")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("init failed with code -7"),
        "{v}"
    );

    let acked = ingest(
        &server,
        vec![
            put("len", "1234567", 1, false),
            put("len", "12345678", 1, false),
        ],
    );
    wait_for("len7", Duration::from_secs(20), || {
        let got = delivered_at(&receiver, "len7");
        if got == HashSet::from([acked[0].1.clone()]) {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    });
    wait_for("len8", Duration::from_secs(20), || {
        let got = delivered_at(&receiver, "len8");
        if got == HashSet::from([acked[1].1.clone()]) {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    });
}

#[test]
fn switching_versions_under_load_loses_nothing_and_keeps_per_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), ALLOW_LOOPBACK);
    let receiver = Receiver::start(dir.path(), "recv", &[]);
    uploaded(&server, "swap", keep_all(1));
    create_subscription(&server, &webhook("swap", &receiver, Some("swap")));

    let url = server.url.clone();
    let writer = std::thread::spawn(move || {
        let server_like = |mutations: Vec<Value>| -> Vec<(String, String)> {
            let resp = client()
                .post(format!("{url}/v1/mutations"))
                .header("content-type", "application/json")
                .body(json!({ "mutations": mutations }).to_string())
                .send()
                .unwrap();
            let v: Value = resp.json().unwrap();
            let ids = acked_ids(&v);
            mutations
                .iter()
                .map(|m| m["key"].as_str().unwrap().to_string())
                .zip(ids)
                .collect()
        };
        let mut acked = Vec::new();
        for round in 0..60 {
            let batch = (0..25)
                .map(|i| put("load", &format!("k{}", (round * 25 + i) % 40), 1, false))
                .collect();
            acked.extend(server_like(batch));
            std::thread::sleep(Duration::from_millis(20));
        }
        acked
    });
    // Meanwhile: new versions followed as `swap` (latest), pins and unpins by PUT.
    for (i, step) in ["upload", "pin1", "upload", "pin2", "latest", "upload"]
        .iter()
        .enumerate()
    {
        std::thread::sleep(Duration::from_millis(150));
        match *step {
            "upload" => uploaded(&server, "swap", keep_all(10 + i as i32)),
            "pin1" | "pin2" => {
                let spec = webhook("swap", &receiver, Some(&format!("swap@{}", &step[3..])));
                assert_eq!(server.put("/v1/subscriptions/swap", &spec).0, 200);
            }
            _ => assert_eq!(
                server
                    .put(
                        "/v1/subscriptions/swap",
                        &webhook("swap", &receiver, Some("swap"))
                    )
                    .0,
                200
            ),
        }
    }
    let acked = writer.join().unwrap();
    assert_eq!(acked.len(), 1500);
    let want: Vec<String> = acked.iter().map(|(_, id)| id.clone()).collect();
    wait_for("every event delivered", Duration::from_secs(60), || {
        let got = delivered_at(&receiver, "swap");
        let missing = want.iter().filter(|id| !got.contains(*id)).count();
        if missing == 0 {
            Ok(())
        } else {
            Err(format!("{missing} missing"))
        }
    });
    let reqs: Vec<Value> = receiver
        .requests()
        .into_iter()
        .filter(|r| r["path"] == "/swap")
        .collect();
    assert_per_key_order(&reqs, &acked);
    // Redeliveries happen only around a restart for a PUT (at-least-once); bounded.
    let mut count: HashMap<String, usize> = HashMap::new();
    for r in &reqs {
        *count.entry(only_event(r).id).or_default() += 1;
    }
    let repeated = count.values().filter(|n| **n > 1).count();
    assert!(repeated < 500, "{repeated} events delivered more than once");
    let s = subscription_status(&server, "swap");
    assert_eq!(s["filter"]["version"], 4, "{s}");
}

#[test]
fn compiled_filters_come_back_after_a_restart_without_recompiling() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, ALLOW_LOOPBACK);
    uploaded(&server, "camera", wat::parse_str(RAW_CAMERA_LARGE).unwrap());
    // The same module again is the existing version: not compiled a second time.
    let (status, _) = upload(
        &server,
        "camera",
        "",
        wat::parse_str(RAW_CAMERA_LARGE).unwrap(),
    );
    assert_eq!(status, 200);
    assert_eq!(
        metric(
            &server,
            "tidemark_filter_module_loads_total{source=\"compiled\"}"
        ),
        1.0
    );
    server.stop();

    let server = Server::start(&data, ALLOW_LOOPBACK);
    let (status, v) = server.post(
        "/v1/filters/camera/test",
        json!({"events": [sample("raw/x", 20 << 20, true)]}).to_string(),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["kept"], 1);
    assert_eq!(
        metric(
            &server,
            "tidemark_filter_module_loads_total{source=\"compiled\"}"
        ),
        0.0
    );
    assert_eq!(
        metric(
            &server,
            "tidemark_filter_module_loads_total{source=\"artifact\"}"
        ),
        1.0
    );
    server.stop();

    // A damaged artifact is noticed and the module compiled again from the catalog.
    for entry in std::fs::read_dir(data.join("filters/compiled")).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 10] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    let server = Server::start(&data, ALLOW_LOOPBACK);
    let (status, v) = server.post(
        "/v1/filters/camera/test",
        json!({"events": [sample("raw/x", 20 << 20, true)]}).to_string(),
    );
    assert_eq!((status, v["kept"].clone()), (200, json!(1)), "{v}");
    assert_eq!(
        metric(
            &server,
            "tidemark_filter_module_loads_total{source=\"compiled\"}"
        ),
        1.0
    );
}

#[test]
fn hostile_modules_fail_only_their_own_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), ALLOW_LOOPBACK);
    let receiver = Receiver::start(dir.path(), "recv", &[]);
    // (name, module, the error kind(s) its events are dead-lettered with; None: delivered)
    let hostile: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        (
            "grow",
            module(
                "",
                "(loop $l (drop (memory.grow (i32.const 16))) (br $l)) i32.const 1",
            ),
            // The memory limit; under a loaded machine the deadline may come first.
            Some("memory|timeout"),
        ),
        (
            "recurse",
            wat::parse_str(
                r#"(module (memory (export "memory") 1)
                     (func (export "tidemark_abi_version") (result i32) i32.const 1)
                     (func $deep (result i32) (call $deep))
                     (func (export "filter") (result i32) (call $deep)))"#,
            )
            .unwrap(),
            Some("trap"),
        ),
        ("unreachable", module("", "unreachable"), Some("trap")),
        // Out of fuel or out of time, whichever comes first.
        (
            "spin",
            module("", "(loop $l (br $l)) i32.const 1"),
            Some("fuel|timeout"),
        ),
        ("verdict", module("", "i32.const 7"), Some("verdict")),
        ("code", module("", "i32.const -42"), Some("module")),
        // Out-of-range pointers get -2 from the host, nothing more: keeps only if so.
        (
            "pointers",
            module(
                r#"(import "tidemark" "key" (func $key (param i32 i32) (result i32)))"#,
                "(i32.eq (call $key (i32.const 0x7fffff00) (i32.const 1024)) (i32.const -2))",
            ),
            None,
        ),
        // A log flood (200 lines an event, kept: 16) is capped; the verdict stands. Not many
        // more: a debug build's host takes microseconds a call, and 10 ms is the deadline.
        (
            "flood",
            module(
                r#"(import "tidemark" "log" (func $log (param i32 i32)))
                   (data (i32.const 0) "hello")"#,
                r#"(local $i i32)
                   (loop $l
                     (call $log (i32.const 0) (i32.const 5))
                     (local.set $i (i32.add (local.get $i) (i32.const 1)))
                     (br_if $l (i32.lt_u (local.get $i) (i32.const 200))))
                   i32.const 1"#,
            ),
            None,
        ),
    ];
    for (name, wasm, _) in &hostile {
        let (status, v) = upload(&server, name, "", wasm.clone());
        assert_eq!(status, 201, "{name}: {v}");
        create_subscription(&server, &webhook(name, &receiver, Some(name)));
    }
    create_subscription(&server, &webhook("plain", &receiver, None));
    let acked = ingest(
        &server,
        (0..3)
            .map(|i| put("photos", &format!("k{i}"), 10, false))
            .collect(),
    );
    let all: HashSet<String> = acked.iter().map(|(_, id)| id.clone()).collect();
    wait_for("plain delivers everything", Duration::from_secs(30), || {
        let got = delivered_at(&receiver, "plain");
        if got == all {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    });
    for (name, _, kind) in &hostile {
        match kind {
            None => wait_for(name, Duration::from_secs(30), || {
                let got = delivered_at(&receiver, name);
                if got == all {
                    Ok(())
                } else {
                    Err(format!("{got:?}"))
                }
            }),
            Some(kind) => {
                let kinds: Vec<&str> = kind.split('|').collect();
                let letters = wait_dead_letters(&server, name, 3, Duration::from_secs(30));
                for l in &letters {
                    let error = l["error"].as_str().unwrap();
                    assert!(
                        kinds
                            .iter()
                            .any(|k| error.contains(&format!("the filter failed ({k})"))),
                        "{name}: {error}"
                    );
                }
                let s = subscription_status(&server, name);
                let counted: u64 = kinds
                    .iter()
                    .map(|k| s["filter"]["errors"][k].as_u64().unwrap_or(0))
                    .sum();
                assert_eq!(counted, 3, "{name}: {s}");
                assert!(delivered_at(&receiver, name).is_empty(), "{name}");
            }
        }
    }
    // The server is fine: it still takes and serves mutations.
    ingest(&server, vec![put("photos", "after", 1, false)]);
    let (status, _) = server.get("/v1/objects/photos/after");
    assert_eq!(status, 200);
}

#[test]
fn server_wide_limits_set_each_versions_defaults_and_maxima() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--filter-fuel",
            "50000",
            "--filter-max-fuel",
            "100000",
            "--filter-timeout-ms",
            "5",
        ],
    );
    let (status, v) = upload(&server, "a", "", keep_all(1));
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        (
            v["limits"]["fuel"].clone(),
            v["limits"]["timeout_ms"].clone()
        ),
        (json!(50000), json!(5))
    );
    refused(
        &server,
        "a",
        "?fuel=200000",
        keep_all(2),
        "exceed the server's maxima",
    );
    let (status, v) = upload(&server, "a", "?fuel=100000", keep_all(2));
    assert_eq!(
        (status, v["limits"]["fuel"].clone()),
        (201, json!(100000)),
        "{v}"
    );
    // A module spending more than its fuel on an event fails that event with `fuel`.
    let (_, v) = server.post(
        "/v1/filters/spin@1/test",
        json!({"events": [sample("k", 1, false)]}).to_string(),
    );
    assert_eq!(v["error"]["code"], "not_found", "{v}");
    assert_eq!(
        upload(
            &server,
            "spin",
            "?timeout_ms=1000",
            module("", "(loop $l (br $l)) i32.const 1")
        )
        .0,
        201
    );
    let (_, v) = server.post(
        "/v1/filters/spin/test",
        json!({"events": [sample("k", 1, false)]}).to_string(),
    );
    assert_eq!(v["results"][0]["error_kind"], "fuel", "{v}");
    assert_eq!(v["results"][0]["fuel"], 50000, "{v}");

    // Defaults above the maxima are refused at start, naming both flags.
    let out = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().join("other").to_str().unwrap(),
        "--filter-memory-bytes",
        "1000000000",
        "--filter-max-memory-bytes",
        "1000000",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--filter-memory-bytes 1000000000 is above --filter-max-memory-bytes"),
        "{err}"
    );
}

const RAW_CAMERA_LARGE_V2: &str = include_str!("../plugins/examples/raw_camera_large_v2.wat");

#[test]
fn a_batch_filter_on_a_subscription_keeps_what_its_v1_twin_keeps_and_fails_one_event_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), ALLOW_LOOPBACK);
    let receiver = Receiver::start(dir.path(), "recv", &[]);
    uploaded(&server, "camera", wat::parse_str(RAW_CAMERA_LARGE).unwrap());
    uploaded(
        &server,
        "camera-v2",
        wat::parse_str(RAW_CAMERA_LARGE_V2).unwrap(),
    );
    // A v2 module that traps on the event of size 666, in the middle of its batch.
    let fragile = RAW_CAMERA_LARGE_V2.replace(
        "    (if (i64.le_s (i64.load offset=48 (local.get $r)) (i64.const 10485760))",
        "    (if (i64.eq (i64.load offset=48 (local.get $r)) (i64.const 666)) (then unreachable))
    (if (i64.le_s (i64.load offset=48 (local.get $r)) (i64.const 10485760))",
    );
    uploaded(&server, "fragile-v2", wat::parse_str(&fragile).unwrap());
    let (_, v) = server.get("/v1/filters/camera-v2");
    assert_eq!(v["versions"][0]["abi_version"], 2, "{v}");

    for (name, filter) in [
        ("v1", "camera"),
        ("v2", "camera-v2"),
        ("fragile", "fragile-v2"),
    ] {
        let mut spec = webhook(name, &receiver, Some(filter));
        spec["on_filter_error"] = "skip".into();
        spec["filter_quarantine_after"] = 1000.into();
        create_subscription(&server, &spec);
    }
    let mut rng = fastrand::Rng::with_seed(2);
    let mutations: Vec<Value> = (0..600)
        .map(|i| {
            let prefix = ["raw/", "cooked/", "ra"][rng.usize(..3)];
            let size = match rng.u8(..5) {
                0 => 666,
                1 => 10 << 20,
                _ => rng.u64(0..30 << 20),
            };
            put("photos", &format!("{prefix}{i}.jpg"), size, rng.bool())
        })
        .collect();
    let acked = ingest(&server, mutations.clone());
    let keep = |m: &Value| {
        m["key"].as_str().unwrap().starts_with("raw/")
            && m["size"].as_u64().unwrap() > 10 << 20
            && m.get("metadata").is_some()
    };
    let want: HashSet<String> = mutations
        .iter()
        .zip(&acked)
        .filter(|(m, _)| keep(m))
        .map(|(_, (_, id))| id.clone())
        .collect();
    let fragile_want: HashSet<String> = mutations
        .iter()
        .zip(&acked)
        .filter(|(m, _)| keep(m) && m["size"] != 666)
        .map(|(_, (_, id))| id.clone())
        .collect();
    assert!(want.len() > 20, "the workload keeps some events");
    for (name, want) in [("v1", &want), ("v2", &want), ("fragile", &fragile_want)] {
        wait_for(
            &format!("{name} deliveries"),
            Duration::from_secs(30),
            || {
                let got = delivered_at(&receiver, name);
                if &got == want {
                    Ok(())
                } else {
                    Err(format!("{} of {}", got.len(), want.len()))
                }
            },
        );
    }
    // Only the 666 events failed: each once, counted by kind.
    let traps = mutations.iter().filter(|m| m["size"] == 666).count();
    let s = wait_status(
        &server,
        "fragile",
        "the failures counted",
        Duration::from_secs(20),
        |s| s["filter"]["errors"]["trap"] == traps,
    );
    assert_eq!(s["filter"]["state"], "active", "{s}");

    // The test endpoint gives the same verdicts for both versions of the logic.
    let samples = json!([
        sample("raw/a.jpg", 20 << 20, true),
        sample("raw/b.jpg", 1 << 20, true),
        sample("cooked/c.jpg", 20 << 20, true),
        sample("raw/d.jpg", 20 << 20, false),
    ]);
    let verdicts = |name: &str| -> Vec<String> {
        let (status, v) = server.post(
            &format!("/v1/filters/{name}/test"),
            json!({"events": samples}).to_string(),
        );
        assert_eq!(status, 200, "{v}");
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["verdict"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(verdicts("camera-v2"), verdicts("camera"));
    assert_eq!(verdicts("camera-v2"), ["keep", "drop", "drop", "drop"]);
}
