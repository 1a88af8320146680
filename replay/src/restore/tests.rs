//! Planning: what each kind of difference becomes, what is not a difference, and content that
//! is gone.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::StreamExt;
use tidemark_core::blobs::{BlobStore, DiskBlobs};
use tidemark_core::event::ObjectState;
use tidemark_core::ingest::Op;

use super::*;

fn state(version: &str, sha256: Option<&str>) -> ObjectState {
    ObjectState {
        version_id: Some(version.into()),
        sequence: 1,
        size: 5,
        etag: Some(format!("etag-{}", sha256.unwrap_or("none"))),
        content_type: Some("text/plain".into()),
        sha256: sha256.map(str::to_string),
        metadata: [("team".to_string(), "ml".to_string())].into(),
        tags: BTreeMap::new(),
        storage_class: None,
        last_modified: 1,
        headers: Default::default(),
        checksum: None,
        part_sizes: None,
    }
}

async fn store_with(content: &[&'static [u8]]) -> (tempfile::TempDir, DiskBlobs, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let blobs = DiskBlobs::open(dir.path()).unwrap();
    let mut shas = Vec::new();
    for c in content {
        let body = futures::stream::iter([Ok(Bytes::from_static(c))]).boxed();
        shas.push(blobs.put(body, 1 << 20).await.unwrap().sha256);
    }
    (dir, blobs, shas)
}

fn actions(plan: &Plan) -> Vec<(&str, Vec<Action>)> {
    plan.steps
        .iter()
        .map(|s| (s.key.as_str(), s.actions.clone()))
        .collect()
}

#[tokio::test]
async fn each_difference_becomes_its_action() {
    let (_dir, blobs, shas) = store_with(&[b"old", b"new"]).await;
    let (old, new) = (Some(shas[0].as_str()), Some(shas[1].as_str()));
    let mut then = BTreeMap::new();
    let mut now = BTreeMap::new();
    then.insert("deleted".to_string(), state("v1", old));
    now.insert("created".to_string(), state("v9", new));
    then.insert("overwritten".to_string(), state("v1", old));
    now.insert("overwritten".to_string(), state("v2", new));
    let mut retagged = state("v1", old);
    then.insert("retagged".to_string(), retagged.clone());
    retagged.tags.insert("stage".into(), "done".into());
    now.insert("retagged".to_string(), retagged);
    let mut both = state("v1", old);
    then.insert("both".to_string(), both.clone());
    both.metadata.clear();
    both.tags.insert("a".into(), "b".into());
    now.insert("both".to_string(), both);
    let mut typed = state("v1", old);
    then.insert("retyped".to_string(), typed.clone());
    typed.content_type = Some("image/png".into());
    now.insert("retyped".to_string(), typed);
    let mut untyped = state("v1", old);
    untyped.content_type = None;
    then.insert("untyped".to_string(), untyped);
    now.insert("untyped".to_string(), state("v1", old));
    // Same to a user, though every change moved version, sequence and time on.
    let mut moved = state("v7", old);
    moved.sequence = 12;
    moved.last_modified = 99;
    then.insert("unchanged".to_string(), state("v1", old));
    now.insert("unchanged".to_string(), moved);

    let plan = plan("photos", &now, &then, &blobs).unwrap();
    assert_eq!(
        actions(&plan),
        vec![
            ("both", vec![Action::Metadata, Action::Tags]),
            ("created", vec![Action::Delete]),
            ("deleted", vec![Action::Recreate]),
            ("overwritten", vec![Action::Revert]),
            ("retagged", vec![Action::Tags]),
            ("retyped", vec![Action::Metadata]),
            // A content type cannot be cleared by a metadata change: put it back.
            ("untyped", vec![Action::Revert]),
        ]
    );
    assert!(plan.unavailable.is_empty());
    let json = plan.to_json();
    assert_eq!(json["objects"], 7);
    assert_eq!(json["counts"]["revert"], 2);
    assert_eq!(json["counts"]["tags"], 2);
    assert_eq!(json["samples"]["delete"], serde_json::json!(["created"]));
}

#[tokio::test]
async fn mutations_carry_the_old_state_and_a_version_precondition() {
    let (_dir, blobs, shas) = store_with(&[b"old", b"new"]).await;
    let mut then = BTreeMap::new();
    let mut now = BTreeMap::new();
    let mut old = state("v1", Some(&shas[0]));
    old.tags.insert("k".into(), "v".into());
    old.storage_class = Some("GLACIER".into());
    then.insert("a".to_string(), old.clone());
    now.insert("a".to_string(), state("v2", Some(&shas[1])));
    let mut untagged = state("v5", Some(&shas[1]));
    then.insert("b".to_string(), untagged.clone());
    untagged.tags.insert("x".into(), "y".into());
    now.insert("b".to_string(), untagged);
    let plan = plan("photos", &now, &then, &blobs).unwrap();

    let put = &plan.steps[0].mutations("photos")[0];
    assert_eq!(put.op, Op::Put);
    assert_eq!(
        (put.size, &put.etag, &put.sha256, &put.storage_class),
        (Some(5), &old.etag, &old.sha256, &old.storage_class)
    );
    assert_eq!(
        (&put.metadata, &put.tags),
        (&Some(old.metadata), &Some(old.tags))
    );
    let version = put.version_id.as_deref().unwrap();
    assert!(
        version != "v1" && version != "v2",
        "a new version: {version}"
    );

    let untag = &plan.steps[1].mutations("photos")[0];
    assert_eq!(untag.op, Op::Untag);
    assert_eq!(
        untag.version_id.as_deref(),
        Some("v5"),
        "current version as precondition"
    );
}

#[tokio::test]
async fn content_no_longer_held_is_reported_and_metadata_only_objects_come_back() {
    let (_dir, blobs, shas) = store_with(&[b"kept"]).await;
    let gone = "0".repeat(64);
    let mut then = BTreeMap::new();
    then.insert("gone".to_string(), state("v1", Some(&gone)));
    then.insert("kept".to_string(), state("v1", Some(&shas[0])));
    then.insert("described".to_string(), state("ext-3", None));
    let plan = plan("photos", &BTreeMap::new(), &then, &blobs).unwrap();
    assert_eq!(
        actions(&plan),
        vec![
            ("described", vec![Action::Recreate]),
            ("kept", vec![Action::Recreate]),
        ]
    );
    assert_eq!(plan.unavailable.len(), 1);
    assert_eq!(plan.unavailable[0].key, "gone");
    assert!(plan.unavailable[0].reason.contains("no longer held"));
    // A metadata-only object keeps the version id of the store it describes.
    let put = &plan.steps[0].mutations("photos")[0];
    assert_eq!(
        (put.version_id.as_deref(), put.sha256.as_deref()),
        (Some("ext-3"), None)
    );
    assert_eq!(plan.to_json()["counts"]["unavailable"], 1);
}

#[test]
fn requests_are_checked_field_by_field() {
    let parse = |body: &str| -> std::result::Result<Restore, (String, String)> {
        let req: RestoreRequest =
            tidemark_core::error::parse_json(body.as_bytes()).map_err(|e| match e {
                tidemark_core::Error::Invalid { field, message } => (field, message),
                other => panic!("{other}"),
            })?;
        req.validate().map_err(|e| match e {
            Error::Invalid { field, message } => (field, message),
            other => panic!("{other}"),
        })
    };
    let ok = parse(r#"{"bucket":"photos","at":"2026-01-01T00:00:00Z","prefix":"a/"}"#).unwrap();
    assert_eq!((ok.prefix.as_str(), ok.dry_run), ("a/", false));
    for (body, field, needle) in [
        (r#"{"at":"-1h"}"#, "bucket", "required"),
        (
            r#"{"bucket":"B!","at":"-1h"}"#,
            "bucket",
            "not a valid bucket",
        ),
        (r#"{"bucket":"photos"}"#, "at", "required"),
        (
            r#"{"bucket":"photos","at":"2999-01-01T00:00:00Z"}"#,
            "at",
            "in the future",
        ),
        (
            r#"{"bucket":"photos","at":"noonish"}"#,
            "at",
            "not an instant",
        ),
        (
            r#"{"bucket":"photos","at":"-1h","colour":"red"}"#,
            "colour",
            "unknown field",
        ),
        (
            r#"{"bucket":"photos","at":"-1h","dry_run":"yes"}"#,
            "dry_run",
            "invalid type",
        ),
        (
            r#"{"bucket":"photos","at":"-1h","rate":0}"#,
            "rate",
            "not a positive number",
        ),
    ] {
        let (f, m) = parse(body).unwrap_err();
        assert_eq!(f, field, "{body}: {m}");
        assert!(m.contains(needle), "{body}: '{m}' lacks '{needle}'");
    }
}

#[test]
fn a_job_spec_reads_back_as_the_restore() {
    let body = r#"{"bucket":"photos","at":"2026-01-01T00:00:00Z","prefix":"a/","rate":50}"#;
    let req: RestoreRequest = serde_json::from_str(body).unwrap();
    let restore = req.validate().unwrap();
    assert_eq!(Restore::of_job(&restore.to_json()).unwrap(), restore);
}

/// A restore killed part way: the keys it wrote are found by their state before its first
/// event on them; those fully done are left alone (counted as done), a key half done gets
/// only what is left, and keys it never reached are planned as the first run planned them.
#[tokio::test]
async fn a_resumed_plan_skips_what_the_job_wrote_and_counts_it_as_the_first_run_would() {
    let (_dir, blobs, shas) = store_with(&[b"old", b"new"]).await;
    let (old, new) = (Some(shas[0].as_str()), Some(shas[1].as_str()));
    let mut then = BTreeMap::new();
    let mut now = BTreeMap::new();
    let mut before = BTreeMap::new();
    // Deleted since T; the job recreated it already.
    then.insert("recreated".to_string(), state("v1", old));
    now.insert("recreated".to_string(), state("v8", old));
    before.insert("recreated".to_string(), None);
    // Created since T (so absent then); the job deleted it already.
    before.insert("deleted".to_string(), Some(state("v3", new)));
    // Metadata and tags changed since T; the job set the metadata back, not yet the tags.
    let mut both = state("v1", old);
    then.insert("half".to_string(), both.clone());
    both.metadata.clear();
    both.tags.insert("a".into(), "b".into());
    before.insert("half".to_string(), Some(both.clone()));
    let mut half_done = both.clone();
    half_done.metadata = state("v1", old).metadata;
    half_done.version_id = Some("v9".into());
    now.insert("half".to_string(), half_done);
    // Overwritten since T, not reached by the job.
    then.insert("untouched".to_string(), state("v1", old));
    now.insert("untouched".to_string(), state("v2", new));

    let plan = resume_plan("photos", &now, &then, &before, &blobs).unwrap();
    let steps: Vec<(&str, Vec<Action>, Vec<Action>)> = plan
        .steps
        .iter()
        .map(|s| (s.key.as_str(), s.done_before.clone(), s.actions.clone()))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("deleted", vec![Action::Delete], vec![]),
            ("half", vec![Action::Metadata], vec![Action::Tags]),
            ("recreated", vec![Action::Recreate], vec![]),
            ("untouched", vec![], vec![Action::Revert]),
        ]
    );
    // What is left is checked against the object as it is now.
    let half = &plan.steps[1];
    assert_eq!(half.now.as_ref().unwrap().version_id.as_deref(), Some("v9"));
    assert!(plan.steps[0].mutations("photos").is_empty());
}
