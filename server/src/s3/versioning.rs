//! Versioning: Put/GetBucketVersioning, reads by `versionId`, delete markers and
//! ListObjectVersions.
//!
//! Every put already gets a version id and the index keeps each key's history, so versioning
//! only changes what S3 shows and what a delete does. The bucket's status lives in its catalog
//! entity (`"versioning"` in the spec), so it is the same on every node and survives restarts;
//! each change is also a `BucketConfig:Changed` event.
//!
//! A delete on a versioned bucket is a `delete` mutation recorded as
//! `ObjectRemoved:DeleteMarkerCreated`: the key reads as deleted, its history keeps the older
//! versions. A delete event carries no version of its own, so a marker's version id is its
//! event id (32 hex digits, the same form as object version ids), or `null` when the bucket's
//! versioning is suspended. A delete with `versionId` removes that version or marker for good:
//! an `ObjectRemoved:Delete` naming it in `removed_version_id`, whose object is what is current
//! afterwards (see [`delete_version`]). A key's versions are derived from its history by
//! [`versions_of`].

use std::sync::Arc;

use s3s::dto::*;
use s3s::{S3Error, S3Request, S3Response, S3Result, s3_error};
use tidemark_core::blocking::blocking;
use tidemark_core::event::{EventType, ObjectState};
use tidemark_core::index::HistoryEntry;
use tidemark_core::ingest::{Op, RequestContext};

use super::buckets::require;
use super::errors::{check_key, from_core};
use super::objects::{simple, timestamp};
use crate::http::AppState;
use crate::node::objects::Consistency;
use crate::node::objects::Version as Read;

/// The most entries one ListObjectVersions page holds, as on S3.
const MAX_KEYS: usize = 1000;

/// A bucket's versioning status; S3 has no way back to `Unversioned` once set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Unversioned,
    Enabled,
    Suspended,
}

impl Status {
    /// Whether deletes leave markers and old versions stay readable.
    pub fn versioned(self) -> bool {
        self != Status::Unversioned
    }
}

/// The status of `bucket` (`Unversioned` for a bucket that does not exist; callers check
/// existence separately).
pub fn status(app: &AppState, bucket: &str) -> Status {
    match app
        .node
        .bucket_spec(bucket)
        .as_ref()
        .and_then(|v| v["versioning"].as_str())
    {
        Some(BucketVersioningStatus::ENABLED) => Status::Enabled,
        Some(BucketVersioningStatus::SUSPENDED) => Status::Suspended,
        _ => Status::Unversioned,
    }
}

/// The version id S3 shows for `state`: only on versioned buckets (an unversioned bucket's
/// answers stay as they were).
pub fn shown(app: &AppState, bucket: &str, state: &ObjectState) -> Option<ObjectVersionId> {
    match status(app, bucket).versioned() {
        true => state.version_id.clone(),
        false => None,
    }
}

pub async fn put_config(
    app: &Arc<AppState>,
    req: S3Request<PutBucketVersioningInput>,
) -> S3Result<S3Response<PutBucketVersioningOutput>> {
    let bucket = &req.input.bucket;
    require(app, bucket)?;
    let config = &req.input.versioning_configuration;
    if config
        .mfa_delete
        .as_ref()
        .is_some_and(|m| m.as_str() == MFADelete::ENABLED)
    {
        return Err(s3_error!(NotImplemented, "MFA delete is not supported"));
    }
    let wanted = match config.status.as_ref().map(|s| s.as_str()) {
        Some(s @ (BucketVersioningStatus::ENABLED | BucketVersioningStatus::SUSPENDED)) => s,
        other => {
            return Err(s3_error!(
                MalformedXML,
                "versioning status must be Enabled or Suspended, got {other:?}"
            ));
        }
    };
    app.node
        .update_bucket_spec(bucket, &super::context(&req), |spec| {
            let changed = spec["versioning"].as_str() != Some(wanted);
            spec["versioning"] = wanted.into();
            changed
        })
        .await
        .map_err(|e| match e {
            tidemark_core::Error::NotFound(m) => s3_error!(NoSuchBucket, "{m}"),
            e => from_core(e),
        })?;
    Ok(S3Response::new(PutBucketVersioningOutput {}))
}

