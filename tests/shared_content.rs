//! Two nodes on Kafka (a Tansu broker) sharing one content store on an S3 server on loopback
//! (moto): any node serves any object, completes any multipart upload and compiles any filter;
//! garbage collection on one node never takes content the other has just relied on.

mod common;

use std::time::Duration;

use common::moto::Moto;
use common::receiver::Receiver;
use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
/// The bucket of moto's that holds the content store, and the store's URL.
const STORE_BUCKET: &str = "content";
const STORE: &str = "s3://content/cluster";
const GRACE_SECS: u64 = 2;

/// moto with the content store's bucket, and the environment a node reaches it with.
fn content_store() -> (Moto, Vec<(&'static str, String)>) {
    let moto = Moto::start();
    let resp = client()
        .put(format!("{}/{STORE_BUCKET}", moto.endpoint))
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "create bucket: {resp:?}");
    let env = vec![
        ("AWS_ENDPOINT_URL", moto.endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ALLOW_HTTP", "true".to_string()),
    ];
    (moto, env)
}

fn node(backend: &Backend, dir: &std::path::Path, env: &[(&str, String)]) -> Server {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let grace = GRACE_SECS.to_string();
    Server::start_with_env(
        backend,
        dir,
        &[
            "--content-store",
            STORE,
            "--s3-listen",
            "127.0.0.1:0",
            "--s3-access-key",
            "AKTEST",
            "--s3-secret-key",
            "s3cr3t",
            "--blob-gc-interval-secs",
            "0",
            "--blob-gc-grace-secs",
            &grace,
            "--allow-destinations",
            "loopback",
        ],
        &env,
    )
}

/// `PUT /v1/content/{bucket}/{key}`: the answer, which must be 200.
fn put_content(server: &Server, bucket: &str, key: &str, body: &[u8]) -> Value {
    let resp = client()
        .put(format!("{}/v1/content/{bucket}/{key}", server.url))
        .body(body.to_vec())
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let v: Value = resp.json().unwrap();
    assert_eq!(status, 200, "PUT {bucket}/{key}: {v}");
    v
}

/// `GET /v1/content/{bucket}/{key}` on `server`, waiting for it to know the object.
fn get_content(server: &Server, bucket: &str, key: &str) -> Vec<u8> {
    wait_for(&format!("GET {bucket}/{key}"), WAIT, || {
        let resp = client()
            .get(format!("{}/v1/content/{bucket}/{key}", server.url))
            .send()
            .map_err(|e| e.to_string())?;
        match resp.status().as_u16() {
            200 => Ok(resp.bytes().unwrap().to_vec()),
            404 => Err("not known yet".into()),
            s => panic!("GET {bucket}/{key}: {s} {}", resp.text().unwrap()),
        }
    })
}

#[test]
fn any_node_serves_completes_and_filters_what_another_stored() {
    let (moto, env) = content_store();
    let backend = Backend::kafka();
    let dir = tempfile::tempdir().unwrap();
    let a = node(&backend, &dir.path().join("a"), &env);
    let b = node(&backend, &dir.path().join("b"), &env);
    // Both nodes write their share of the partitions before the clients start.
    a.wait_writing(2);
    b.wait_writing(2);

    // The content API: stored through A, served and described by B.
    let body = b"bytes uploaded to node a".repeat(10_000);
    let put = put_content(&a, "docs", "report.txt", &body);
    assert_eq!(get_content(&b, "docs", "report.txt"), body);
    let head = client()
        .head(format!("{}/v1/content/docs/report.txt", b.url))
        .send()
        .unwrap();
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(
        head.headers()["x-tidemark-sha256"].to_str().unwrap(),
        put["sha256"].as_str().unwrap()
    );
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        body.len().to_string()
    );
    // The bytes are in moto, not on either node's disk.
    let sha = put["sha256"].as_str().unwrap();
    assert!(
        store_keys(&moto).contains(&format!("cluster/blobs/{}/{sha}", &sha[..2])),
        "the blob is in the shared store"
    );
    assert!(!dir.path().join("a").join("blobs").exists());

    // The S3 API: PutObject on A, GET/HEAD on B; multipart parts on both nodes, completed on
    // either (boto3).
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/s3_shared.py");
    let out = std::process::Command::new("python3")
        .args([
            script,
            a.s3_url.as_deref().unwrap(),
            b.s3_url.as_deref().unwrap(),
            "AKTEST",
            "s3cr3t",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "s3_shared.py: {}\n{}\nnode a:\n{}\nnode b:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        a.stderr_text(),
        b.stderr_text()
    );

    // A filter uploaded on A: B compiles it from the shared store and a subscription created
    // on B filters with it.
    let wasm = wat::parse_str(
        r#"(module
             (import "tidemark" "key" (func $key (param i32 i32) (result i32)))
             (memory (export "memory") 1)
             (data (i32.const 0) "raw/")
             (func (export "tidemark_abi_version") (result i32) i32.const 1)
             (func (export "filter") (result i32)
               (if (i32.lt_s (call $key (i32.const 1024) (i32.const 1024)) (i32.const 4))
                 (then (return (i32.const 0))))
               (i32.eq (i32.load (i32.const 1024)) (i32.load (i32.const 0)))))"#,
    )
    .unwrap();
    let resp = client()
        .post(format!("{}/v1/filters/raw-only", a.url))
        .body(wasm)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201, "{}", resp.text().unwrap());
    let tested = wait_for("node b tests the filter", WAIT, || {
        let (status, v) = b.post(
            "/v1/filters/raw-only/test",
            json!({"events": [
                {"event_type": "ObjectCreated:Put", "bucket": "photos", "key": "raw/a", "size": 1},
                {"event_type": "ObjectCreated:Put", "bucket": "photos", "key": "cooked/a", "size": 1},
            ]})
            .to_string(),
        );
        if status == 200 {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    });
    assert_eq!(
        (tested["kept"].clone(), tested["dropped"].clone()),
        (json!(1), json!(1))
    );
    let receiver = Receiver::start(dir.path(), "hooks", &[]);
    create_subscription(
        &b,
        &json!({"name": "raw-hooks", "filter": "raw-only",
                "sink": {"type": "webhook", "url": receiver.url("/raw")},
                "retry": fast_retry(20)}),
    );
    let acked = ingest(
        &b,
        ["raw/1", "cooked/2", "raw/3", "cooked/4"]
            .iter()
            .map(|k| json!({"op": "put", "bucket": "photos", "key": k, "size": 1}))
            .collect(),
    );
    receiver.wait_delivered(&[acked[0].1.clone(), acked[2].1.clone()], WAIT);
    wait_status(&b, "raw-hooks", "no lag", WAIT, |s| s["lag"] == 0);
    let got = receiver.delivered_ids();
    assert!(
        !got.contains(&acked[1].1) && !got.contains(&acked[3].1),
        "{got:?}"
    );
}

