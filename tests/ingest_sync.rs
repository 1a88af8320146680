//! S3/MinIO event ingest and bucket sync, through a real server and the real CLI.
//!
//! Ingest: notification bodies shaped as MinIO's webhook and S3 send them become the right
//! events (read back with `tidemark log tail --json`); a redelivered body appends nothing; a
//! test event is ignored; bad bodies are refused by field and append nothing.
//!
//! Sync: a directory is reconciled into a bucket; after files are added, removed and changed
//! behind Tidemark's back, a sync makes the index equal the directory (keys, sizes, SHA-256),
//! a second sync and a dry run append nothing, and bad sources are refused clearly.
//!
//! Sync from S3: a bucket on moto's S3 server, written and changed with boto3, is reconciled
//! the same way (keys, sizes, ETags, content types, user metadata); a missing bucket, an
//! endpoint nobody answers at and a wrong secret fail the job with a message naming the
//! source and the cause, and append nothing.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::moto::Moto;
use common::*;
use serde_json::{Value, json};
use std::process::Output;

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

/// The bucket in the index as moto's listing shows a bucket: key → size, ETag, content type,
/// user metadata.
fn indexed_s3(server: &Server, bucket: &str) -> Value {
    server.wait_caught_up();
    let (status, v) = server.get(&format!("/v1/objects?bucket={bucket}&limit=10000"));
    assert_eq!(status, 200, "{v}");
    v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let etag = o["etag"].as_str().unwrap().trim_matches('"');
            let described = json!({"size": o["size"], "etag": etag,
                "content_type": o["content_type"], "metadata": o["metadata"]});
            (o["key"].as_str().unwrap().to_string(), described)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn store_listing(moto: &Moto, bucket: &str) -> Value {
    serde_json::from_str(&moto.script("s3_source.py", "ls", &[bucket])).unwrap()
}

fn change_store(moto: &Moto, bucket: &str, ops: Value) {
    moto.script("s3_source.py", "apply", &[bucket, &ops.to_string()]);
}

/// moto takes any secret; this one is looked for in every answer, where it must not be.
const SECRET: &str = "s3cr3t-never-shown";

/// `tidemark sync --source URL` against moto's endpoint, with `extra` flags; the output.
fn sync_s3(server: &Server, moto_endpoint: &str, url: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "sync",
        "--server",
        &server.url,
        "--source",
        url,
        "--endpoint",
        moto_endpoint,
        "--access-key-id",
        "test",
        "--secret-access-key",
        SECRET,
    ];
    args.extend(extra);
    run(&args)
}

fn sync_s3_job(server: &Server, moto: &Moto, url: &str, extra: &[&str]) -> Value {
    let mut args = extra.to_vec();
    args.push("--json");
    let out = sync_s3(server, &moto.endpoint, url, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn sync_reconciles_an_s3_bucket_exactly() {
    let moto = Moto::start();
    moto.script("s3_source.py", "mkbucket", &["bkt"]);
    change_store(
        &moto,
        "bkt",
        json!([
            {"put": "a.txt", "body": "alpha", "content_type": "text/plain",
             "metadata": {"team": "ml", "run": "7"}},
            {"put": "docs/b.json", "body": "{\"b\":1}", "content_type": "application/json"},
            {"put": "docs/c.bin", "size": 70000},
            {"put": "keep/z.csv", "body": "x,y\n1,2\n", "content_type": "text/csv"},
            {"multipart": "big.bin", "parts": 2},
        ]),
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);

    // The index bucket is the store's by default; keys are the store's keys.
    let job = sync_s3_job(&server, &moto, "s3://bkt", &[]);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["applied"]["created"], 5, "{job}");
    assert_eq!(job["spec"]["source"], "s3://bkt", "{job}");
    // The secret is in no answer: not the job's, not the listing of jobs.
    let (_, jobs) = server.get("/v1/sync");
    assert!(!format!("{job}{jobs}").contains(SECRET), "{job} {jobs}");
    assert_eq!(job["spec"]["s3"]["access_key_id"], "test", "{job}");
    assert_eq!(log_end(&server), 5);
    let store = store_listing(&moto, "bkt");
    assert_eq!(indexed_s3(&server, "bkt"), store);
    assert!(
        store["big.bin"]["etag"].as_str().unwrap().ends_with("-2"),
        "{store}"
    );
    assert_eq!(
        store["a.txt"]["metadata"],
        json!({"team": "ml", "run": "7"})
    );

    // Behind Tidemark's back: one added, one removed, one rewritten, one re-described.
    change_store(
        &moto,
        "bkt",
        json!([
            {"put": "docs/new.md", "body": "# new", "content_type": "text/markdown"},
            {"delete": "a.txt"},
            {"put": "docs/b.json", "body": "{\"b\":2}", "content_type": "application/json"},
            {"replace_metadata": "keep/z.csv", "content_type": "text/plain",
             "metadata": {"owner": "ops"}},
        ]),
    );
    let before = log_end(&server);
    let job = sync_s3_job(&server, &moto, "s3://bkt", &[]);
    assert_eq!(
        job["result"]["applied"],
        json!({"created": 1, "updated": 1, "metadata": 1, "removed": 1}),
        "{job}"
    );
    assert_eq!(log_end(&server), before + 4);
    assert_eq!(indexed_s3(&server, "bkt"), store_listing(&moto, "bkt"));
    let evs = events(&server);
    let mut last: Vec<(&str, &str)> = evs
        .iter()
        .filter(|e| e["request_id"] == job["id"])
        .map(|e| {
            (
                e["key"].as_str().unwrap(),
                e["event_type"].as_str().unwrap(),
            )
        })
        .collect();
    last.sort();
    assert_eq!(
        last,
        [
            ("a.txt", "ObjectRemoved:Delete"),
            ("docs/b.json", "ObjectCreated:Put"),
            ("docs/new.md", "ObjectCreated:Put"),
            ("keep/z.csv", "ObjectMetadata:Update"),
        ],
        "{evs:?}"
    );

    // Nothing changed: nothing appended.
    let out = sync_s3(&server, &moto.endpoint, "s3://bkt", &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("nothing to do"), "{text}");
    assert_eq!(log_end(&server), before + 4);

    // A prefix in the URL narrows both sides; keys stay the store's keys.
    let job = sync_s3_job(&server, &moto, "s3://bkt/docs/", &["--bucket", "docs-only"]);
    assert_eq!(job["result"]["applied"]["created"], 3, "{job}");
    let docs = indexed_s3(&server, "docs-only");
    let keys: Vec<&String> = docs.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["docs/b.json", "docs/c.bin", "docs/new.md"]);
}

