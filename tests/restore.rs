//! Content and restore, through a real server and the real CLI: objects with real bytes are
//! created, overwritten, tagged, given metadata and deleted; after an instant T more changes
//! follow; `tidemark restore --at T` must bring back exactly the objects and the bytes of T,
//! with every compensating event naming the job, and a second restore must do nothing.
//! Content that is gone is reported per key; identical content is stored once; bad input is
//! refused by name and writes nothing.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const BUCKET: &str = "docs";

/// `PUT /v1/content`: the answer, which must be 200.
fn put(server: &Server, key: &str, bytes: &[u8], headers: &[(&str, &str)]) -> Value {
    let (status, v) = try_put(server, BUCKET, key, bytes.to_vec(), headers);
    assert_eq!(status, 200, "PUT {key}: {v}");
    v
}

fn try_put(
    server: &Server,
    bucket: &str,
    key: &str,
    bytes: impl Into<reqwest::blocking::Body>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut req = client().put(format!("{}/v1/content/{bucket}/{key}", server.url));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.body(bytes).send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

/// `GET /v1/content`: status, headers, bytes.
fn get(server: &Server, key: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let resp = client()
        .get(format!("{}/v1/content/{BUCKET}/{key}", server.url))
        .send()
        .unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, headers, resp.bytes().unwrap().to_vec())
}

fn mutate(server: &Server, mutation: Value) {
    let mut m = mutation;
    m["bucket"] = BUCKET.into();
    ingest(server, vec![m]);
}

/// The bucket's objects as a user sees them (no versions, sequences or times).
fn visible(server: &Server) -> BTreeMap<String, Value> {
    let (status, v) = server.get(&format!("/v1/objects?bucket={BUCKET}&limit=10000"));
    assert_eq!(status, 200, "{v}");
    v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let fields = [
                "size",
                "etag",
                "sha256",
                "content_type",
                "metadata",
                "tags",
                "storage_class",
            ];
            let seen: serde_json::Map<String, Value> = fields
                .iter()
                .map(|f| (f.to_string(), o[*f].clone()))
                .collect();
            (o["key"].as_str().unwrap().to_string(), Value::Object(seen))
        })
        .collect()
}

/// Each object's bytes, or the status it answered.
fn contents(server: &Server, keys: impl Iterator<Item = String>) -> BTreeMap<String, Value> {
    keys.map(|k| {
        let (status, headers, bytes) = get(server, &k);
        let seen = match status {
            200 => json!({
                "bytes": String::from_utf8(bytes).unwrap(),
                "sha256": headers["x-tidemark-sha256"].to_str().unwrap(),
            }),
            other => json!(other),
        };
        (k, seen)
    })
    .collect()
}

/// The object topic's partitions (offsets, bytes): unchanged exactly when nothing was appended.
fn log_state(server: &Server) -> Value {
    let (status, v) = server.get("/v1/log");
    assert_eq!(status, 200, "{v}");
    v["topics"]["objects"].clone()
}

fn instant() -> String {
    std::thread::sleep(Duration::from_millis(5));
    let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    std::thread::sleep(Duration::from_millis(5));
    t
}

fn restore_cli(server: &Server, at: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "restore",
        "--server",
        &server.url,
        "--bucket",
        BUCKET,
        "--at",
        at,
    ];
    args.extend(extra);
    tidemark(&args)
}

fn dry_run(server: &Server, at: &str) -> Value {
    serde_json::from_str(&restore_cli(server, at, &["--dry-run", "--json"])).unwrap()
}

/// Files holding content under the data directory: a blob's own file, or a pack file that is
/// not empty (small content is packed).
fn blob_files(data: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(data.join("blobs")).unwrap() {
        let dir = dir.unwrap().path();
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            let packed = dir.ends_with("packs");
            if !packed
                || (f.extension().is_some_and(|e| e == "pack") && f.metadata().unwrap().len() > 0)
            {
                out.push(f);
            }
        }
    }
    out
}

fn uploads_in_progress(data: &Path) -> usize {
    std::fs::read_dir(data.join("blobs").join("tmp"))
        .unwrap()
        .count()
}