/// Nodes on Kafka with content stores of their own: a filter uploaded on one cannot be compiled
/// on the other, which says why and what to do; each warned at start.
#[test]
fn a_node_without_the_module_bytes_names_the_shared_store_it_needs() {
    let backend = Backend::kafka();
    let dir = tempfile::tempdir().unwrap();
    let a = Server::start_on(&backend, &dir.path().join("a"), &[]);
    let b = Server::start_on(&backend, &dir.path().join("b"), &[]);
    let resp = client()
        .post(format!("{}/v1/filters/keep-all", a.url))
        .body(keep_all())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201, "{}", resp.text().unwrap());
    let refused = wait_for("node b knows the filter", WAIT, || {
        let (status, v) = b.post(
            "/v1/filters/keep-all/test",
            json!({"events": [{"event_type": "ObjectCreated:Put", "bucket": "b", "key": "k"}]})
                .to_string(),
        );
        match status {
            404 if v.to_string().contains("does not exist") => Err(v.to_string()),
            _ => Ok((status, v)),
        }
    });
    assert_ne!(refused.0, 200, "{}", refused.1);
    let message = refused.1.to_string();
    assert!(
        message.contains("not in this node's content store") && message.contains("--content-store"),
        "{message}"
    );
    assert!(
        b.stderr_text()
            .contains("give every node the same --content-store")
    );
}

