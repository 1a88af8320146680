//! The index as of an instant: recorded with `state ls` at several moments of a randomized
//! workload, then rebuilt from the log with `state ls --at` and `state rebuild --at --into`,
//! which must give exactly what was recorded. Bad instants are refused by name.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn ls_at(data: &std::path::Path, at: &str) -> String {
    tidemark(&[
        "state",
        "ls",
        "--json",
        "--history",
        "--data-dir",
        data.to_str().unwrap(),
        "--at",
        at,
    ])
}

#[test]
fn the_index_at_an_instant_is_what_it_was_then() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let mut rng = fastrand::Rng::with_seed(21);
    let mut recorded: Vec<(String, String)> = Vec::new();
    let mut listed: Vec<Value> = Vec::new();
    for _ in 0..5 {
        let mutations: Vec<Value> = (0..400)
            .map(|_| random_mutation(&mut rng, "asof", 150))
            .collect();
        let (status, _) = server.post(
            "/v1/mutations",
            json!({ "mutations": mutations }).to_string(),
        );
        assert_eq!(status, 200);
        server.wait_caught_up();
        // Every event so far was appended before this instant, and none after it yet.
        std::thread::sleep(Duration::from_millis(5));
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        std::thread::sleep(Duration::from_millis(5));
        recorded.push((at, index_dump(&data)));
        listed.push(server.get("/v1/objects?bucket=asof&limit=10000").1["objects"].clone());
    }
    // More history after the last instant, which `--at` must leave out.
    let mutations: Vec<Value> = (0..400)
        .map(|_| random_mutation(&mut rng, "asof", 150))
        .collect();
    server.post(
        "/v1/mutations",
        json!({ "mutations": mutations }).to_string(),
    );
    for ((at, then), objects) in recorded.iter().zip(&listed) {
        assert_eq!(&ls_at(&data, at), then, "state ls --at {at}");
        // Through HTTP too (`+` in the offset must be escaped in a query string).
        let (status, v) = server.get(&format!(
            "/v1/objects?bucket=asof&limit=10000&at={}",
            at.replace('+', "%2B")
        ));
        assert_eq!(status, 200, "{v}");
        assert_eq!(&v["objects"], objects, "GET /v1/objects?at={at}");
    }
    // The same as an index of its own, readable with `state ls --data-dir`.
    let (at, then) = &recorded[2];
    let into = dir.path().join("at-2");
    tidemark(&[
        "state",
        "rebuild",
        "--data-dir",
        data.to_str().unwrap(),
        "--at",
        at,
        "--into",
        into.to_str().unwrap(),
    ]);
    assert_eq!(&index_dump(&into), then);
    // Before the first event: nothing.
    assert_eq!(ls_at(&data, "2001-01-01T00:00:00Z"), "");
}

#[test]
fn bad_instants_are_refused_by_name_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    put_keys(&server, "asof", &["a".into()]);
    let d = data.to_str().unwrap();
    for (args, needle) in [
        (
            vec![
                "state",
                "ls",
                "--data-dir",
                d,
                "--at",
                "2999-01-01T00:00:00Z",
            ],
            "in the future",
        ),
        (
            vec!["state", "ls", "--data-dir", d, "--at", "yesterday"],
            "--at",
        ),
        (
            vec![
                "state",
                "rebuild",
                "--data-dir",
                d,
                "--at",
                "2020-01-01T00:00:00Z",
            ],
            "--into",
        ),
    ] {
        let out = run(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    for (query, needle) in [
        ("at=2999-01-01T00:00:00Z", "in the future"),
        ("at=noon", ""),
    ] {
        let (status, v) = server.get(&format!("/v1/objects?bucket=asof&{query}"));
        assert_eq!(
            (status, v["error"]["field"].clone()),
            (400, json!("at")),
            "{v}"
        );
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
    let (status, v) = server.get("/v1/objects?bucket=asof");
    assert_eq!(status, 200);
    assert_eq!(v["objects"].as_array().unwrap().len(), 1);
}