#[test]
fn restore_brings_back_the_objects_and_bytes_of_an_instant() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    put(
        &server,
        "a.txt",
        b"alpha one",
        &[
            ("content-type", "text/plain"),
            ("x-tidemark-meta-team", "ml"),
            ("x-tidemark-tagging", "stage=raw&owner=ann%20b"),
        ],
    );
    put(&server, "b.txt", b"bravo one", &[]);
    let b2 = put(&server, "b.txt", b"bravo two", &[]);
    put(&server, "c.txt", b"charlie", &[]);
    mutate(
        &server,
        json!({"op": "tag", "key": "c.txt", "tags": {"x": "1"}}),
    );
    mutate(
        &server,
        json!({"op": "metadata", "key": "c.txt", "metadata": {"owner": "cy"}}),
    );
    put(&server, "d.txt", b"delta", &[]);
    mutate(&server, json!({"op": "delete", "key": "d.txt"}));
    for (key, bytes) in [("e.txt", "echo"), ("f.txt", "foxtrot"), ("g.txt", "golf")] {
        put(
            &server,
            key,
            bytes.as_bytes(),
            &[("x-tidemark-meta-n", key)],
        );
    }
    // Described, never uploaded: restored as the metadata it always was.
    mutate(
        &server,
        json!({"op": "put", "key": "m.bin", "size": 10, "version_id": "ext-1"}),
    );
    server.wait_caught_up();
    let t = instant();
    let then = visible(&server);
    let then_bytes = contents(&server, then.keys().cloned());
    assert_eq!(then_bytes["b.txt"]["bytes"], "bravo two");
    assert_eq!(then_bytes["b.txt"]["sha256"], b2["sha256"]);
    assert_eq!(then_bytes["m.bin"], 410);
    assert!(then.contains_key("a.txt") && !then.contains_key("d.txt"));

    // After T: overwrite, delete, create, retag, untag, new metadata, a deleted key back.
    let a2 = put(
        &server,
        "a.txt",
        b"alpha TWO",
        &[("content-type", "text/markdown")],
    );
    mutate(&server, json!({"op": "delete", "key": "e.txt"}));
    put(&server, "n.txt", b"new since", &[]);
    mutate(
        &server,
        json!({"op": "tag", "key": "f.txt", "tags": {"stage": "late"}}),
    );
    mutate(&server, json!({"op": "untag", "key": "c.txt"}));
    mutate(
        &server,
        json!({"op": "metadata", "key": "g.txt", "metadata": {"n": "changed"}}),
    );
    put(&server, "d.txt", b"delta again", &[]);
    mutate(&server, json!({"op": "delete", "key": "m.bin"}));
    server.wait_caught_up();
    assert_ne!(visible(&server), then);

    // The plan, without writing anything.
    let before = log_state(&server);
    let plan = dry_run(&server, &t);
    assert_eq!(
        plan["counts"],
        json!({"recreate": 2, "revert": 1, "delete": 2, "metadata": 1, "tags": 2, "unavailable": 0}),
        "{plan}"
    );
    assert_eq!(plan["samples"]["recreate"], json!(["e.txt", "m.bin"]));
    assert_eq!(plan["samples"]["delete"], json!(["d.txt", "n.txt"]));
    let table = restore_cli(&server, &t, &["--dry-run"]);
    assert_eq!(plan["objects"], 8, "{plan}");
    assert!(table.contains("8 objects to change"), "{table}");
    assert!(
        table.contains("a.txt") && table.contains("n.txt"),
        "{table}"
    );
    assert_eq!(log_state(&server), before, "a dry run appends nothing");

    // The restore, followed by the CLI to the end.
    let job: Value = serde_json::from_str(&restore_cli(&server, &t, &["--json"])).unwrap();
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["kind"], "restore");
    assert_eq!(job["result"]["restored_objects"], 8, "{job}");
    assert_eq!(
        job["result"]["done"],
        plan["counts"]
            .as_object()
            .map(|c| {
                let mut c = c.clone();
                c.remove("unavailable");
                Value::Object(c)
            })
            .unwrap()
    );
    let job_id = job["id"].as_str().unwrap();
    server.wait_caught_up();
    assert_eq!(visible(&server), then, "the index is what it was at T");
    assert_eq!(
        contents(&server, then.keys().cloned()),
        then_bytes,
        "the bytes are what they were at T"
    );
    assert_eq!(get(&server, "n.txt").0, 404);
    // Every compensating event names the job; nothing else does.
    let events = log_events(&Backend::Embedded, &data);
    let by_job: Vec<&Value> = events
        .iter()
        .filter(|e| e["request_id"] == job_id)
        .collect();
    assert_eq!(by_job.len(), 8, "one event per compensating mutation");
    assert!(by_job.iter().all(|e| e["requester"] == "tidemark-restore"));
    let restored: Vec<&Value> = events
        .iter()
        .filter(|e| e["requester"] == "tidemark-restore")
        .collect();
    assert_eq!(restored.len(), by_job.len());
    // The reverted version is a new version of the old bytes.
    let a = by_job.iter().find(|e| e["key"] == "a.txt").unwrap();
    assert_eq!(a["sha256"], then["a.txt"]["sha256"]);
    assert_ne!(a["version_id"], a2["version_id"]);

    // A second restore to T plans nothing and appends nothing.
    let before = log_state(&server);
    let again = dry_run(&server, &t);
    assert_eq!(again["objects"], 0, "{again}");
    let job: Value = serde_json::from_str(&restore_cli(&server, &t, &["--json"])).unwrap();
    assert_eq!(
        (job["state"].clone(), job["progress"]["total"].clone()),
        (json!("succeeded"), json!(0))
    );
    assert_eq!(log_state(&server), before, "a second restore is a no-op");
    let (status, list) = server.get("/v1/restores");
    assert_eq!(status, 200);
    assert_eq!(list["restores"].as_array().unwrap().len(), 2);
}

