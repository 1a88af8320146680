//! S3/MinIO event ingest and bucket sync, through a real server and the real CLI.
//!
//! Ingest: notification bodies shaped as MinIO's webhook and S3 send them become the right
//! events (read back with `tidemark log tail --json`); a redelivered body appends nothing; a
//! test event is ignored; bad bodies are refused by field and append nothing.
//!
//! Sync: a directory is reconciled into a bucket; after files are added, removed and changed
//! behind Tidemark's back, a sync makes the index equal the directory (keys, sizes, SHA-256),
//! a second sync and a dry run append nothing, and bad sources are refused clearly.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Events appended to `objects` so far (the sum of the partitions' end offsets).
fn log_end(server: &Server) -> u64 {
    let (status, v) = server.get("/v1/log");
    assert_eq!(status, 200, "{v}");
    v["topics"]["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["end"].as_u64().unwrap())
        .sum()
}

fn events(server: &Server) -> Vec<Value> {
    log_events(&Backend::Embedded, &server.data_dir)
}

fn minio_put(key: &str, sequencer: &str) -> Value {
    json!({
        "EventName": "s3:ObjectCreated:Put",
        "Key": format!("photos/{key}"),
        "Records": [{
            "eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "",
            "eventTime": "2026-11-22T14:00:01.000Z", "eventName": "s3:ObjectCreated:Put",
            "userIdentity": {"principalId": "minioadmin"},
            "requestParameters": {"principalId": "minioadmin", "region": "", "sourceIPAddress": "172.17.0.1"},
            "responseElements": {"x-amz-request-id": "17A1B2C3D4E5F6", "x-minio-origin-endpoint": "http://172.17.0.2:9000"},
            "s3": {
                "s3SchemaVersion": "1.0", "configurationId": "Config",
                "bucket": {"name": "photos", "ownerIdentity": {"principalId": "minioadmin"}, "arn": "arn:aws:s3:::photos"},
                "object": {
                    "key": key, "size": 5, "eTag": "5d41402abc4b2a76b9719d911017c592",
                    "contentType": "text/plain",
                    "userMetadata": {"X-Amz-Meta-Team": "ml", "content-type": "text/plain"},
                    "sequencer": sequencer
                }
            },
            "source": {"host": "172.17.0.1", "port": "", "userAgent": "MinIO (linux; amd64) minio-go/v7.0.70"}
        }]
    })
}

fn s3_record(event: &str, key: &str, sequencer: &str) -> Value {
    json!({
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "eu-west-1",
        "eventTime": "2026-11-22T14:05:00.250Z", "eventName": event,
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "203.0.113.7"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"},
        "s3": {
            "s3SchemaVersion": "1.0", "configurationId": "tidemark",
            "bucket": {"name": "photos", "ownerIdentity": {"principalId": "A3NL1KOZZKExample"}, "arn": "arn:aws:s3:::photos"},
            "object": {"key": key, "size": 2048, "eTag": "0123456789abcdef0123456789abcdef",
                       "versionId": "096fKKXTRTtl3on89fVO", "sequencer": sequencer}
        }
    })
}

fn post_events(server: &Server, body: &Value) -> Vec<Value> {
    let (status, v) = server.post("/v1/ingest/s3-events", body.to_string());
    assert_eq!(status, 200, "{v}");
    v["results"].as_array().unwrap().clone()
}

#[test]
fn notifications_become_events_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);

    // MinIO's webhook body: the key arrives URL-encoded.
    let results = post_events(
        &server,
        &minio_put("notes/hello+world%21.txt", "17A1B2C3D4E5F6AA"),
    );
    assert_eq!(results[0]["status"], "accepted", "{results:?}");
    // S3's: a copy, then a delete marker, in one body.
    let s3_body = json!({"Records": [
        s3_record("ObjectCreated:Copy", "raw/cat.jpg", "0055AED6DCD90281E5"),
        s3_record("ObjectRemoved:DeleteMarkerCreated", "raw/cat.jpg", "0055AED6DCD90281E6"),
    ]});
    let results = post_events(&server, &s3_body);
    assert!(
        results.iter().all(|r| r["status"] == "accepted"),
        "{results:?}"
    );
    let end = log_end(&server);
    assert_eq!(end, 3);

    let evs = events(&server);
    let by_type: BTreeMap<&str, &Value> = evs
        .iter()
        .map(|e| (e["event_type"].as_str().unwrap(), e))
        .collect();
    let put = by_type["ObjectCreated:Put"];
    assert_eq!(put["key"], "notes/hello world!.txt");
    assert_eq!(put["size"], 5);
    assert_eq!(put["etag"], "5d41402abc4b2a76b9719d911017c592");
    assert_eq!(put["content_type"], "text/plain");
    assert_eq!(put["metadata"], json!({"team": "ml"}));
    assert_eq!(put["requester"], "minioadmin");
    assert_eq!(put["source_ip"], "172.17.0.1");
    assert!(
        put["event_time"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-22T14:00:01"),
        "{put}"
    );
    let copy = by_type["ObjectCreated:Copy"];
    assert_eq!(
        (copy["key"].as_str(), copy["size"].as_i64()),
        (Some("raw/cat.jpg"), Some(2048))
    );
    assert_eq!(copy["version_id"], "096fKKXTRTtl3on89fVO");
    assert_eq!(copy["requester"], "AWS:AIDAEXAMPLE");
    assert_eq!(copy["request_id"], "C3D13FE58DE4C810");
    let marker = by_type["ObjectRemoved:DeleteMarkerCreated"];
    assert_eq!(marker["key"], "raw/cat.jpg");

    // Redelivered, in either shape: nothing appended, each record answered as a duplicate.
    let again = post_events(&server, &s3_body);
    assert!(
        again.iter().all(|r| r["status"] == "duplicate"),
        "{again:?}"
    );
    let again = post_events(
        &server,
        &minio_put("notes/hello+world%21.txt", "17A1B2C3D4E5F6AA"),
    );
    assert_eq!(again[0]["status"], "duplicate");
    // A test event, alone or as a record: acknowledged, ignored.
    let test = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-22T14:00:00Z", "Bucket": "photos", "RequestId": "X", "HostId": "Y"});
    assert_eq!(post_events(&server, &test)[0]["status"], "ignored");
    let test = json!({"Records": [{"eventName": "s3:TestEvent"}]});
    assert_eq!(post_events(&server, &test)[0]["status"], "ignored");
    assert_eq!(log_end(&server), end);

    // The dedup memory survives a restart.
    server.stop();
    let server = Server::start(&dir.path().join("data"), &[]);
    assert_eq!(post_events(&server, &s3_body)[0]["status"], "duplicate");
    assert_eq!(log_end(&server), end);
}

