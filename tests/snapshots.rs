//! Index snapshots and the state at an instant: with snapshots taken mid-workload (by the
//! server every N events, and on demand with `state snapshot`), `state ls --at` and
//! `GET /v1/objects?at=` give exactly what was recorded at each instant, say when a snapshot
//! was used (and that none was before it), and pass over a damaged one. The event-time clock
//! gives each key its newest event, in log order, whose event_time is at or before the instant.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// `state ls --json` (no history: snapshots apply), at `at` if given.
fn ls(data: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "state",
        "ls",
        "--json",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend(extra);
    run(&args)
}

fn ok_stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn snapshot_files(data: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(data.join("snapshots"))
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "snap"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// A mutation that always succeeds (puts on new keys, any change to existing ones), so every
/// round appends exactly as many events as it has mutations.
fn mutation(rng: &mut fastrand::Rng, exists: &mut [bool]) -> Value {
    let k = rng.usize(..exists.len());
    let key = format!("dir{}/key-{k:04}", k % 4);
    let op = if exists[k] {
        ["put", "put", "tag", "metadata", "delete"][rng.usize(..5)]
    } else {
        "put"
    };
    exists[k] = op != "delete";
    let mut m = json!({"op": op, "bucket": "snap", "key": key});
    match op {
        "put" => m["size"] = rng.u32(..1 << 20).into(),
        "tag" => m["tags"] = json!({"stage": format!("s{}", rng.u8(..3))}),
        "metadata" => m["metadata"] = json!({"camera": format!("c{}", rng.u8(..9))}),
        _ => {}
    }
    m
}

#[test]
fn state_at_an_instant_starts_from_the_newest_snapshot_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--snapshot-every-events", "1000"]);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut exists = vec![false; 150];
    // (instant, `state ls` then, objects listed over HTTP then)
    let mut recorded: Vec<(String, String, Value)> = Vec::new();
    for round in 0..5 {
        let mutations: Vec<Value> = (0..400).map(|_| mutation(&mut rng, &mut exists)).collect();
        ingest(&server, mutations);
        server.wait_caught_up();
        if round == 2 {
            // Past 1,000 events applied: the server takes one, covering at most this round.
            wait_for("a snapshot by the server", Duration::from_secs(30), || {
                let files = snapshot_files(&data);
                if files.is_empty() {
                    Err("none yet".into())
                } else {
                    Ok(())
                }
            });
        }
        if round == 3 {
            let out = tidemark(&["state", "snapshot", "--data-dir", data.to_str().unwrap()]);
            assert!(out.starts_with("snapshot "), "{out}");
            assert!(out.contains(" keys, offsets "), "{out}");
            let path = out.split_whitespace().nth(1).unwrap().trim_end_matches(':');
            assert!(Path::new(path).exists(), "{out}");
        }
        std::thread::sleep(Duration::from_millis(5));
        let at = now_rfc3339();
        std::thread::sleep(Duration::from_millis(5));
        let then = ok_stdout(&ls(&data, &[]));
        let listed = server.get("/v1/objects?bucket=snap&limit=10000").1["objects"].clone();
        recorded.push((at, then, listed));
    }
    // More history after the last instant, which `--at` must leave out.
    let mutations: Vec<Value> = (0..400).map(|_| mutation(&mut rng, &mut exists)).collect();
    ingest(&server, mutations);
    server.wait_caught_up();

    for (i, (at, then, listed)) in recorded.iter().enumerate() {
        let out = ls(&data, &["--at", at]);
        assert_eq!(&ok_stdout(&out), then, "state ls --at {at}");
        let report = String::from_utf8_lossy(&out.stderr);
        // The first snapshot covers more than the first two rounds.
        let expect_snapshot = i >= 2;
        assert_eq!(
            report.contains("snapshot "),
            expect_snapshot,
            "round {i}: {report}"
        );
        assert_eq!(
            report.contains("full replay"),
            !expect_snapshot,
            "round {i}: {report}"
        );

        let (status, v) = server.get(&format!(
            "/v1/objects?bucket=snap&limit=10000&at={}",
            at.replace('+', "%2B")
        ));
        assert_eq!(status, 200, "{v}");
        assert_eq!(&v["objects"], listed, "GET /v1/objects?at={at}");
        let as_of = &v["as_of"];
        assert_eq!(as_of["time"], "append");
        assert_eq!(as_of["snapshot"].is_object(), expect_snapshot, "{as_of}");
        let events = 400 * (i as u64 + 1);
        if expect_snapshot {
            assert!(
                as_of["events_replayed"].as_u64().unwrap() < events,
                "{as_of}"
            );
            assert_eq!(as_of["history"], false);
        } else {
            assert_eq!(as_of["events_replayed"], events, "{as_of}");
        }
    }
    // The history of an instant is a full replay, and still exact.
    let (at, _, _) = &recorded[3];
    let out = ls(&data, &["--history", "--at", at]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("full replay"));

    // Damage every snapshot: each is passed over with a warning, and the result is still exact.
    let files = snapshot_files(&data);
    assert!(files.len() >= 2, "{files:?}");
    for (n, f) in files.iter().enumerate() {
        let mut bytes = std::fs::read(f).unwrap();
        if n % 2 == 0 {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x40;
        } else {
            bytes.truncate(bytes.len() - 7);
        }
        std::fs::write(f, bytes).unwrap();
    }
    let (at, then, listed) = &recorded[4];
    let out = ls(&data, &["--at", at]);
    assert_eq!(&ok_stdout(&out), then);
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(report.contains("ignoring damaged snapshot"), "{report}");
    assert!(report.contains("full replay"), "{report}");
    let (_, v) = server.get(&format!(
        "/v1/objects?bucket=snap&limit=10000&at={}",
        at.replace('+', "%2B")
    ));
    assert_eq!(&v["objects"], listed);
    assert!(v["as_of"]["snapshot"].is_null(), "{}", v["as_of"]);
    assert!(
        !v["as_of"]["skipped_snapshots"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// A mutation of `key` with an explicit event time (RFC 3339).
fn timed(op: &str, key: &str, size: u64, event_time: &str) -> Value {
    let mut m = json!({"op": op, "bucket": "late", "key": key, "event_time": event_time});
    if op == "put" {
        m["size"] = size.into();
    }
    m
}

fn keys_and_sizes(listing: &str) -> Vec<(String, u64)> {
    listing
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["key"].as_str().unwrap().to_string(),
                v["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn event_time_takes_each_keys_newest_event_in_log_order_up_to_the_instant() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--snapshot-every-events", "2"]);
    // Appended in this order; event times out of order (a late backfill of `a`, a delete of
    // `c` stamped before its put).
    for m in [
        timed("put", "a", 1, "2020-01-01T10:00:00Z"),
        timed("put", "a", 2, "2020-01-01T12:00:00Z"),
        timed("put", "a", 3, "2020-01-01T09:00:00Z"),
        timed("put", "b", 4, "2020-01-01T11:00:00Z"),
        timed("put", "c", 5, "2020-01-01T13:00:00Z"),
        timed("delete", "c", 0, "2020-01-01T09:30:00Z"),
        timed("put", "d", 6, "2020-01-01T12:00:00Z"),
    ] {
        ingest(&server, vec![m]);
    }
    server.wait_caught_up();
    let state = |at: &str| {
        let out = ls(&data, &["--time", "event", "--at", at]);
        let report = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(report.contains("(event time): full replay"), "{report}");
        keys_and_sizes(&ok_stdout(&out))
    };
    let pairs = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
        v.iter().map(|(k, s)| (k.to_string(), *s)).collect()
    };
    assert_eq!(state("2020-01-01T08:00:00Z"), pairs(&[]));
    assert_eq!(state("2020-01-01T10:30:00Z"), pairs(&[("a", 3)]));
    assert_eq!(state("2020-01-01T11:00:00Z"), pairs(&[("a", 3), ("b", 4)]));
    assert_eq!(
        state("2020-01-01T12:30:00Z"),
        pairs(&[("a", 3), ("b", 4), ("d", 6)])
    );
    // The same instant on append time: nothing had been appended in 2020.
    assert_eq!(ok_stdout(&ls(&data, &["--at", "2020-01-01T12:30:00Z"])), "");

    let (status, v) = server.get("/v1/objects?bucket=late&at=2020-01-01T11:00:00Z&time=event");
    assert_eq!(status, 200, "{v}");
    let keys: Vec<_> = v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["key"].as_str().unwrap(), o["size"].as_u64().unwrap()))
        .collect();
    assert_eq!(keys, [("a", 3), ("b", 4)]);
    assert_eq!(v["as_of"]["time"], "event");
    assert!(
        v["as_of"]["snapshot"].is_null(),
        "event time uses no snapshot"
    );

    // With the history: the events kept, in log order.
    let out = ok_stdout(&ls(
        &data,
        &[
            "--history",
            "--time",
            "event",
            "--at",
            "2020-01-01T11:00:00Z",
        ],
    ));
    let a: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let sizes: Vec<_> = a["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [1, 3]);
}

#[test]
fn a_bad_clock_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    put_keys(&server, "clock", &["a".into()]);
    let d = data.to_str().unwrap();
    for (args, needle) in [
        (vec!["--at", "now", "--time", "wall"], "--time"),
        (vec!["--time", "event"], "--at"),
    ] {
        let out = ls(&data, &args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let out = run(&["state", "rebuild", "--data-dir", d, "--time", "event"]);
    assert!(!out.status.success());
    for (query, needle) in [
        ("at=now&time=wall", "'wall' is not a clock"),
        ("time=event", "needs at"),
    ] {
        let (status, v) = server.get(&format!("/v1/objects?bucket=clock&{query}"));
        assert_eq!(
            (status, v["error"]["field"].clone()),
            (400, json!("time")),
            "{v}"
        );
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
}