pub async fn get_config(
    app: &Arc<AppState>,
    req: S3Request<GetBucketVersioningInput>,
) -> S3Result<S3Response<GetBucketVersioningOutput>> {
    require(app, &req.input.bucket)?;
    let status = match status(app, &req.input.bucket) {
        Status::Unversioned => None,
        Status::Enabled => Some(BucketVersioningStatus::ENABLED),
        Status::Suspended => Some(BucketVersioningStatus::SUSPENDED),
    };
    Ok(S3Response::new(GetBucketVersioningOutput {
        status: status.map(BucketVersioningStatus::from_static),
        ..Default::default()
    }))
}

/// Version `version_id` of `bucket/key`: `NoSuchVersion` for an id the key never had,
/// `MethodNotAllowed` for a delete marker (as S3 answers).
pub async fn existing_version(
    app: &AppState,
    bucket: &str,
    key: &str,
    version_id: &str,
) -> S3Result<ObjectState> {
    require(app, bucket)?;
    check_key(key)?;
    if !status(app, bucket).versioned() {
        return Err(s3_error!(
            NotImplemented,
            "bucket '{bucket}' is not versioned; reading by versionId needs versioning enabled"
        ));
    }
    app.node
        .catch_up(Consistency::Strong)
        .await
        .map_err(from_core)?;
    let history = history(app, bucket, key).await?;
    let versions = versions_of(&history);
    match versions.iter().find(|v| v.id == version_id) {
        Some(v) if v.content.is_none() => {
            return Err(marker_error(
                s3_error!(
                    MethodNotAllowed,
                    "version {version_id} of {bucket}/{key} is a delete marker"
                ),
                version_id,
                v.time,
            ));
        }
        Some(_) => {}
        None => {
            return Err(s3_error!(
                NoSuchVersion,
                "{bucket}/{key} has no version {version_id}"
            ));
        }
    }
    match app
        .node
        .version_state(bucket, key, version_id)
        .await
        .map_err(from_core)?
    {
        Some(Read::State(state)) => Ok(*state),
        Some(Read::Expired) => Err(s3_error!(
            NoSuchVersion,
            "version {version_id} of {bucket}/{key} is older than the log's retention"
        )),
        None => Err(s3_error!(
            NoSuchVersion,
            "{bucket}/{key} has no version {version_id}"
        )),
    }
}

/// Put a delete marker on `bucket/key`; its version id. As on S3, a marker goes on even when
/// the key has no current version (never written, or already behind a marker): markers stack.
/// In a suspended bucket the marker is the `null` version (replacing an earlier one).
pub async fn delete_marker(
    app: &AppState,
    bucket: &str,
    key: &str,
    ctx: &RequestContext,
) -> S3Result<Option<String>> {
    require(app, bucket)?;
    check_key(key)?;
    let mut m = simple(Op::Delete, bucket, key);
    m.event_type = Some(EventType::ObjectRemovedDeleteMarkerCreated);
    if status(app, bucket) == Status::Suspended {
        m.version_id = Some(NULL.into());
    }
    let event_id = app.writer.append(m, ctx).await.map_err(from_core)?;
    if status(app, bucket) == Status::Suspended {
        return Ok(Some(NULL.into()));
    }
    let id = uuid::Uuid::parse_str(&event_id)
        .map(|u| u.simple().to_string())
        .unwrap_or(event_id);
    Ok(Some(id))
}

/// What removing one version did: the version id, and whether it was a delete marker.
pub struct Removed {
    pub version_id: String,
    pub was_marker: bool,
}

