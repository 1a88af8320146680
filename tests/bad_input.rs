//! Bad input to `POST /v1/mutations` gets a 4xx naming the problem, and leaves the log and the
//! index exactly as they were, on either log.

mod common;

use common::*;
use serde_json::{Value, json};

fn one(m: Value) -> String {
    json!({ "mutations": [m] }).to_string()
}

#[test]
fn every_kind_of_bad_input_is_refused_and_nothing_changes() {
    bad_input_changes_nothing(&Backend::Embedded);
}

#[test]
fn every_kind_of_bad_input_is_refused_and_nothing_changes_on_kafka() {
    bad_input_changes_nothing(&Backend::kafka());
}

fn bad_input_changes_nothing(backend: &Backend) {
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let server = Server::start_on(
        backend,
        &data,
        &["--max-body-bytes", "65536", "--max-batch", "100"],
    );
    let (status, _) = server.post(
        "/v1/mutations",
        one(json!({"op": "put", "bucket": "photos", "key": "keep.jpg", "size": 5})),
    );
    assert_eq!(status, 200);
    server.wait_caught_up();
    let before_log = server.get("/v1/log").1;
    let before_index = index_dump(&data);

    let long_key = "k".repeat(1025);
    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({"op": "untag", "bucket": "photos", "key": format!("k{i}")}))
        .collect();
    let cases: Vec<(&str, String, u16, &str, &str)> = vec![
        ("malformed JSON", "{\"mutations\": [".into(), 400, "body", "malformed JSON"),
        ("not an object", "[1,2]".into(), 400, "body", "must be a JSON object"),
        ("empty body", String::new(), 400, "body", "malformed JSON"),
        ("unknown op", one(json!({"op": "rename", "bucket": "photos", "key": "a"})), 400, "mutations[0].op", "unknown op 'rename'"),
        ("missing op", one(json!({"bucket": "photos", "key": "a"})), 400, "mutations[0].op", "required"),
        ("missing bucket", one(json!({"op": "put", "key": "a", "size": 1})), 400, "mutations[0].bucket", "required"),
        ("invalid bucket", one(json!({"op": "put", "bucket": "Photos_!", "key": "a", "size": 1})), 400, "mutations[0].bucket", "not a valid bucket name"),
        ("empty key", one(json!({"op": "put", "bucket": "photos", "key": "", "size": 1})), 400, "mutations[0].key", "must not be empty"),
        ("key over 1024 bytes", one(json!({"op": "put", "bucket": "photos", "key": long_key, "size": 1})), 400, "mutations[0].key", "1024"),
        ("negative size", one(json!({"op": "put", "bucket": "photos", "key": "a", "size": -1})), 400, "mutations[0].size", "got -1"),
        ("bad timestamp", one(json!({"op": "put", "bucket": "photos", "key": "a", "size": 1, "event_time": "2026-13-45T99:00:00Z"})), 400, "mutations[0].event_time", "RFC 3339"),
        ("unknown field", one(json!({"op": "put", "bucket": "photos", "key": "a", "size": 1, "sise": 2})), 400, "mutations[0].sise", "unknown field"),
        ("field not valid for op", one(json!({"op": "delete", "bucket": "photos", "key": "keep.jpg", "tags": {}})), 400, "mutations[0].tags", "not allowed"),
        ("body over the limit", format!("{{\"mutations\": [], \"pad\": \"{}\"}}", "x".repeat(70_000)), 413, "body", "limit"),
        ("more than the max batch", json!({ "mutations": too_many }).to_string(), 413, "mutations", "limit of 100"),
        ("empty batch", json!({"mutations": []}).to_string(), 400, "mutations", "at least one"),
        // One bad mutation rejects the whole batch, including the good one before it.
        ("bad item in a good batch", json!({"mutations": [{"op": "put", "bucket": "photos", "key": "new.jpg", "size": 1}, {"op": "put", "bucket": "photos", "key": "x", "size": -9}]}).to_string(), 400, "mutations[1].size", "got -9"),
    ];
    for (name, body, status, field, needle) in cases {
        let (got, resp) = server.post("/v1/mutations", body);
        assert_eq!(got, status, "{name}: {resp}");
        assert_eq!(resp["error"]["field"], field, "{name}: {resp}");
        let message = resp["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{name}: '{message}' does not mention '{needle}'"
        );
    }

    // State errors are per mutation, with 200 for the batch: nothing is written for them.
    let (status, resp) = server.post(
        "/v1/mutations",
        one(json!({"op": "tag", "bucket": "photos", "key": "missing.jpg", "tags": {"a": "b"}})),
    );
    assert_eq!(status, 200);
    assert_eq!(resp["results"][0]["error"]["code"], "not_found", "{resp}");
    let (status, resp) = server.post(
        "/v1/mutations",
        one(json!({"op": "delete", "bucket": "photos", "key": "keep.jpg", "version_id": "v9"})),
    );
    assert_eq!(status, 200);
    assert_eq!(resp["results"][0]["error"]["code"], "conflict", "{resp}");

    // Bad queries name their parameter too.
    let (status, resp) = server.get("/v1/objects?bucket=photos&limit=0");
    assert_eq!(
        (status, resp["error"]["field"].as_str()),
        (400, Some("limit")),
        "{resp}"
    );
    let (status, resp) = server.get("/v1/objects?bucket=photos&colour=red");
    assert_eq!(
        (status, resp["error"]["field"].as_str()),
        (400, Some("query")),
        "{resp}"
    );
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour")
    );

    server.wait_caught_up();
    assert_eq!(server.get("/v1/log").1, before_log, "the log is unchanged");
    assert_eq!(index_dump(&data), before_index, "the index is unchanged");
    server.stop();
}
