//! aws-cli over every S3 operation Tidemark serves, against a real `tidemark serve
//! --s3-listen`; then `tidemark log tail --json` must show each mutation as its event, the
//! reads of a bucket with access events as `ObjectAccessed:*`, and a refused request as
//! `ObjectAccess:Denied`. Also virtual-host addressing with boto3 (`--s3-domain`).

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::aws::Aws;
use common::{Backend, Server, log_events, wait_for};
use serde_json::{Value, json};

const VHOST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/s3_vhost.py");

fn start(data: &std::path::Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "--s3-listen",
        "127.0.0.1:0",
        "--s3-access-key",
        "AKTEST",
        "--s3-secret-key",
        "s3cr3t",
    ];
    args.extend_from_slice(extra);
    Server::start(data, &args)
}

/// Events of `bucket` counted by (type, key).
fn counts(events: &[Value], bucket: &str) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for e in events.iter().filter(|e| e["bucket"] == bucket) {
        let at = (
            e["event_type"].as_str().unwrap().to_string(),
            e["key"].as_str().unwrap().to_string(),
        );
        *out.entry(at).or_default() += 1;
    }
    out
}

fn expected(pairs: &[(&str, &str, usize)]) -> BTreeMap<(String, String), usize> {
    pairs
        .iter()
        .map(|(t, k, n)| ((t.to_string(), k.to_string()), *n))
        .collect()
}

