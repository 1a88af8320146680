//! The CLI: `--help` everywhere, clear errors for bad input, and `log tail --follow` printing
//! events as the running server appends them.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::json;

fn fails_with(args: &[&str], needle: &str) {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "tidemark {args:?} should fail");
    assert!(
        stderr.contains(needle),
        "tidemark {args:?}: stderr does not mention '{needle}':\n{stderr}"
    );
}

#[test]
fn every_command_has_help() {
    for cmd in [
        &["--help"][..],
        &["serve", "--help"],
        &["log", "--help"],
        &["log", "tail", "--help"],
        &["state", "--help"],
        &["state", "ls", "--help"],
        &["state", "rebuild", "--help"],
        &["bench", "--help"],
        &["bench", "codec", "--help"],
        &["bench", "ingest", "--help"],
        &["bench", "rebuild", "--help"],
        &["bench", "delivery", "--help"],
        &["bench", "filter", "--help"],
        &["sub", "--help"],
        &["sub", "create", "--help"],
        &["sub", "ls", "--help"],
        &["sub", "status", "--help"],
        &["sub", "rm", "--help"],
        &["sub", "dead-letters", "--help"],
        &["sub", "redrive", "--help"],
    ] {
        let out = tidemark(cmd);
        assert!(out.contains("Usage:"), "{cmd:?}: {out}");
    }
}

#[test]
fn bad_input_gets_a_clear_error() {
    let scratch = tempfile::tempdir().unwrap();
    let missing = scratch.path().join("missing");
    let missing = missing.to_str().unwrap();
    fails_with(&["log", "tail", "--data-dir", missing], "no log at");
    fails_with(&["state", "ls", "--data-dir", missing], "no index at");
    fails_with(
        &["log", "tail", "--since", "yesterday"],
        "--since: 'yesterday' is not an RFC 3339 timestamp",
    );
    fails_with(&["serve", "--partitions", "0"], "--partitions");
    fails_with(&["serve", "--listen", "not-an-address"], "--listen");

    let data = scratch.path().join("data");
    let dir = data.to_str().unwrap();
    let server = Server::start(&data, &[]);
    let (status, _) = server.post(
        "/v1/mutations",
        json!({"mutations": [{"op": "put", "bucket": "cli", "key": "a", "size": 1}]}).to_string(),
    );
    assert_eq!(status, 200);
    // One writer per data directory.
    fails_with(
        &["serve", "--data-dir", dir, "--listen", "127.0.0.1:0"],
        "in use by another Tidemark process",
    );
    fails_with(
        &["log", "tail", "--data-dir", dir, "--topic", "nope"],
        "topic 'nope' does not exist",
    );
    fails_with(
        &["state", "rebuild", "--data-dir", dir],
        "needs the server stopped",
    );
    let into = scratch.path().join("rebuilt");
    tidemark(&[
        "state",
        "rebuild",
        "--data-dir",
        dir,
        "--into",
        into.to_str().unwrap(),
    ]);
    fails_with(
        &[
            "state",
            "rebuild",
            "--data-dir",
            dir,
            "--into",
            into.to_str().unwrap(),
        ],
        "already exists",
    );
    // Failed commands changed nothing.
    server.wait_caught_up();
    assert_eq!(index_dump(&data), index_dump(&into));
    server.stop();
}

