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
//! event id (32 hex digits, the same form as object version ids).

use std::sync::Arc;

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use tidemark_core::blocking::blocking;
use tidemark_core::event::{EventType, ObjectState};
use tidemark_core::index::HistoryEntry;
use tidemark_core::ingest::{Op, RequestContext};

use super::buckets::require;
use super::errors::{check_key, from_core};
use super::objects::{existing, simple, timestamp};
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
    if history.iter().any(|e| {
        e.event_type == EventType::ObjectRemovedDeleteMarkerCreated && marker_id(e) == version_id
    }) {
        return Err(s3_error!(
            MethodNotAllowed,
            "version {version_id} of {bucket}/{key} is a delete marker"
        ));
    }
    match app
        .node
        .version_state(bucket, key, version_id)
        .await
        .map_err(from_core)?
    {
        Some(Read::State(state)) => Ok(state),
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

/// Put a delete marker on `bucket/key`; its version id, or `None` when the key does not exist
/// (never written, or its latest version is already a marker): nothing is appended then, as
/// for a missing key on an unversioned bucket.
pub async fn delete_marker(
    app: &AppState,
    bucket: &str,
    key: &str,
    ctx: &RequestContext,
) -> S3Result<Option<String>> {
    match existing(app, bucket, key).await {
        Ok(_) => {}
        Err(e) if *e.code() == s3s::S3ErrorCode::NoSuchKey => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut m = simple(Op::Delete, bucket, key);
    m.event_type = Some(EventType::ObjectRemovedDeleteMarkerCreated);
    let event_id = app.writer.append(m, ctx).await.map_err(from_core)?;
    let id = uuid::Uuid::parse_str(&event_id)
        .map(|u| u.simple().to_string())
        .unwrap_or(event_id);
    Ok(Some(id))
}

/// A delete marker's version id: its event id.
fn marker_id(e: &HistoryEntry) -> String {
    e.event_id.simple().to_string()
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
/// removed the version it deleted. Tag and metadata changes keep the version.
fn versions_of(history: &[HistoryEntry]) -> Vec<Version> {
    let mut out: Vec<Version> = Vec::new();
    for e in history {
        match e.event_type {
            EventType::ObjectCreatedPut
            | EventType::ObjectCreatedCopy
            | EventType::ObjectCreatedCompleteMultipartUpload => out.push(Version {
                id: e.version_id.clone().unwrap_or_else(|| "null".into()),
                time: e.event_time,
                content: Some((e.size.unwrap_or(0), e.etag.clone())),
            }),
            EventType::ObjectRemovedDeleteMarkerCreated => out.push(Version {
                id: marker_id(e),
                time: e.event_time,
                content: None,
            }),
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

pub async fn list(
    app: &Arc<AppState>,
    req: S3Request<ListObjectVersionsInput>,
) -> S3Result<S3Response<ListObjectVersionsOutput>> {
    let input = req.input;
    let bucket = input.bucket.clone();
    require(app, &bucket)?;
    if input.delimiter.is_some() {
        return Err(s3_error!(
            NotImplemented,
            "ListObjectVersions with a delimiter is not supported yet"
        ));
    }
    if input.version_id_marker.is_some() {
        return Err(s3_error!(
            NotImplemented,
            "version-id-marker is not supported: pages end at a key, continue with key-marker"
        ));
    }
    let max = input
        .max_keys
        .map_or(MAX_KEYS, |n| n.clamp(0, MAX_KEYS as i32) as usize);
    app.node
        .catch_up(Consistency::Strong)
        .await
        .map_err(from_core)?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let index = app.node.index.clone();
    let (b, p, after) = (bucket.clone(), prefix.clone(), input.key_marker.clone());
    // One more key than can fit says whether the listing is truncated.
    let keys = blocking(move || index.keys(&b, &p, after.as_deref(), max + 1))
        .await
        .map_err(from_core)?;
    let (mut versions, mut markers) = (Vec::new(), Vec::new());
    let (mut count, mut last_key, mut truncated) = (0, None, false);
    for key in keys {
        // A page ends between keys, so a key with many versions can exceed max-keys.
        if count >= max {
            truncated = true;
            break;
        }
        let entries = versions_of(&history(app, &bucket, &key).await?);
        for (i, v) in entries.iter().rev().enumerate() {
            let (is_latest, last_modified) = (Some(i == 0), Some(timestamp(v.time)));
            match &v.content {
                Some((size, etag)) => versions.push(ObjectVersion {
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
                    ..Default::default()
                }),
                None => markers.push(DeleteMarkerEntry {
                    key: Some(key.clone()),
                    version_id: Some(v.id.clone()),
                    is_latest,
                    last_modified,
                    ..Default::default()
                }),
            }
        }
        count += entries.len();
        last_key = Some(key);
    }
    Ok(S3Response::new(ListObjectVersionsOutput {
        name: Some(bucket),
        prefix: input.prefix,
        key_marker: input.key_marker,
        max_keys: Some(max as i32),
        is_truncated: Some(truncated),
        next_key_marker: last_key.filter(|_| truncated),
        versions: Some(versions),
        delete_markers: Some(markers),
        ..Default::default()
    }))
}
