//! One typed write path: S3 and HTTP writers racing on the same keys get only documented
//! answers (never a 500 because an object vanished between a check and a write), and the log
//! and the index agree afterwards.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

#[test]
fn concurrent_deletes_tags_and_copies_get_documented_answers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &[
            "--s3-listen",
            "127.0.0.1:0",
            "--s3-access-key",
            "AKTEST",
            "--s3-secret-key",
            "s3cr3t",
        ],
    );
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/s3_race.py"))
        .args([
            server.s3_url.as_deref().unwrap(),
            &server.url,
            "races",
            "60",
            "8",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "s3_race.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["bad"], serde_json::json!([]), "answers: {}", v["answers"]);
    let answers = v["answers"].as_object().unwrap();
    // The race did happen: some writes found their object gone.
    assert!(
        answers
            .keys()
            .any(|k| k.ends_with(" 404") || k.ends_with("not_found")),
        "{answers:?}"
    );
    let acked: Vec<String> = v["acked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect();
    server.wait_caught_up();
    server.stop();
    assert_log_and_index_intact(&Backend::Embedded, &data, &acked, dir.path());
}

/// The mutations API takes the same conditions as S3's conditional writes: `if_none_match:
/// "*"` creates only, `if_match` replaces only that ETag; a failed condition is that
/// mutation's `conflict` result and appends nothing, and a malformed one is refused by name.
#[test]
fn conditional_mutations_apply_only_when_their_condition_holds() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let put = |extra: Value| {
        let mut m = serde_json::json!({"op": "put", "bucket": "docs", "key": "a.txt", "size": 1, "etag": "e1"});
        m.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        server.post(
            "/v1/mutations",
            serde_json::json!({ "mutations": [m] }).to_string(),
        )
    };
    let (code, body) = put(serde_json::json!({"if_none_match": "*"}));
    assert_eq!(code, 200, "{body}");
    let conflict = |body: &Value, why: &str| {
        let error = &body["results"][0]["error"];
        assert_eq!(error["code"], "conflict", "{body}");
        assert!(error["message"].as_str().unwrap().contains(why), "{body}");
    };
    let (_, body) = put(serde_json::json!({"if_none_match": "*", "etag": "e2"}));
    conflict(&body, "exists already");
    let (code, body) = put(serde_json::json!({"if_match": "e1", "etag": "e3"}));
    assert_eq!(code, 200, "{body}");
    assert!(body["results"][0]["error"].is_null(), "{body}");
    let (_, body) = put(serde_json::json!({"if_match": "e1", "etag": "e4"}));
    conflict(&body, "is not 'e1'");
    let (code, body) = put(serde_json::json!({"if_none_match": "e1"}));
    assert_eq!(code, 400, "{body}");
    assert!(
        body.to_string().contains("mutations[0].if_none_match"),
        "{body}"
    );
    let (code, state) = server.get("/v1/objects/docs/a.txt");
    assert_eq!(code, 200, "{state}");
    assert_eq!(state["state"]["etag"], "e3", "{state}");
}