#[test]
fn log_tail_follows_a_running_server() {
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let server = Server::start(&data, &[]);
    let mut tail = Command::new(BIN)
        .args([
            "log",
            "tail",
            "--follow",
            "--json",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = tail.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut ids = Vec::new();
    for i in 0..3 {
        let (_, resp) = server.post("/v1/mutations", json!({"mutations": [{"op": "put", "bucket": "follow", "key": format!("k{i}"), "size": i}]}).to_string());
        ids.extend(acked_ids(&resp));
    }
    let mut seen = Vec::new();
    while seen.len() < ids.len() {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("log tail --follow prints new events");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        seen.push(v["event_id"].as_str().unwrap().to_string());
    }
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
    tail.kill().unwrap();
    tail.wait().unwrap();
    server.stop();
}

#[test]
fn sub_commands_manage_subscriptions_on_a_running_server() {
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let server = Server::start(
        &data,
        &[
            "--allow-destinations",
            "loopback",
            "--function",
            "noop=true",
        ],
    );
    let at = ["--server", server.url.as_str()];
    let with = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(at.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let call = |args: &[&str]| {
        let args = with(args);
        tidemark(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let out = call(&[
        "sub",
        "create",
        "thumbs",
        "--url",
        "http://127.0.0.1:9/hook",
        "--format",
        "cloudevents-binary",
        "--event",
        "ObjectCreated:*",
        "--prefix",
        "photos/",
        "--suffix",
        ".jpg",
        "--min-size",
        "1024",
        "--metadata",
        "team=ml",
        "--secret",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ]);
    assert!(out.contains("created subscription thumbs"), "{out}");
    // The same spec over HTTP: rules and sink as the flags said, the secret as a reference.
    let (_, v) = server.get("/v1/subscriptions/thumbs");
    assert_eq!(v["rules"]["prefix"], json!(["photos/"]), "{v}");
    assert_eq!(v["rules"]["size"]["min"], 1024, "{v}");
    assert_eq!(v["rules"]["metadata"]["team"], "ml", "{v}");
    assert_eq!(v["sink"]["format"], "cloudevents-binary", "{v}");
    assert!(
        v["sink"]["secret"].as_str().unwrap().starts_with("secret:"),
        "{v}"
    );

    let spec = scratch.path().join("spec.json");
    std::fs::write(
        &spec,
        json!({"name": "audit", "start": "earliest",
               "sink": {"type": "function", "mode": "process", "function": "noop"}})
        .to_string(),
    )
    .unwrap();
    let out = call(&["sub", "create", "--spec", spec.to_str().unwrap()]);
    assert!(
        out.contains("created subscription audit (start earliest)"),
        "{out}"
    );

    let ls = call(&["sub", "ls"]);
    assert!(
        ls.contains("thumbs") && ls.contains("audit") && ls.contains("webhook"),
        "{ls}"
    );
    let status = call(&["sub", "status", "audit"]);
    assert!(
        status.contains("state") && status.contains("lag"),
        "{status}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&call(&["sub", "status", "audit", "--json"])).unwrap();
    assert_eq!(json["name"], "audit");
    let letters = call(&["sub", "dead-letters", "audit"]);
    assert!(letters.starts_with("ID"), "{letters}");
    assert!(call(&["sub", "redrive", "audit"]).contains("redriving 0"));

    // Errors name the problem: the server's field, a missing name, an unknown subscription,
    // and a server that is not there.
    let bad = with(&["sub", "create", "x", "--url", "ftp://example.com/"]);
    fails_with(
        &bad.iter().map(String::as_str).collect::<Vec<_>>(),
        "sink.url: 'ftp://example.com/' must start with http:// or https://",
    );
    let bad = with(&["sub", "create", "--url", "http://127.0.0.1:9/"]);
    fails_with(
        &bad.iter().map(String::as_str).collect::<Vec<_>>(),
        "give the subscription a name",
    );
    let bad = with(&["sub", "status", "nope"]);
    fails_with(
        &bad.iter().map(String::as_str).collect::<Vec<_>>(),
        "subscription 'nope' does not exist",
    );
    fails_with(
        &["sub", "ls", "--server", "http://127.0.0.1:9"],
        "cannot reach the server at http://127.0.0.1:9",
    );

    let out = call(&["sub", "rm", "thumbs"]);
    assert!(out.contains("removed subscription thumbs"), "{out}");
    let ls = call(&["sub", "ls"]);
    assert!(!ls.contains("thumbs") && ls.contains("audit"), "{ls}");
    server.stop();
}
