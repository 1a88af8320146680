//! `--config FILE` (TOML) covers the log backend and every setting flags cover; flags override
//! the file, `TIDEMARK_*` environment variables override both.

mod common;

use common::*;
use serde_json::json;

fn batch(n: usize) -> String {
    let mutations: Vec<_> = (0..n)
        .map(|i| json!({"op": "put", "bucket": "conf", "key": format!("k{i}"), "size": 1}))
        .collect();
    json!({ "mutations": mutations }).to_string()
}

#[test]
fn file_flags_and_environment_in_that_order() {
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("tidemark.toml");
    std::fs::write(
        &file,
        "partitions = 2\nmax_batch = 3\nnode_id = \"from-file\"\nregion = \"file-region\"\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();

    // The file alone.
    let server = Server::start(&scratch.path().join("a"), &["--config", file]);
    assert_eq!(
        server.get("/v1/log").1["topics"]["objects"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(server.post("/v1/mutations", batch(4)).0, 413);
    let (status, resp) = server.post("/v1/mutations", batch(3));
    assert_eq!(status, 200, "{resp}");
    server.stop();
    let events = log_events(&Backend::Embedded, &scratch.path().join("a"));
    assert_eq!(
        (events[0]["node"].as_str(), events[0]["region"].as_str()),
        (Some("from-file"), Some("file-region"))
    );

    // A flag beats the file; the environment beats both.
    let server = Server::start_with_env(
        &Backend::Embedded,
        &scratch.path().join("b"),
        &["--config", file, "--max-batch", "5", "--partitions", "3"],
        &[("TIDEMARK_MAX_BATCH", "6")],
    );
    assert_eq!(
        server.get("/v1/log").1["topics"]["objects"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        server.post("/v1/mutations", batch(6)).0,
        200,
        "the environment's 6 wins"
    );
    assert_eq!(server.post("/v1/mutations", batch(7)).0, 413);
    server.stop();
}

#[test]
fn the_file_selects_kafka() {
    let backend = Backend::kafka();
    let Backend::Kafka(broker) = &backend else {
        unreachable!()
    };
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("tidemark.toml");
    let mut text = format!(
        "log = \"kafka\"\nkafka_brokers = \"{}\"\nkafka_linger_ms = 1\n[kafka_properties]\n",
        broker.addr
    );
    for (k, v) in TestBroker::producer_workaround() {
        text.push_str(&format!("\"{k}\" = \"{v}\"\n"));
    }
    std::fs::write(&file, text).unwrap();
    let data = scratch.path().join("data");
    let server = Server::start(&data, &["--config", file.to_str().unwrap()]);
    let (status, resp) = server.post("/v1/mutations", batch(3));
    assert_eq!(status, 200, "{resp}");
    // The events are on the broker: read them back through the Kafka log with the same file.
    let out = tidemark(&[
        "log",
        "tail",
        "--from-beginning",
        "--json",
        "--config",
        file.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(out.lines().count(), 3);
    assert!(
        !data.join("log/objects").exists(),
        "nothing in the embedded log"
    );
    server.stop();
}

#[test]
fn bad_config_files_are_named() {
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("bad.toml");
    std::fs::write(&file, "partitons = 2\n").unwrap();
    let out = run(&["serve", "--config", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("unknown key 'partitons'"),
        "{stderr}"
    );
    std::fs::write(&file, "partitions = \"many\"\n").unwrap();
    let out = run(&["serve", "--config", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--partitions") && stderr.contains("many"),
        "{stderr}"
    );
    let out = run(&[
        "serve",
        "--config",
        scratch.path().join("missing.toml").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("read config file"));
}

#[test]
fn the_example_file_is_valid() {
    let scratch = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/tidemark.toml");
    // Flags override the example's data_dir and listen address.
    let server = Server::start(&scratch.path().join("data"), &["--config", example]);
    assert_eq!(server.get("/healthz").0, 200);
    server.stop();
}