/// Remove version `version_id` of `bucket/key` for good (DeleteObject with `versionId`): an
/// `ObjectRemoved:Delete` event naming it, whose object is what is current afterwards — the
/// same object when an older version went, the version before it when the current one went
/// (or none, when that is a marker or nothing). An id the key does not have removes nothing,
/// as on S3. The key's history is read, then the event is appended on the condition that the
/// key did not change meanwhile (retried a few times if it did).
pub async fn delete_version(
    app: &AppState,
    bucket: &str,
    key: &str,
    version_id: &str,
    ctx: &RequestContext,
) -> S3Result<Removed> {
    require(app, bucket)?;
    check_key(key)?;
    for _ in 0..5 {
        app.node
            .catch_up(Consistency::Strong)
            .await
            .map_err(from_core)?;
        let history = history(app, bucket, key).await?;
        let Some(last) = history.last() else {
            return Ok(Removed {
                version_id: version_id.to_string(),
                was_marker: false,
            });
        };
        let mut versions = versions_of(&history);
        let Some(i) = versions.iter().position(|v| v.id == version_id) else {
            return Ok(Removed {
                version_id: version_id.to_string(),
                was_marker: false,
            });
        };
        let latest = i + 1 == versions.len();
        let gone = versions.remove(i);
        let after = match latest {
            false => app
                .node
                .current_state(bucket, key)
                .await
                .map_err(from_core)?,
            true => match versions.last() {
                Some(v) if v.content.is_some() => {
                    match app
                        .node
                        .version_state(bucket, key, &v.id)
                        .await
                        .map_err(from_core)?
                    {
                        Some(Read::State(state)) => Some(*state),
                        // Older than the log's retention: nothing left to make current.
                        Some(Read::Expired) | None => None,
                    }
                }
                _ => None,
            },
        };
        let mut m = simple(Op::Delete, bucket, key);
        m.event_type = Some(EventType::ObjectRemovedDelete);
        m.removed_version_id = Some(version_id.to_string());
        m.after = after.map(Box::new);
        m.condition = Some(tidemark_core::ingest::Condition::Sequence(last.sequence));
        match app.writer.append(m, ctx).await {
            Ok(_) => {
                return Ok(Removed {
                    version_id: version_id.to_string(),
                    was_marker: gone.content.is_none(),
                });
            }
            // Written meanwhile: read the history again.
            Err(tidemark_core::Error::Conflict(_)) => continue,
            Err(e) => return Err(from_core(e)),
        }
    }
    Err(s3_error!(
        ServiceUnavailable,
        "{bucket}/{key} kept changing while version {version_id} was being removed; retry"
    ))
}

/// The version id of what a put writes: a new one, or `null` in a suspended bucket (which
/// replaces the key's earlier `null` version).
pub fn new_version(app: &AppState, bucket: &str) -> String {
    match status(app, bucket) {
        Status::Suspended => NULL.into(),
        _ => tidemark_core::blobs::new_version_id(),
    }
}

/// The version id S3 shows for objects written while versioning was suspended.
const NULL: &str = "null";

/// The answer to a read of a key whose latest version is a delete marker: `NoSuchKey` with
/// `x-amz-delete-marker: true` and the marker's version id, as S3 answers; plain `NoSuchKey`
/// otherwise.
pub async fn not_found(app: &AppState, bucket: &str, key: &str, e: S3Error) -> S3Error {
    if *e.code() != s3s::S3ErrorCode::NoSuchKey || !status(app, bucket).versioned() {
        return e;
    }
    let Ok(history) = history(app, bucket, key).await else {
        return e;
    };
    match versions_of(&history).last() {
        Some(v) if v.content.is_none() => marker_error(e, &v.id, v.time),
        _ => e,
    }
}

/// `e` with the headers that say a delete marker answered.
fn marker_error(mut e: S3Error, version_id: &str, time: i64) -> S3Error {
    let mut headers = hyper::HeaderMap::new();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/xml"),
    );
    headers.insert(
        "x-amz-delete-marker",
        hyper::header::HeaderValue::from_static("true"),
    );
    if let Ok(v) = version_id.parse() {
        headers.insert("x-amz-version-id", v);
    }
    let at = chrono::DateTime::from_timestamp_micros(time).unwrap_or_default();
    if let Ok(v) = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string().parse() {
        headers.insert(hyper::header::LAST_MODIFIED, v);
    }
    e.set_headers(headers);
    e
}