#[test]
fn content_no_longer_held_is_reported_and_identical_content_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &["--blob-gc-grace-secs", "0", "--blob-gc-interval-secs", "0"],
    );
    // Larger than the most that is packed: each content in a file of its own.
    let same = [b"the same bytes".as_slice(), &[b'.'; 70_000]].concat();
    let vanishing = [b"about to vanish".as_slice(), &[b'.'; 70_000]].concat();
    let one = put(&server, "one.txt", &same, &[]);
    let two = put(&server, "two.txt", &same, &[]);
    assert_eq!(one["sha256"], two["sha256"]);
    assert_eq!(one["etag"], two["etag"]);
    assert_eq!(blob_files(&data).len(), 1, "identical content is one blob");
    let lost = put(&server, "lost.txt", &vanishing, &[]);
    assert_eq!(blob_files(&data).len(), 2);
    server.wait_caught_up();
    let t = instant();
    mutate(&server, json!({"op": "delete", "key": "one.txt"}));
    mutate(&server, json!({"op": "delete", "key": "lost.txt"}));
    let sha = lost["sha256"].as_str().unwrap();
    std::fs::remove_file(data.join("blobs").join(&sha[..2]).join(sha)).unwrap();
    server.wait_caught_up();

    let plan = dry_run(&server, &t);
    assert_eq!(plan["counts"]["recreate"], 1, "{plan}");
    assert_eq!(plan["counts"]["unavailable"], 1, "{plan}");
    assert_eq!(plan["unavailable"][0]["key"], "lost.txt");
    assert_eq!(plan["unavailable"][0]["sha256"], sha);
    assert!(
        plan["unavailable"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("no longer held"),
        "{plan}"
    );
    let table = restore_cli(&server, &t, &["--dry-run"]);
    assert!(
        table.contains("content unavailable") && table.contains("lost.txt"),
        "{table}"
    );

    let job: Value = serde_json::from_str(&restore_cli(&server, &t, &["--json"])).unwrap();
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["unavailable"], 1);
    assert_eq!(job["result"]["unavailable_keys"][0]["key"], "lost.txt");
    server.wait_caught_up();
    let (status, _, bytes) = get(&server, "one.txt");
    assert_eq!((status, bytes.as_slice()), (200, same.as_slice()));
    assert_eq!(
        get(&server, "lost.txt").0,
        404,
        "not restored without its content"
    );

    // GC: a blob no event refers to goes; referenced ones stay.
    let stray = data.join("blobs").join("ab").join("ab".repeat(32));
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::write(&stray, b"unreferenced").unwrap();
    let (status, gc) = server.post("/v1/admin/blobs/gc", "");
    assert_eq!(status, 200, "{gc}");
    assert_eq!(
        (
            gc["removed"].clone(),
            gc["kept"].clone(),
            gc["bytes_freed"].clone()
        ),
        (json!(1), json!(1), json!(12)),
        "{gc}"
    );
    assert!(!stray.exists());
    assert_eq!(get(&server, "two.txt").0, 200);
}