fn keep_all() -> Vec<u8> {
    wat::parse_str(
        r#"(module
             (memory (export "memory") 1)
             (func (export "tidemark_abi_version") (result i32) i32.const 1)
             (func (export "filter") (result i32) i32.const 1))"#,
    )
    .unwrap()
}

/// Garbage collection on A while B uploads, again and again, content that was garbage (held
/// by the store, referred to by nothing, older than the grace period): every upload B
/// acknowledged reads back, from either node; real garbage is collected meanwhile.
#[test]
fn gc_on_one_node_keeps_what_another_node_just_uploaded() {
    let (moto, env) = content_store();
    let backend = Backend::kafka();
    let dir = tempfile::tempdir().unwrap();
    let a = node(&backend, &dir.path().join("a"), &env);
    let b = node(&backend, &dir.path().join("b"), &env);
    a.wait_writing(2);
    b.wait_writing(2);

    // Content stored and then left: a blob no event refers to (as a crash between storing
    // and appending leaves). Put straight into the store, and one more that stays garbage.
    let revived = b"content uploaded again while a collection runs".to_vec();
    let garbage = b"content nobody uploads again".to_vec();
    for bytes in [&revived, &garbage] {
        let sha = sha256_hex(bytes);
        let resp = client()
            .put(format!(
                "{}/{STORE_BUCKET}/cluster/blobs/{}/{sha}",
                moto.endpoint,
                &sha[..2]
            ))
            .body(bytes.to_vec())
            .send()
            .unwrap();
        assert!(resp.status().is_success());
    }
    std::thread::sleep(Duration::from_secs(GRACE_SECS + 1));

    let uploading = std::sync::atomic::AtomicBool::new(true);
    let (removed, acked) = std::thread::scope(|scope| {
        let collector = scope.spawn(|| {
            let mut removed = 0;
            while uploading.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, v) = a.post("/v1/admin/blobs/gc", "");
                assert_eq!(status, 200, "{v}");
                removed += v["removed"].as_u64().unwrap();
            }
            removed
        });
        let mut acked = Vec::new();
        for i in 0..20 {
            let key = format!("again/{i}");
            put_content(&b, "revived", &key, &revived);
            acked.push(key);
            std::thread::sleep(Duration::from_millis(100));
        }
        uploading.store(false, std::sync::atomic::Ordering::Relaxed);
        (collector.join().unwrap(), acked)
    });
    assert!(removed >= 1, "the real garbage was collected");
    // Collected again once everything is referenced: nothing B acknowledged goes.
    let (status, v) = a.post("/v1/admin/blobs/gc", "");
    assert_eq!(status, 200, "{v}");
    for key in &acked {
        assert_eq!(get_content(&a, "revived", key), revived, "{key} on node a");
        assert_eq!(get_content(&b, "revived", key), revived, "{key} on node b");
    }
    let gone = sha256_hex(&garbage);
    assert!(
        !store_keys(&moto).iter().any(|k| k.ends_with(&gone)),
        "the garbage blob was removed"
    );
}

/// The keys in the content store's bucket (one listing page is plenty here).
fn store_keys(moto: &Moto) -> Vec<String> {
    let listing = client()
        .get(format!("{}/{STORE_BUCKET}?list-type=2", moto.endpoint))
        .send()
        .unwrap()
        .text()
        .unwrap();
    listing
        .split("<Key>")
        .skip(1)
        .filter_map(|s| s.split("</Key>").next())
        .map(str::to_string)
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