/// A delete marker's version id: `null` for one put while versioning was suspended, else
/// its event id.
fn marker_id(e: &HistoryEntry) -> String {
    e.version_id
        .clone()
        .unwrap_or_else(|| e.event_id.simple().to_string())
}

async fn history(app: &AppState, bucket: &str, key: &str) -> S3Result<Vec<HistoryEntry>> {
    let index = app.node.index.clone();
    let (b, k) = (bucket.to_string(), key.to_string());
    blocking(move || index.history(&b, &k))
        .await
        .map_err(from_core)
}

/// One entry of a key's version list.
struct Version {
    id: String,
    time: i64,
    /// `None` for a delete marker.
    content: Option<(i64, Option<String>)>,
}

/// A key's versions and delete markers, oldest first, from its history: each put is a
/// version, each marker an entry; a plain delete (written while the bucket was unversioned)
/// removed the version it deleted; a `null` version or marker replaces the earlier `null`.
/// Tag and metadata changes keep the version.
fn versions_of(history: &[HistoryEntry]) -> Vec<Version> {
    let mut out: Vec<Version> = Vec::new();
    let push = |out: &mut Vec<Version>, v: Version| {
        if v.id == NULL {
            out.retain(|o| o.id != NULL);
        }
        out.push(v);
    };
    for e in history {
        match e.event_type {
            EventType::ObjectCreatedPut
            | EventType::ObjectCreatedCopy
            | EventType::ObjectCreatedCompleteMultipartUpload => push(
                &mut out,
                Version {
                    id: e.version_id.clone().unwrap_or_else(|| NULL.into()),
                    time: e.event_time,
                    content: Some((e.size.unwrap_or(0), e.etag.clone())),
                },
            ),
            EventType::ObjectRemovedDeleteMarkerCreated => push(
                &mut out,
                Version {
                    id: marker_id(e),
                    time: e.event_time,
                    content: None,
                },
            ),
            // A version (or marker) removed for good.
            EventType::ObjectRemovedDelete if e.removed_version_id.is_some() => {
                out.retain(|v| Some(&v.id) != e.removed_version_id.as_ref());
            }
            EventType::ObjectRemovedDelete | EventType::LifecycleExpirationDelete
                if out.last().is_some_and(|v| v.content.is_some()) =>
            {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Whether `bucket` holds any version or delete marker (a versioned bucket that does cannot
/// be deleted, as on S3).
pub async fn holds_versions(app: &AppState, bucket: &str) -> S3Result<bool> {
    let mut after: Option<String> = None;
    loop {
        let index = app.node.index.clone();
        let (b, a) = (bucket.to_string(), after.clone());
        let keys = blocking(move || index.keys(&b, "", a.as_deref(), 256))
            .await
            .map_err(from_core)?;
        for key in &keys {
            if !versions_of(&history(app, bucket, key).await?).is_empty() {
                return Ok(true);
            }
        }
        match keys.last() {
            Some(last) if keys.len() == 256 => after = Some(last.clone()),
            _ => return Ok(false),
        }
    }
}

/// One entry of a ListObjectVersions page.
enum Entry {
    Version(ObjectVersion),
    Marker(DeleteMarkerEntry),
    Prefix(String),
}

pub async fn list(
    app: &Arc<AppState>,
    req: S3Request<ListObjectVersionsInput>,
) -> S3Result<S3Response<ListObjectVersionsOutput>> {
    let input = req.input;
    let bucket = input.bucket.clone();
    require(app, &bucket)?;
    let max = input
        .max_keys
        .map_or(MAX_KEYS, |n| n.clamp(0, MAX_KEYS as i32) as usize);
    let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
    app.node
        .catch_up(Consistency::Strong)
        .await
        .map_err(from_core)?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let key_marker = input.key_marker.clone().filter(|k| !k.is_empty());
    // With a version-id-marker the page resumes inside the key-marker's versions, after that
    // one; without, after all of the key-marker's versions.
    let resume_in = key_marker
        .clone()
        .zip(input.version_id_marker.clone().filter(|v| !v.is_empty()));
    let mut after = match &resume_in {
        Some((key, _)) => Some(key.clone())
            .filter(|k| !k.is_empty())
            .map(|k| before(&k)),
        None => key_marker.clone(),
    };
    let mut page: Vec<(String, Option<String>, Entry)> = Vec::new();
    let mut truncated = false;
    'keys: loop {
        let index = app.node.index.clone();
        let (b, p, a) = (bucket.clone(), prefix.clone(), after.clone());
        let keys = blocking(move || index.keys(&b, &p, a.as_deref(), 256))
            .await
            .map_err(from_core)?;
        let exhausted = keys.len() < 256;
        for key in keys {
            after = Some(key.clone());
            if resume_in.as_ref().is_some_and(|(k, _)| key < *k) {
                continue;
            }
            if let Some(d) = &delimiter
                && let Some(i) = key[prefix.len()..].find(d.as_str())
            {
                let common = key[..prefix.len() + i + d.len()].to_string();
                if key_marker
                    .as_ref()
                    .is_some_and(|m| *m >= common && m.starts_with(&common))
                {
                    after = Some(format!("{common}{}", char::MAX));
                    continue 'keys;
                }
                if page.len() == max {
                    truncated = true;
                    break 'keys;
                }
                after = Some(format!("{common}{}", char::MAX));
                page.push((common.clone(), None, Entry::Prefix(common)));
                continue 'keys;
            }
            let entries = versions_of(&history(app, &bucket, &key).await?);
            let mut skipping = resume_in.as_ref().is_some_and(|(k, _)| *k == key);
            for (i, v) in entries.iter().rev().enumerate() {
                if skipping {
                    if resume_in.as_ref().is_some_and(|(_, id)| *id == v.id) {
                        skipping = false;
                    }
                    continue;
                }
                if page.len() == max {
                    truncated = true;
                    break 'keys;
                }
                let (is_latest, last_modified) = (Some(i == 0), Some(timestamp(v.time)));
                let entry = match &v.content {
                    Some((size, etag)) => Entry::Version(ObjectVersion {
                        key: Some(key.clone()),
                        version_id: Some(v.id.clone()),
                        is_latest,
                        last_modified,
                        size: Some(*size),
                        e_tag: etag
                            .as_ref()
                            .map(|e| ETag::Strong(e.trim_matches('"').to_string())),
                        storage_class: Some(ObjectVersionStorageClass::from_static(
                            ObjectVersionStorageClass::STANDARD,
                        )),
                        owner: Some(super::buckets::owner()),
                        ..Default::default()
                    }),
                    None => Entry::Marker(DeleteMarkerEntry {
                        key: Some(key.clone()),
                        version_id: Some(v.id.clone()),
                        is_latest,
                        last_modified,
                        owner: Some(super::buckets::owner()),
                    }),
                };
                page.push((key.clone(), Some(v.id.clone()), entry));
            }
        }
        if exhausted {
            break;
        }
    }
    let (next_key, next_version) = match page.last() {
        Some((k, v, _)) if truncated => (Some(k.clone()), v.clone()),
        _ => (None, None),
    };
    let (mut versions, mut markers, mut prefixes) = (Vec::new(), Vec::new(), Vec::new());
    for (_, _, e) in page {
        match e {
            Entry::Version(v) => versions.push(v),
            Entry::Marker(m) => markers.push(m),
            Entry::Prefix(p) => prefixes.push(CommonPrefix { prefix: Some(p) }),
        }
    }
    Ok(S3Response::new(ListObjectVersionsOutput {
        name: Some(bucket),
        prefix: input.prefix,
        delimiter,
        key_marker: Some(input.key_marker.unwrap_or_default()),
        version_id_marker: Some(input.version_id_marker.unwrap_or_default()),
        max_keys: Some(max as i32),
        is_truncated: Some(truncated),
        next_key_marker: next_key,
        next_version_id_marker: next_version,
        versions: Some(versions),
        delete_markers: Some(markers),
        common_prefixes: Some(prefixes),
        ..Default::default()
    }))
}

/// A key that sorts just before `key` for an exclusive range start (so `key` itself is
/// listed): `key` without its last character, which sorts before it.
fn before(key: &str) -> String {
    let mut k = key.to_string();
    k.pop();
    k
}