#[test]
fn bad_restore_requests_are_refused_by_name_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    put(&server, "a.txt", b"alpha", &[]);
    server.wait_caught_up();
    let before = log_state(&server);
    for (body, field, needle) in [
        (
            json!({"bucket": BUCKET, "at": "2999-01-01T00:00:00Z"}),
            "at",
            "in the future",
        ),
        (
            json!({"bucket": BUCKET, "at": "yesterday-ish"}),
            "at",
            "not an instant",
        ),
        (
            json!({"bucket": BUCKET, "at": "2001-01-01T00:00:00Z"}),
            "at",
            "before the log's first event",
        ),
        (
            json!({"bucket": BUCKET, "at": "-1s", "colour": "red"}),
            "colour",
            "unknown field",
        ),
        (json!({"at": "-1s"}), "bucket", "required"),
        (
            json!({"bucket": "Not A Bucket", "at": "-1s"}),
            "bucket",
            "not a valid bucket",
        ),
    ] {
        let (status, v) = server.post("/v1/restores", body.to_string());
        assert_eq!(
            (status, v["error"]["field"].clone()),
            (400, json!(field)),
            "{body}: {v}"
        );
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{body}: '{message}' lacks '{needle}'"
        );
    }
    let (status, v) = server.post("/v1/restores", "{not json");
    assert_eq!(
        (status, v["error"]["field"].clone()),
        (400, json!("body")),
        "{v}"
    );
    for (at, needle) in [
        ("2999-01-01T00:00:00Z", "--at: "),
        ("noon-ish", "--at: "),
        ("2001-01-01T00:00:00Z", "before the log's first event"),
    ] {
        let out = run(&[
            "restore",
            "--server",
            &server.url,
            "--bucket",
            BUCKET,
            "--at",
            at,
        ]);
        assert!(!out.status.success(), "{at}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{at}: {err}");
    }
    let (status, v) = server.get("/v1/restores/restore-nope");
    assert_eq!(status, 404, "{v}");
    assert!(
        server.get("/v1/restores").1["restores"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(log_state(&server), before, "nothing written");
}

#[test]
fn bad_uploads_are_refused_by_name_and_leave_no_blob() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--max-object-bytes", "1000"]);
    let before = log_state(&server);
    let big = vec![7u8; 2000];
    // Declared too large, and too large only as it streams (chunked, no length).
    let (status, v) = try_put(&server, BUCKET, "big.bin", big.clone(), &[]);
    assert_eq!(
        (status, v["error"]["field"].clone()),
        (413, json!("body")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-object-bytes"),
        "{v}"
    );
    let chunked = reqwest::blocking::Body::new(std::io::Cursor::new(big));
    let (status, v) = try_put(&server, BUCKET, "big.bin", chunked, &[]);
    assert_eq!(status, 413, "{v}");
    let long_key = "k".repeat(1025);
    for (bucket, key, headers, field) in [
        (BUCKET, long_key.as_str(), vec![], "key"),
        ("Bad_Bucket", "a.txt", vec![], "bucket"),
        (
            BUCKET,
            "a.txt",
            vec![("x-tidemark-tagging", "a=1&a=2")],
            "x-tidemark-tagging",
        ),
    ] {
        let (status, v) = try_put(&server, bucket, key, b"small".to_vec(), &headers);
        assert_eq!(
            (status, v["error"]["field"].clone()),
            (400, json!(field)),
            "{v}"
        );
    }
    let huge_meta = "m".repeat(3000);
    let (status, v) = try_put(
        &server,
        BUCKET,
        "a.txt",
        b"small".to_vec(),
        &[("x-tidemark-meta-note", huge_meta.as_str())],
    );
    assert_eq!(
        (status, v["error"]["field"].clone()),
        (400, json!("x-tidemark-meta-*")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("2048"),
        "{v}"
    );
    assert!(blob_files(&data).is_empty(), "no blob left behind");
    assert_eq!(uploads_in_progress(&data), 0, "no upload left behind");
    assert_eq!(log_state(&server), before, "no event appended");

    // Missing objects are named; objects without content say so.
    let (status, _, body) = get(&server, "nothing.txt");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 404);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("docs/nothing.txt"),
        "{v}"
    );
    mutate(
        &server,
        json!({"op": "put", "key": "described.bin", "size": 3}),
    );
    let (status, _, body) = get(&server, "described.bin");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (410, json!("content_unavailable")),
        "{v}"
    );

    // At the limit is fine; headers come back; older versions stay readable.
    let first = put(
        &server,
        "ok.bin",
        &[1u8; 1000],
        &[("x-tidemark-meta-team", "ml")],
    );
    put(
        &server,
        "ok.bin",
        b"second",
        &[("content-type", "text/plain")],
    );
    let (status, headers, bytes) = get(&server, "ok.bin");
    assert_eq!((status, bytes.as_slice()), (200, b"second".as_slice()));
    assert_eq!(headers["content-type"], "text/plain");
    assert_eq!(headers["content-length"], "6");
    let old = client()
        .get(format!(
            "{}/v1/content/{BUCKET}/ok.bin?version_id={}",
            server.url,
            first["version_id"].as_str().unwrap()
        ))
        .send()
        .unwrap();
    assert_eq!(old.status().as_u16(), 200);
    assert_eq!(
        old.headers()["etag"].to_str().unwrap(),
        format!("\"{}\"", first["etag"].as_str().unwrap())
    );
    assert_eq!(old.headers()["x-tidemark-meta-team"], "ml");
    assert_eq!(old.bytes().unwrap().as_ref(), &[1u8; 1000]);
}

