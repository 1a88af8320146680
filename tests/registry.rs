//! The built-in schema registry speaks Confluent's REST API: its paths, JSON shapes, error codes
//! and content type. Two independent clients read our events with it: the Rust
//! schema_registry_converter crate and Python's fastavro.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use serde_json::{Value, json};

const V1: &str = r#"{"type":"record","name":"T","fields":[{"name":"a","type":"string"}]}"#;
const V2: &str = r#"{"type":"record","name":"T","fields":[{"name":"a","type":"string"},{"name":"b","type":"int","default":0}]}"#;
const BAD: &str = r#"{"type":"record","name":"T","fields":[{"name":"a","type":"string"},{"name":"c","type":"int"}]}"#;

fn schema_body(s: &str) -> String {
    json!({ "schema": s }).to_string()
}

fn error_code(v: &Value) -> i64 {
    v["error_code"].as_i64().unwrap_or(-1)
}

fn start_with_events() -> (tempfile::TempDir, Server) {
    let scratch = tempfile::tempdir().unwrap();
    let server = Server::start(&scratch.path().join("data"), &[]);
    let body = json!({"mutations": [
        {"op": "put", "bucket": "photos", "key": "raw/a.jpg", "size": 2048, "content_type": "image/jpeg", "metadata": {"team": "ml", "camera": "x1"}},
        {"op": "tag", "bucket": "photos", "key": "raw/a.jpg", "tags": {"reviewed": "yes"}},
        {"op": "put", "bucket": "photos", "key": "raw/b.png", "size": 7, "event_time": "2026-11-22T14:00:00.123456Z"},
        {"op": "delete", "bucket": "photos", "key": "raw/b.png"}
    ]});
    let (status, resp) = server.post("/v1/mutations", body.to_string());
    assert_eq!(status, 200, "{resp}");
    (scratch, server)
}

#[test]
fn confluent_paths_shapes_and_error_codes() {
    let (_scratch, server) = start_with_events();
    let (status, subjects) = server.get("/subjects");
    assert_eq!(status, 200);
    assert_eq!(subjects, json!(["_config-value", "objects-value"]));
    // Every version of the event schema is registered; the latest is what events are written
    // with.
    assert_eq!(
        server.get("/subjects/objects-value/versions").1,
        json!([1, 2, 3])
    );
    let (status, latest) = server.get("/subjects/objects-value/versions/latest");
    assert_eq!(status, 200);
    assert_eq!(
        (latest["subject"].as_str(), latest["version"].as_i64()),
        (Some("objects-value"), Some(3))
    );
    let id = latest["id"].as_i64().unwrap();
    let schema: Value = serde_json::from_str(latest["schema"].as_str().unwrap()).unwrap();
    assert_eq!(schema["name"], "ObjectEvent");
    assert_eq!(
        server.get(&format!("/schemas/ids/{id}")).1["schema"],
        latest["schema"]
    );
    assert_eq!(server.get("/subjects/objects-value/versions/3").1, latest);
    assert_eq!(
        server.get(&format!("/schemas/ids/{id}/versions")).1,
        json!([{"subject": "objects-value", "version": 3}])
    );
    assert_eq!(
        server.get("/config").1,
        json!({"compatibilityLevel": "BACKWARD"})
    );

    // The content type Confluent clients expect.
    let resp = client()
        .get(format!("{}/subjects", server.url))
        .send()
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.schemaregistry.v1+json"
    );

    // Errors: Confluent codes, HTTP status from the code.
    let (status, e) = server.get("/subjects/nope/versions");
    assert_eq!((status, error_code(&e)), (404, 40401), "{e}");
    let (status, e) = server.get("/subjects/objects-value/versions/7");
    assert_eq!((status, error_code(&e)), (404, 40402), "{e}");
    let (status, e) = server.get("/subjects/objects-value/versions/first");
    assert_eq!((status, error_code(&e)), (422, 42202), "{e}");
    let (status, e) = server.get("/schemas/ids/999");
    assert_eq!((status, error_code(&e)), (404, 40403), "{e}");

    // Registration, idempotence, evolution, compatibility.
    let (status, r1) = server.post("/subjects/test-value/versions", schema_body(V1));
    assert_eq!(status, 200, "{r1}");
    assert_eq!(
        server
            .post("/subjects/test-value/versions", schema_body(V1))
            .1,
        r1,
        "same schema, same id"
    );
    let (_, r2) = server.post("/subjects/test-value/versions", schema_body(V2));
    assert_ne!(r2["id"], r1["id"]);
    let (status, e) = server.post("/subjects/test-value/versions", schema_body(BAD));
    assert_eq!((status, error_code(&e)), (409, 409), "{e}");
    assert!(e["message"].as_str().unwrap().contains("incompatible"));
    let (status, e) = server.post(
        "/subjects/test-value/versions",
        schema_body(r#"{"type":"recrod"}"#),
    );
    assert_eq!((status, error_code(&e)), (422, 42201), "{e}");
    let (status, e) = server.post("/subjects/test-value/versions", "{not json".to_string());
    assert_eq!((status, error_code(&e)), (422, 42201), "{e}");
    let (_, c) = server.post(
        "/compatibility/subjects/test-value/versions/latest",
        schema_body(V1),
    );
    assert_eq!(c, json!({"is_compatible": true}));
    let (_, c) = server.post(
        "/compatibility/subjects/test-value/versions/latest?verbose=true",
        schema_body(BAD),
    );
    assert_eq!(c["is_compatible"], false);
    assert!(!c["messages"].as_array().unwrap().is_empty());
    let (status, found) = server.post("/subjects/test-value", schema_body(V2));
    assert_eq!((status, found["version"].as_i64()), (200, Some(2)));
    let (status, e) = server.post("/subjects/test-value", schema_body(BAD));
    assert_eq!((status, error_code(&e)), (404, 40403), "{e}");

    // Registrations are events on _schemas: they survive a restart with the same ids.
    let data = server.data_dir.clone();
    server.stop();
    let server = Server::start(&data, &[]);
    assert_eq!(server.get("/subjects/test-value/versions").1, json!([1, 2]));
    assert_eq!(
        server.get("/subjects/objects-value/versions/latest").1["id"].as_i64(),
        Some(id)
    );
    server.stop();
}

