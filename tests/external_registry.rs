//! `--schema-registry URL`: a node registers and resolves its schemas in an external
//! Confluent-compatible registry (here, another Tidemark's), so tools pointed at that registry
//! decode its records; its own registry paths say where the schemas are.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;

#[test]
fn a_node_uses_an_external_registry() {
    let scratch = tempfile::tempdir().unwrap();
    // The external registry: another node's built-in one, with unrelated schemas in it.
    let registry = Server::start(&scratch.path().join("registry"), &[]);
    for i in 0..3 {
        let schema = format!(
            r#"{{"type":"record","name":"Other{i}","fields":[{{"name":"a","type":"string"}}]}}"#
        );
        let (status, _) = registry.post(
            &format!("/subjects/other{i}-value/versions"),
            json!({ "schema": schema }).to_string(),
        );
        assert_eq!(status, 200);
    }
    let objects_id = registry.get("/subjects/objects-value/versions/latest").1["id"].clone();

    let backend = Backend::kafka();
    let Backend::Kafka(broker) = &backend else {
        unreachable!()
    };
    let data = scratch.path().join("node");
    let node = Server::start_on(&backend, &data, &["--schema-registry", &registry.url]);
    let (status, resp) = node.post(
        "/v1/mutations",
        json!({"mutations": [
            {"op": "put", "bucket": "ext", "key": "a", "size": 1, "metadata": {"x": "y"}},
            {"op": "tag", "bucket": "ext", "key": "a", "tags": {"t": "1"}}
        ]})
        .to_string(),
    );
    assert_eq!(status, 200, "{resp}");

    // The node's registry paths point to the external registry.
    let (status, e) = node.get("/subjects");
    assert_eq!(status, 404);
    assert!(
        e["message"].as_str().unwrap().contains(&registry.url),
        "{e}"
    );

    // Records carry the external registry's id, and nothing went to `_schemas`.
    let mut args = vec![
        "log",
        "tail",
        "--from-beginning",
        "--raw",
        "--data-dir",
        data.to_str().unwrap(),
        "--schema-registry",
        &registry.url,
    ];
    let log_args = backend.log_args();
    args.extend(log_args.iter().map(String::as_str));
    let raw = tidemark(&args);
    for line in raw.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = u32::from_str_radix(&v["value_hex"].as_str().unwrap()[2..10], 16).unwrap();
        assert_eq!(json!(id), objects_id);
    }
    let mut schemas_args = vec![
        "log",
        "tail",
        "--topic",
        "_schemas",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    schemas_args.extend(log_args.iter().map(String::as_str));
    let out = run(&schemas_args);
    assert!(String::from_utf8_lossy(&out.stderr).contains("topic '_schemas' does not exist"));

    // A Confluent client pointed at the external registry decodes them.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/consume_confluent.py");
    let out = Command::new("python3")
        .arg(script)
        .args([&broker.addr, &registry.url, "2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(decoded.len(), 2);
    assert!(
        decoded
            .iter()
            .all(|d| d["bucket"] == "ext" && d["key"] == "a")
    );
    node.stop();
    registry.stop();
}

#[test]
fn an_unreachable_registry_is_a_clear_error() {
    let scratch = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let out = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        scratch.path().to_str().unwrap(),
        "--schema-registry",
        &url,
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("schema registry {url}")),
        "{stderr}"
    );
}