#[test]
fn bad_notifications_are_refused_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    for (body, field) in [
        ("{\"Records\": [", "body"),
        ("{\"records\": []}", "Records"),
    ] {
        let (status, v) = server.post("/v1/ingest/s3-events", body);
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{body}: {v}");
    }
    let mut no_bucket = s3_record("ObjectCreated:Put", "a.txt", "01");
    no_bucket["s3"].as_object_mut().unwrap().remove("bucket");
    let bad_key = s3_record("ObjectCreated:Put", "a%zz", "02");
    let body = json!({"Records": [no_bucket, bad_key]});
    let results = post_events(&server, &body);
    assert_eq!(results[0]["status"], "refused");
    assert_eq!(results[0]["error"]["field"], "Records[0].s3.bucket.name");
    assert_eq!(results[1]["error"]["field"], "Records[1].s3.object.key");
    assert!(
        results[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("escape"),
        "{results:?}"
    );
    assert_eq!(log_end(&server), 0);
}

fn write(root: &Path, key: &str, bytes: &[u8]) {
    let path = root.join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn sha256_hex(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// The directory as (key → (size, sha256)).
fn directory(root: &Path) -> BTreeMap<String, (u64, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u64, String)>) {
        for item in std::fs::read_dir(dir).unwrap() {
            let path = item.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let key = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                out.insert(key, (path.metadata().unwrap().len(), sha256_hex(&path)));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The bucket in the index as (key → (size, sha256)), once it has applied the log.
fn indexed(server: &Server, bucket: &str) -> BTreeMap<String, (u64, String)> {
    server.wait_caught_up();
    let (status, v) = server.get(&format!("/v1/objects?bucket={bucket}&limit=10000"));
    assert_eq!(status, 200, "{v}");
    v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["key"].as_str().unwrap().to_string(),
                (
                    o["size"].as_u64().unwrap(),
                    o["sha256"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

fn sync(server: &Server, source: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "sync",
        "--server",
        &server.url,
        "--bucket",
        "mirror",
        "--source",
        source.to_str().unwrap(),
    ];
    args.extend(extra);
    tidemark(&args)
}

#[test]
fn sync_reconciles_a_directory_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let store = dir.path().join("store");
    write(&store, "a.txt", b"alpha");
    write(&store, "docs/b.json", b"{\"b\":1}");
    write(&store, "docs/deep/c.png", &[7u8; 70_000]);
    write(&store, "keep.csv", b"x,y\n1,2\n");

    let out = sync(&server, &store, &["--json"]);
    let job: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["applied"]["created"], 4, "{job}");
    assert_eq!(log_end(&server), 4);
    assert_eq!(indexed(&server, "mirror"), directory(&store));
    let evs = events(&server);
    assert!(
        evs.iter().all(|e| e["event_type"] == "ObjectCreated:Put"
            && e["requester"] == "tidemark-sync"
            && e["request_id"] == job["id"]),
        "{evs:?}"
    );
    let png = evs.iter().find(|e| e["key"] == "docs/deep/c.png").unwrap();
    assert_eq!(png["content_type"], "image/png");
    assert_eq!(png["etag"].as_str().unwrap().len(), 32);

    // Behind Tidemark's back: one added, one removed, one rewritten.
    write(&store, "docs/new.md", b"# new");
    std::fs::remove_file(store.join("a.txt")).unwrap();
    write(&store, "docs/b.json", b"{\"b\":2}");
    let before = log_end(&server);

    // A dry run reports the counts and samples, appends nothing.
    let out = sync(&server, &store, &["--dry-run", "--json"]);
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        plan["planned"],
        json!({"created": 1, "updated": 1, "metadata": 0, "removed": 1}),
        "{plan}"
    );
    assert_eq!(plan["samples"]["removed"], json!(["a.txt"]));
    assert_eq!(log_end(&server), before);
    let text = sync(&server, &store, &["--dry-run"]);
    assert!(text.contains("removed") && text.contains("a.txt"), "{text}");

    let out = sync(&server, &store, &[]);
    assert!(
        out.contains("created") && out.contains("docs/new.md"),
        "{out}"
    );
    assert_eq!(log_end(&server), before + 3);
    assert_eq!(indexed(&server, "mirror"), directory(&store));
    let evs = events(&server);
    let last: Vec<(&str, &str)> = evs[evs.len() - 3..]
        .iter()
        .map(|e| {
            (
                e["event_type"].as_str().unwrap(),
                e["key"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        last.contains(&("ObjectRemoved:Delete", "a.txt")),
        "{last:?}"
    );

    // Nothing changed: nothing appended.
    let out = sync(&server, &store, &[]);
    assert!(out.contains("nothing to do"), "{out}");
    assert_eq!(log_end(&server), before + 3);
    let (status, v) = server.get("/v1/sync");
    assert_eq!(status, 200);
    assert_eq!(v["syncs"].as_array().unwrap().len(), 3, "{v}");
}

#[test]
fn sync_refuses_bad_sources_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let missing = dir.path().join("nope");
    for (source, needle) in [
        (missing.to_str().unwrap(), "is not a directory"),
        ("ftp://host/x", "neither a directory nor s3://"),
    ] {
        let out = run(&[
            "sync",
            "--server",
            &server.url,
            "--bucket",
            "mirror",
            "--source",
            source,
        ]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--source") && err.contains(needle),
            "{source}: {err}"
        );
    }
    let out = run(&[
        "sync",
        "--server",
        &server.url,
        "--bucket",
        "Bad!",
        "--source",
        "/tmp",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bucket"));
    assert_eq!(log_end(&server), 0);
    wait_for("no sync job", Duration::from_secs(1), || {
        let (_, v) = server.get("/v1/sync");
        (v["syncs"] == json!([])).then_some(()).ok_or(v.to_string())
    });
}