#[test]
fn schema_registry_converter_decodes_our_records() {
    let (_scratch, server) = start_with_events();
    let raw = tidemark(&[
        "log",
        "tail",
        "--raw",
        "--from-beginning",
        "--data-dir",
        server.data_dir.to_str().unwrap(),
    ]);
    let records: Vec<Value> = raw
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 4);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let decoder = AvroDecoder::new(SrSettings::new(server.url.clone()));
    let mut keys = Vec::new();
    for rec in &records {
        let bytes = hex(rec["value_hex"].as_str().unwrap());
        let decoded = runtime
            .block_on(decoder.decode(Some(&bytes)))
            .expect("schema_registry_converter decodes");
        let apache_avro::types::Value::Record(fields) = decoded.value else {
            panic!("not a record")
        };
        let field = |n: &str| {
            fields
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(
            field("bucket"),
            apache_avro::types::Value::String("photos".into())
        );
        let apache_avro::types::Value::String(key) = field("key") else {
            panic!()
        };
        keys.push(key);
    }
    keys.sort();
    assert_eq!(keys, ["raw/a.jpg", "raw/a.jpg", "raw/b.png", "raw/b.png"]);
    server.stop();
}

#[test]
fn fastavro_decodes_our_records_with_schemas_from_our_registry() {
    let (_scratch, server) = start_with_events();
    let dir = server.data_dir.to_str().unwrap().to_string();
    let raw = tidemark(&[
        "log",
        "tail",
        "--raw",
        "--from-beginning",
        "--data-dir",
        &dir,
    ]);
    let ours: Vec<Value> = tidemark(&[
        "log",
        "tail",
        "--json",
        "--from-beginning",
        "--data-dir",
        &dir,
    ])
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/decode_fastavro.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(&server.url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed for this test");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(raw.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "fastavro decoder failed (needs `pip install fastavro`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(theirs.len(), ours.len());
    for (t, o) in theirs.iter().zip(&ours) {
        for f in [
            "event_id",
            "event_type",
            "bucket",
            "key",
            "sequence",
            "size",
            "metadata",
            "tags",
        ] {
            assert_eq!(t[f], o[f], "field {f}: fastavro {t} vs tidemark {o}");
        }
        assert_eq!(
            t["previous_sequence"],
            o["previous"]
                .get("sequence")
                .cloned()
                .unwrap_or(Value::Null)
        );
    }
    // Timestamps survive as microseconds.
    let put_b = theirs
        .iter()
        .find(|t| t["key"] == "raw/b.png" && t["event_type"] == "ObjectCreated:Put")
        .unwrap();
    assert_eq!(put_b["event_time_us"], json!(1_795_356_000_123_456i64));
    server.stop();
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
