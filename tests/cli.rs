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