#[test]
fn aws_cli_drives_every_operation_and_the_log_shows_each_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data, &[]);
    let aws = Aws::new(dir.path(), &server);
    let file = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_string()
    };
    let hello = file("hello.txt", b"hello world");
    let out = |name: &str| dir.path().join(name).to_str().unwrap().to_string();

    // Buckets.
    aws.refused(
        "InvalidBucketName",
        &["create-bucket", "--bucket", "Bad_Name"],
    );
    aws.ok(&["create-bucket", "--bucket", "photos"]);
    aws.ok(&["create-bucket", "--bucket", "scratch"]);
    // As in us-east-1: creating a bucket you own again succeeds.
    aws.ok(&["create-bucket", "--bucket", "photos"]);
    aws.ok(&["head-bucket", "--bucket", "photos"]);
    let names: Vec<Value> = aws.json(&["list-buckets"])["Buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["Name"].clone())
        .collect();
    assert_eq!(names, [json!("photos"), json!("scratch")]);
    // Paged: one bucket a page, the last name as the continuation token.
    let first = aws.json(&["list-buckets", "--max-buckets", "1"]);
    assert_eq!(first["Buckets"][0]["Name"], "photos", "{first}");
    let token = first["ContinuationToken"].as_str().unwrap();
    let second = aws.json(&[
        "list-buckets",
        "--max-buckets",
        "1",
        "--continuation-token",
        token,
    ]);
    assert_eq!(second["Buckets"][0]["Name"], "scratch", "{second}");
    assert!(second.get("ContinuationToken").is_none(), "{second}");
    aws.ok(&["delete-bucket", "--bucket", "scratch"]);

    // Objects, with metadata and tags.
    let put = aws.json(&[
        "put-object",
        "--bucket",
        "photos",
        "--key",
        "a/1.txt",
        "--body",
        &hello,
        "--content-type",
        "text/plain",
        "--metadata",
        "team=ml",
        "--tagging",
        "stage=raw",
    ]);
    assert_eq!(put["ETag"], "\"5eb63bbbe01eeed093cb22bb8f5acdc3\"");
    assert!(put.get("VersionId").is_none(), "unversioned bucket: {put}");
    let got = aws.json(&[
        "get-object",
        "--bucket",
        "photos",
        "--key",
        "a/1.txt",
        "--range",
        "bytes=0-4",
        &out("range.out"),
    ]);
    assert_eq!(std::fs::read(out("range.out")).unwrap(), b"hello");
    assert_eq!(got["ContentRange"], "bytes 0-4/11");
    let head = aws.json(&["head-object", "--bucket", "photos", "--key", "a/1.txt"]);
    assert_eq!(head["ContentLength"], 11);
    assert_eq!(head["Metadata"], json!({"team": "ml"}));
    aws.refused(
        "NoSuchKey",
        &[
            "get-object",
            "--bucket",
            "photos",
            "--key",
            "nope",
            &out("x"),
        ],
    );
    aws.refused(
        "PreconditionFailed",
        &[
            "get-object",
            "--bucket",
            "photos",
            "--key",
            "a/1.txt",
            "--if-match",
            "\"no\"",
            &out("x"),
        ],
    );
    aws.ok(&[
        "copy-object",
        "--bucket",
        "photos",
        "--key",
        "a/2.txt",
        "--copy-source",
        "photos/a/1.txt",
    ]);

    // Tagging.
    aws.ok(&[
        "put-object-tagging",
        "--bucket",
        "photos",
        "--key",
        "a/1.txt",
        "--tagging",
        "TagSet=[{Key=stage,Value=done}]",
    ]);
    let tags = aws.json(&[
        "get-object-tagging",
        "--bucket",
        "photos",
        "--key",
        "a/1.txt",
    ]);
    assert_eq!(tags["TagSet"], json!([{"Key": "stage", "Value": "done"}]));
    aws.ok(&[
        "delete-object-tagging",
        "--bucket",
        "photos",
        "--key",
        "a/1.txt",
    ]);

    // Listing.
    let v2 = aws.json(&["list-objects-v2", "--bucket", "photos", "--delimiter", "/"]);
    assert_eq!(v2["CommonPrefixes"], json!([{"Prefix": "a/"}]), "{v2}");
    let v1 = aws.json(&[
        "list-objects",
        "--bucket",
        "photos",
        "--prefix",
        "a/",
        "--marker",
        "a/1.txt",
    ]);
    assert_eq!(v1["Contents"][0]["Key"], "a/2.txt", "{v1}");
    assert_eq!(v1["Contents"].as_array().unwrap().len(), 1, "{v1}");

    // Multipart: two parts (the first at S3's 5 MiB minimum), one upload aborted.
    let part1 = file("part1", &vec![b'a'; 5 << 20]);
    let part2 = file("part2", b"tail");
    let upload = aws.json(&[
        "create-multipart-upload",
        "--bucket",
        "photos",
        "--key",
        "big.bin",
    ]);
    let id = upload["UploadId"].as_str().unwrap().to_string();
    let mut etags = Vec::new();
    for (n, body) in [("1", &part1), ("2", &part2)] {
        let part = aws.json(&[
            "upload-part",
            "--bucket",
            "photos",
            "--key",
            "big.bin",
            "--upload-id",
            &id,
            "--part-number",
            n,
            "--body",
            body,
        ]);
        etags.push(part["ETag"].as_str().unwrap().to_string());
    }
    let parts = aws.json(&[
        "list-parts",
        "--bucket",
        "photos",
        "--key",
        "big.bin",
        "--upload-id",
        &id,
    ]);
    assert_eq!(parts["Parts"].as_array().unwrap().len(), 2, "{parts}");
    let dropped = aws.json(&[
        "create-multipart-upload",
        "--bucket",
        "photos",
        "--key",
        "dropped.bin",
    ]);
    let dropped = dropped["UploadId"].as_str().unwrap().to_string();
    let uploads = aws.json(&["list-multipart-uploads", "--bucket", "photos"]);
    assert_eq!(uploads["Uploads"].as_array().unwrap().len(), 2, "{uploads}");
    aws.ok(&[
        "abort-multipart-upload",
        "--bucket",
        "photos",
        "--key",
        "dropped.bin",
        "--upload-id",
        &dropped,
    ]);
    let layout = json!({"Parts": [
        {"PartNumber": 1, "ETag": etags[0]}, {"PartNumber": 2, "ETag": etags[1]}
    ]});
    let layout_file = file("parts.json", layout.to_string().as_bytes());
    let done = aws.json(&[
        "complete-multipart-upload",
        "--bucket",
        "photos",
        "--key",
        "big.bin",
        "--upload-id",
        &id,
        "--multipart-upload",
        &format!("file://{layout_file}"),
    ]);
    assert!(done["ETag"].as_str().unwrap().ends_with("-2\""), "{done}");
    aws.refused(
        "NoSuchUpload",
        &[
            "list-parts",
            "--bucket",
            "photos",
            "--key",
            "dropped.bin",
            "--upload-id",
            &dropped,
        ],
    );

    // Versioning: version ids on puts and copies, reads and copies of an older version,
    // delete markers.
    let old = aws.json(&[
        "list-object-versions",
        "--bucket",
        "photos",
        "--prefix",
        "a/1.txt",
    ]);
    assert_eq!(old["Versions"].as_array().unwrap().len(), 1, "{old}");
    aws.ok(&[
        "put-bucket-versioning",
        "--bucket",
        "photos",
        "--versioning-configuration",
        "Status=Enabled",
    ]);
    let status = aws.json(&["get-bucket-versioning", "--bucket", "photos"]);
    assert_eq!(status["Status"], "Enabled");
    let v1_id = aws.json(&[
        "list-object-versions",
        "--bucket",
        "photos",
        "--prefix",
        "a/1.txt",
    ])["Versions"][0]["VersionId"]
        .as_str()
        .unwrap()
        .to_string();
    let second = file("second.txt", b"second version");
    let put2 = aws.json(&[
        "put-object",
        "--bucket",
        "photos",
        "--key",
        "a/1.txt",
        "--body",
        &second,
    ]);
    let v2_id = put2["VersionId"]
        .as_str()
        .expect("a version id on a versioned bucket");
    assert_ne!(v2_id, v1_id);
    aws.json(&[
        "get-object",
        "--bucket",
        "photos",
        "--key",
        "a/1.txt",
        "--version-id",
        &v1_id,
        &out("v1.out"),
    ]);
    assert_eq!(std::fs::read(out("v1.out")).unwrap(), b"hello world");
    let copy = aws.json(&[
        "copy-object",
        "--bucket",
        "photos",
        "--key",
        "a/3.txt",
        "--copy-source",
        &format!("photos/a/1.txt?versionId={v1_id}"),
    ]);
    assert_eq!(copy["CopySourceVersionId"], v1_id.as_str(), "{copy}");
    assert!(copy["VersionId"].is_string(), "{copy}");
    aws.json(&[
        "get-object",
        "--bucket",
        "photos",
        "--key",
        "a/3.txt",
        &out("v3.out"),
    ]);
    assert_eq!(std::fs::read(out("v3.out")).unwrap(), b"hello world");
    let marker = aws.json(&["delete-object", "--bucket", "photos", "--key", "a/2.txt"]);
    assert_eq!(marker["DeleteMarker"], true, "{marker}");
    let many = aws.json(&[
        "delete-objects",
        "--bucket",
        "photos",
        "--delete",
        "Objects=[{Key=a/3.txt},{Key=big.bin}]",
    ]);
    assert_eq!(many["Deleted"].as_array().unwrap().len(), 2, "{many}");
    let versions = aws.json(&["list-object-versions", "--bucket", "photos"]);
    assert_eq!(
        versions["DeleteMarkers"].as_array().unwrap().len(),
        3,
        "{versions}"
    );

    // The high-level commands.
    let (ok, _, err) = aws.aws("s3", &["cp", &hello, "s3://photos/c.txt"], "s3cr3t");
    assert!(ok, "aws s3 cp: {err}");
    let (ok, listing, err) = aws.aws("s3", &["ls", "s3://photos/"], "s3cr3t");
    assert!(
        ok && listing.contains("c.txt") && listing.contains("PRE a/"),
        "{listing}{err}"
    );
    let (ok, _, err) = aws.aws("s3", &["rm", "s3://photos/c.txt"], "s3cr3t");
    assert!(ok, "aws s3 rm: {err}");

    // Reads are recorded once the bucket asks for it; a refused request always is.
    let (code, bucket) = server.patch("/v1/buckets/photos", &json!({"access_events": true}));
    assert_eq!(code, 200, "{bucket}");
    assert_eq!(bucket["access_events"], true);
    assert_eq!(bucket["versioning"], "Enabled");
    aws.json(&[
        "get-object",
        "--bucket",
        "photos",
        "--key",
        "a/1.txt",
        &out("read.out"),
    ]);
    aws.json(&["head-object", "--bucket", "photos", "--key", "a/1.txt"]);
    let (ok, _, err) = aws.aws(
        "s3api",
        &[
            "put-object",
            "--bucket",
            "photos",
            "--key",
            "evil",
            "--body",
            &hello,
        ],
        "wrong-secret",
    );
    assert!(!ok && err.contains("SignatureDoesNotMatch"), "{err}");

    let want = expected(&[
        ("BucketCreated", "", 1),
        ("BucketConfig:Changed", "", 2),
        ("ObjectCreated:Put", "a/1.txt", 2),
        ("ObjectCreated:Put", "c.txt", 1),
        ("ObjectCreated:Copy", "a/2.txt", 1),
        ("ObjectCreated:Copy", "a/3.txt", 1),
        ("ObjectCreated:CompleteMultipartUpload", "big.bin", 1),
        ("ObjectTagging:Put", "a/1.txt", 1),
        ("ObjectTagging:Delete", "a/1.txt", 1),
        ("ObjectRemoved:DeleteMarkerCreated", "a/2.txt", 1),
        ("ObjectRemoved:DeleteMarkerCreated", "a/3.txt", 1),
        ("ObjectRemoved:DeleteMarkerCreated", "big.bin", 1),
        ("ObjectRemoved:DeleteMarkerCreated", "c.txt", 1),
        ("ObjectAccessed:Get", "a/1.txt", 1),
        ("ObjectAccessed:Head", "a/1.txt", 1),
        ("ObjectAccess:Denied", "evil", 1),
    ]);
    // Access events are appended after the read is answered.
    let events = wait_for("every event in the log", Duration::from_secs(20), || {
        let events = log_events(&Backend::Embedded, &data);
        match counts(&events, "photos") == want {
            true => Ok(events),
            false => Err(format!("{:#?}", counts(&events, "photos"))),
        }
    });
    let scratch = counts(&events, "scratch");
    assert_eq!(
        scratch,
        expected(&[("BucketCreated", "", 1), ("BucketRemoved", "", 1)])
    );
    assert!(
        events
            .iter()
            .all(|e| e["bucket"] == "photos" || e["bucket"] == "scratch")
    );
    for e in &events {
        assert_eq!(e["source_ip"], "127.0.0.1", "{e}");
        if e["event_type"] == "BucketConfig:Changed" && e["requester"].is_null() {
            continue; // the PATCH over HTTP, which names no requester
        }
        assert_eq!(e["requester"], "AKTEST", "{e}");
        assert_eq!(e["source_ip"], "127.0.0.1", "{e}");
    }
    let of = |t: &str| events.iter().find(|e| e["event_type"] == t).unwrap();
    let read = of("ObjectAccessed:Get");
    assert_eq!(read["version_id"], v2_id);
    assert_eq!(read["size"], 14);
    assert_eq!(of("ObjectAccess:Denied")["size"], Value::Null);
    // The denied put stored nothing.
    aws.refused(
        "404",
        &["head-object", "--bucket", "photos", "--key", "evil"],
    );
    server.stop();
}