#[test]
fn sync_from_s3_fails_clearly_and_appends_nothing() {
    let moto = Moto::start();
    moto.script("s3_source.py", "mkbucket", &["bkt"]);
    change_store(&moto, "bkt", json!([{"put": "a.txt", "body": "alpha"}]));
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let failure = |endpoint: &str, url: &str, secret: &str| -> String {
        let out = run(&[
            "sync",
            "--server",
            &server.url,
            "--source",
            url,
            "--endpoint",
            endpoint,
            "--access-key-id",
            "test",
            "--secret-access-key",
            secret,
        ]);
        assert!(!out.status.success(), "{url} at {endpoint} should fail");
        String::from_utf8_lossy(&out.stderr).to_string()
    };

    let err = failure(&moto.endpoint, "s3://nope", "test");
    assert!(
        err.contains("s3://nope") && err.contains("bucket 'nope' does not exist"),
        "{err}"
    );
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let err = failure(&nobody, "s3://bkt", "test");
    assert!(
        err.contains("s3://bkt") && err.contains("does not answer") && err.contains(&nobody),
        "{err}"
    );
    // A reference the server cannot resolve is refused before any job starts.
    let err = failure(&moto.endpoint, "s3://bkt", "env:TIDEMARK_TEST_NO_SUCH_VAR");
    assert!(
        err.contains("--secret-access-key") && err.contains("TIDEMARK_TEST_NO_SUCH_VAR"),
        "{err}"
    );

    // S3 flags with a directory, and S3 fields the request does not know, are refused.
    let out = run(&[
        "sync",
        "--server",
        &server.url,
        "--bucket",
        "mirror",
        "--source",
        dir.path().to_str().unwrap(),
        "--endpoint",
        &moto.endpoint,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--endpoint is only for an S3 source"),
        "{err}"
    );
    for body in [
        json!({"bucket": "m", "source": dir.path(), "s3": {"region": "us-east-1"}}),
        json!({"source": "s3://bkt", "s3": {"endpoint": moto.endpoint, "token": "x"}}),
    ] {
        let (status, v) = server.post("/v1/sync", body.to_string());
        assert_eq!(status, 400, "{body}: {v}");
    }
    assert_eq!(log_end(&server), 0);

    // moto checking keys refuses a wrong secret: 403, named as such.
    let keyed = Moto::start_checking_keys();
    let key: Value =
        serde_json::from_str(&keyed.script("s3_source.py", "auth", &["keyed"])).unwrap();
    let out = run(&[
        "sync",
        "--server",
        &server.url,
        "--source",
        "s3://keyed",
        "--endpoint",
        &keyed.endpoint,
        "--access-key-id",
        key["id"].as_str().unwrap(),
        "--secret-access-key",
        "not-the-secret",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("s3://keyed") && err.contains("access denied (403)"),
        "{err}"
    );
    assert!(!err.contains("not-the-secret"), "{err}");
    assert_eq!(log_end(&server), 0);
}
