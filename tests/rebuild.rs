//! Rebuild equality: after a randomized workload of 100,000 mutations over 1,000 keys (puts,
//! overwrites, deletes, tag and metadata changes) through the HTTP API, the live index equals
//! an index rebuilt from the log, both while the server runs and after a restart; on the
//! embedded log and on Kafka.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::json;

#[test]
fn rebuilt_index_equals_live_index_after_100k_mutations() {
    rebuild_equality(&Backend::Embedded);
}

#[test]
fn rebuilt_index_equals_live_index_after_100k_mutations_on_kafka() {
    rebuild_equality(&Backend::kafka());
}

fn rebuild_equality(backend: &Backend) {
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let server = Server::start_on(backend, &data, &[]);
    let mut rng = fastrand::Rng::with_seed(42);
    let mut acked = 0usize;
    let mut refused = 0usize;
    for _ in 0..100 {
        let mutations: Vec<_> = (0..1000)
            .map(|_| random_mutation(&mut rng, "photos", 250))
            .collect();
        let (status, resp) = server.post(
            "/v1/mutations",
            json!({ "mutations": mutations }).to_string(),
        );
        assert_eq!(status, 200, "{resp}");
        for r in resp["results"].as_array().unwrap() {
            if r.get("event_id").is_some() {
                acked += 1;
            } else {
                // Only state errors are expected: a change to an object that does not exist.
                assert_eq!(r["error"]["code"], "not_found", "{r}");
                refused += 1;
            }
        }
    }
    assert_eq!(acked + refused, 100_000);
    assert!(acked > 80_000, "{acked} acknowledged");
    server.wait_caught_up();

    let (_, log) = server.get("/v1/log");
    let in_log: u64 = log["topics"]["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["end"].as_u64().unwrap())
        .sum();
    assert_eq!(
        in_log as usize, acked,
        "one event per acknowledged mutation"
    );

    let live = index_dump(&data);
    let keys = live.lines().count();
    assert!(keys > 500, "{keys} objects exist");
    assert_eq!(
        live,
        rebuilt_dump(backend, &data, scratch.path()),
        "rebuild equals the live index"
    );

    // The live index agrees with the last event of each key in the log.
    let mut last = HashMap::new();
    for e in log_events(backend, &data) {
        last.insert(e["key"].as_str().unwrap().to_string(), e);
    }
    let existing = last
        .values()
        .filter(|e| e["event_type"] != "ObjectRemoved:Delete")
        .count();
    assert_eq!(existing, keys);
    let (status, page) = server.get("/v1/objects?bucket=photos&prefix=dir1/&limit=10000");
    assert_eq!(status, 200);
    for o in page["objects"].as_array().unwrap() {
        let e = &last[o["key"].as_str().unwrap()];
        assert_eq!(
            (&o["sequence"], &o["size"], &o["tags"], &o["metadata"]),
            (&e["sequence"], &e["size"], &e["tags"], &e["metadata"])
        );
    }

    // After a restart (and an in-place rebuild with the server stopped) nothing changes.
    server.stop();
    let restarted = Server::start_on(backend, &data, &[]);
    restarted.wait_caught_up();
    assert_eq!(index_dump(&data), live);
    restarted.stop();
    let mut args = vec!["state", "rebuild", "--data-dir", data.to_str().unwrap()];
    let log_args = backend.log_args();
    args.extend(log_args.iter().map(String::as_str));
    tidemark(&args);
    assert_eq!(index_dump(&data), live);
}