#[test]
fn virtual_host_addressing_names_the_bucket_in_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data, &["--s3-domain", "s3.tidemark.test"]);
    let s3 = server.s3_url.clone().expect("s3 address");
    let port = s3.rsplit(':').next().unwrap().to_string();
    let out = Command::new("python3")
        .args([VHOST, "s3.tidemark.test", &port, "AKTEST", "s3cr3t"])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "s3_vhost.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let events = log_events(&Backend::Embedded, &data);
    let want = expected(&[
        ("BucketCreated", "", 1),
        ("ObjectCreated:Put", "v/1.txt", 1),
        ("ObjectCreated:Put", "p/2.txt", 1),
    ]);
    assert_eq!(counts(&events, "vhosted"), want, "{events:#?}");

    // Bucket settings over HTTP refuse bad input by name and change nothing.
    let refused = [
        (
            "/v1/buckets/nope",
            json!({"access_events": true}),
            404,
            "'nope' does not exist",
        ),
        (
            "/v1/buckets/vhosted",
            json!({"access_events": "yes"}),
            400,
            "access_events",
        ),
        (
            "/v1/buckets/vhosted",
            json!({"acl": "public"}),
            400,
            "unknown field `acl`",
        ),
        ("/v1/buckets/vhosted", json!("on"), 400, "expected struct"),
    ];
    for (path, body, status, says) in refused {
        let (code, answer) = server.patch(path, &body);
        assert_eq!(code, status, "{path} {body}: {answer}");
        assert!(answer.to_string().contains(says), "{path} {body}: {answer}");
    }
    let (_, listed) = server.get("/v1/buckets");
    assert_eq!(listed["buckets"][0]["access_events"], false, "{listed}");
    assert_eq!(
        listed["buckets"][0]["versioning"], "Unversioned",
        "{listed}"
    );
    let after = log_events(&Backend::Embedded, &data);
    assert_eq!(counts(&after, "vhosted"), want);
    server.stop();

    // A domain with a port or a bad label is refused before anything starts.
    let bad = common::run(&[
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--s3-domain",
        "s3.test:9000",
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("is not a domain name"), "{err}");
}