#[test]
fn a_cancelled_restore_says_how_far_it_got_and_running_it_again_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let keys: Vec<String> = (0..3000).map(|i| format!("k{i:04}")).collect();
    let puts = keys
        .iter()
        .map(|k| json!({"op": "put", "bucket": BUCKET, "key": k, "size": 1}))
        .collect();
    ingest(&server, puts);
    server.wait_caught_up();
    let t = instant();
    let deletes = keys
        .iter()
        .map(|k| json!({"op": "delete", "bucket": BUCKET, "key": k}))
        .collect();
    ingest(&server, deletes);
    server.wait_caught_up();

    let (status, job) = server.post(
        "/v1/restores",
        json!({"bucket": BUCKET, "at": t}).to_string(),
    );
    assert_eq!(status, 202, "{job}");
    let path = format!("/v1/restores/{}", job["id"].as_str().unwrap());
    let (status, _) = server.post(&format!("{path}/cancel"), "");
    assert_eq!(status, 202);
    let stopped = wait_for("the restore to stop", Duration::from_secs(60), || {
        let (_, j) = server.get(&path);
        if j["state"] == "running" {
            Err(j.to_string())
        } else {
            Ok(j)
        }
    });
    assert_eq!(stopped["state"], "cancelled", "{stopped}");
    let restored = stopped["result"]["restored_objects"].as_u64().unwrap();
    assert!(restored < 3000, "{stopped}");
    assert_eq!(stopped["progress"]["done"], restored, "{stopped}");
    server.wait_caught_up();
    assert_eq!(
        visible(&server).len() as u64,
        restored,
        "what it says it did, it did"
    );

    let job: Value = serde_json::from_str(&restore_cli(&server, &t, &["--json"])).unwrap();
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["restored_objects"], 3000 - restored);
    server.wait_caught_up();
    assert_eq!(visible(&server).len(), 3000);
}
