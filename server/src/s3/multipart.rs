//! Multipart uploads. Parts stream into the content store's part store
//! (`tidemark_core::multipart`: files under `<content-store>/multipart/`, or objects under
//! `s3://…/multipart/` that every node shares), in constant memory; completion checks the
//! listed parts, concatenates them (streaming) into the content store and appends one
//! `ObjectCreated:CompleteMultipartUpload` event; the parts are removed only after that event
//! is durable. With a shared content store, parts may go to any node and any node completes.
//!
//! Invariants:
//! - a part is visible under its name only once all of its bytes are stored, so its name's MD5
//!   is always the MD5 of its content;
//! - uploads in progress are state in the content store only, so they survive a restart;
//! - a refused completion changes nothing: the checks run before any byte moves, and the parts
//!   stay until the upload is completed or aborted.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use serde::{Deserialize, Serialize};
use tidemark_core::blobs::hex;
use tidemark_core::event::EventType;
use tidemark_core::multipart::{PartInfo, check_upload_id};

use super::buckets::require;
use super::conditions::write_condition;
use super::errors::{check_key, from_core};
use super::integrity::{Algorithm, Expected, Sum};
use super::objects::{checked_put, timestamp};
use crate::http::AppState;

/// The smallest part but the last that a completion accepts: S3's 5 MiB.
pub const MIN_PART_BYTES: u64 = 5 << 20;
/// Part numbers S3 accepts.
const PART_NUMBERS: std::ops::RangeInclusive<i32> = 1..=10_000;
/// Entries in a listing page unless the client asks for fewer.
const MAX_LISTED: usize = 1000;

/// What `CreateMultipartUpload` said, kept for the completion (`upload.json`).
#[derive(Serialize, Deserialize)]
struct Upload {
    bucket: String,
    key: String,
    content_type: Option<String>,
    metadata: Option<BTreeMap<String, String>>,
    /// `x-amz-tagging` as sent (`k=v&k2=v2`).
    tagging: Option<String>,
    /// When the upload was created (µs since the epoch).
    initiated: i64,
    /// The standard headers the object will keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    headers: Option<BTreeMap<String, String>>,
}

/// Uploads being completed or aborted on this node: a second request for one of them (a
/// client's retry) waits for no bytes and appends no second event.
static FINISHING: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// A claim on finishing an upload, released when dropped.
struct Finishing(String);

impl Finishing {
    fn claim(upload_id: &str) -> S3Result<Finishing> {
        let mut busy = FINISHING.lock().unwrap_or_else(|e| e.into_inner());
        if busy.iter().any(|id| id == upload_id) {
            return Err(s3_error!(
                NoSuchUpload,
                "upload '{upload_id}' is being completed or aborted by another request"
            ));
        }
        busy.push(upload_id.to_string());
        Ok(Finishing(upload_id.to_string()))
    }
}

impl Drop for Finishing {
    fn drop(&mut self) {
        let mut busy = FINISHING.lock().unwrap_or_else(|e| e.into_inner());
        busy.retain(|id| *id != self.0);
    }
}

/// An upload this node completed lately: a client that retries a CompleteMultipartUpload
/// whose answer it lost gets the same answer, as from S3.
struct Completed {
    upload_id: String,
    bucket: String,
    key: String,
    etag: String,
    version_id: Option<String>,
}

impl Completed {
    fn answer(&self) -> CompleteMultipartUploadOutput {
        CompleteMultipartUploadOutput {
            version_id: self.version_id.clone(),
            bucket: Some(self.bucket.clone()),
            key: Some(self.key.clone()),
            e_tag: Some(ETag::Strong(self.etag.clone())),
            ..Default::default()
        }
    }
}

static COMPLETED: std::sync::Mutex<std::collections::VecDeque<Completed>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());

/// How many completed uploads are remembered.
const REMEMBERED: usize = 1024;

fn completed_before(
    upload_id: &str,
    bucket: &str,
    key: &str,
) -> Option<CompleteMultipartUploadOutput> {
    let done = COMPLETED.lock().unwrap_or_else(|e| e.into_inner());
    done.iter()
        .find(|c| c.upload_id == upload_id && c.bucket == bucket && c.key == key)
        .map(Completed::answer)
}

fn remember_completed(c: Completed) {
    let mut done = COMPLETED.lock().unwrap_or_else(|e| e.into_inner());
    if done.len() == REMEMBERED {
        done.pop_front();
    }
    done.push_back(c);
}

fn check_part_number(number: i32) -> S3Result<()> {
    match PART_NUMBERS.contains(&number) {
        true => Ok(()),
        false => Err(s3_error!(
            InvalidArgument,
            "part number {number} is outside 1..=10000"
        )),
    }
}

fn no_such_upload(upload_id: &str) -> S3Error {
    s3_error!(
        NoSuchUpload,
        "upload '{upload_id}' does not exist: it was never created, or was completed or aborted"
    )
}

fn internal(what: &str, e: impl std::fmt::Display) -> S3Error {
    S3Error::with_message(S3ErrorCode::InternalError, format!("{what}: {e}"))
}

/// The upload `upload_id` of `bucket/key`, or `NoSuchUpload`.
async fn load(app: &AppState, bucket: &str, key: &str, upload_id: &str) -> S3Result<Upload> {
    check_upload_id(upload_id).map_err(|_| no_such_upload(upload_id))?;
    let text = app
        .node
        .parts
        .description(upload_id)
        .await
        .map_err(|e| internal("read upload state", e))?
        .ok_or_else(|| no_such_upload(upload_id))?;
    let upload: Upload = serde_json::from_slice(&text).map_err(|e| internal("upload.json", e))?;
    if upload.bucket != bucket || upload.key != key {
        return Err(no_such_upload(upload_id));
    }
    Ok(upload)
}

pub async fn create(
    app: &Arc<AppState>,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let input = req.input;
    require(app, &input.bucket)?;
    check_key(&input.key)?;
    // Refuse bad metadata or tags now, as S3 does, not at the completion.
    checked_put(
        &input.bucket,
        &input.key,
        input.content_type.as_deref(),
        input.metadata.as_ref(),
        input.tagging.as_deref(),
    )?;
    let upload_id = tidemark_core::blobs::new_version_id();
    let upload = Upload {
        bucket: input.bucket.clone(),
        key: input.key.clone(),
        content_type: input.content_type.clone(),
        metadata: input.metadata.map(|m| m.into_iter().collect()),
        tagging: input.tagging,
        initiated: tidemark_core::time::now_us(),
        headers: super::headers::from_upload(
            input.cache_control.as_deref(),
            input.content_disposition.as_deref(),
            input.content_encoding.as_deref(),
            input.content_language.as_deref(),
            input.expires.as_ref(),
        ),
    };
    let json = serde_json::to_vec(&upload).map_err(|e| internal("upload.json", e))?;
    app.node
        .parts
        .create(&upload_id, json)
        .await
        .map_err(|e| internal("create the upload", e))?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(upload_id),
        ..Default::default()
    }))
}

pub async fn upload_part(
    app: &Arc<AppState>,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let expected = Arc::new(Expected::of(&req.headers, req.trailing_headers.clone())?);
    let input = req.input;
    load(app, &input.bucket, &input.key, &input.upload_id).await?;
    let number = input.part_number;
    check_part_number(number)?;
    let body = input
        .body
        .ok_or_else(|| s3_error!(MissingRequestBodyError))?
        .map(|chunk| chunk.map_err(std::io::Error::other));
    let body = expected.check(body).boxed();
    let md5 = app
        .node
        .parts
        .put_part(&input.upload_id, number, body, app.limits.max_object_bytes)
        .await
        .map_err(|e| match (expected.failure(), e) {
            (Some(refusal), _) => refusal,
            (None, tidemark_core::Error::Invalid { message, .. }) => {
                S3Error::with_message(S3ErrorCode::EntityTooLarge, message)
            }
            (None, tidemark_core::Error::BadInput(message)) => {
                S3Error::with_message(S3ErrorCode::IncompleteBody, message)
            }
            (None, e) => internal("store the part", e),
        })?;
    let sum = expected.sum();
    let sum = sum.as_ref();
    Ok(S3Response::new(UploadPartOutput {
        e_tag: Some(ETag::Strong(md5)),
        checksum_crc32: Sum::of(sum, Algorithm::Crc32),
        checksum_crc32c: Sum::of(sum, Algorithm::Crc32c),
        checksum_crc64nvme: Sum::of(sum, Algorithm::Crc64Nvme),
        checksum_sha1: Sum::of(sum, Algorithm::Sha1),
        checksum_sha256: Sum::of(sum, Algorithm::Sha256),
        ..Default::default()
    }))
}

/// A part copied from an existing object (or a byte range of it, `bytes=FIRST-LAST`): its
/// bytes stream from the content store into the part, as an uploaded part's would.
pub async fn upload_part_copy(
    app: &Arc<AppState>,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let input = req.input;
    load(app, &input.bucket, &input.key, &input.upload_id).await?;
    let number = input.part_number;
    check_part_number(number)?;
    let conditions = super::conditions::Conditions {
        if_match: input.copy_source_if_match.clone(),
        if_none_match: input.copy_source_if_none_match.clone(),
        if_modified_since: input.copy_source_if_modified_since.clone(),
        if_unmodified_since: input.copy_source_if_unmodified_since.clone(),
    };
    let (src_bucket, src_key, source) =
        super::objects::copy_source(app, &input.copy_source, &conditions).await?;
    let size = source.size as u64;
    let range = input
        .copy_source_range
        .as_deref()
        .map(|r| copy_range(r, size))
        .transpose()?;
    let sha256 = source.sha256.clone().ok_or_else(|| {
        s3_error!(
            InvalidObjectState,
            "{src_bucket}/{src_key} was recorded as metadata only; Tidemark never held its bytes"
        )
    })?;
    let blob = app
        .node
        .blobs
        .read(&sha256, range)
        .await
        .map_err(from_core)?
        .ok_or_else(|| {
            s3_error!(
                InvalidObjectState,
                "the content of {src_bucket}/{src_key} is not held on this node"
            )
        })?;
    let md5 = app
        .node
        .parts
        .put_part(
            &input.upload_id,
            number,
            blob.body,
            app.limits.max_object_bytes,
        )
        .await
        .map_err(|e| match e {
            tidemark_core::Error::Invalid { message, .. } => {
                S3Error::with_message(S3ErrorCode::EntityTooLarge, message)
            }
            e => internal("copy the part", e),
        })?;
    let versioned = super::versioning::status(app, src_bucket).versioned();
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(CopyPartResult {
            e_tag: Some(ETag::Strong(md5)),
            last_modified: Some(timestamp(tidemark_core::time::now_us())),
            ..Default::default()
        }),
        copy_source_version_id: source.version_id.clone().filter(|_| versioned),
        ..Default::default()
    }))
}

/// `x-amz-copy-source-range` (`bytes=FIRST-LAST`, both inclusive, inside the source) as a
/// byte range.
fn copy_range(text: &str, size: u64) -> S3Result<std::ops::Range<u64>> {
    let bad = || {
        s3_error!(
            InvalidArgument,
            "x-amz-copy-source-range '{text}' must be bytes=FIRST-LAST within the source's \
             {size} bytes"
        )
    };
    let (first, last) = text
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .ok_or_else(bad)?;
    let (first, last): (u64, u64) = (
        first.trim().parse().map_err(|_| bad())?,
        last.trim().parse().map_err(|_| bad())?,
    );
    if first > last || last >= size {
        return Err(s3_error!(
            InvalidRange,
            "x-amz-copy-source-range '{text}' is outside the source's {size} bytes"
        ));
    }
    Ok(first..last + 1)
}

pub async fn list_parts(
    app: &Arc<AppState>,
    req: S3Request<ListPartsInput>,
) -> S3Result<S3Response<ListPartsOutput>> {
    let input = req.input;
    load(app, &input.bucket, &input.key, &input.upload_id).await?;
    let parts = app
        .node
        .parts
        .parts(&input.upload_id)
        .await
        .map_err(|e| internal("list the parts", e))?;
    let marker = input.part_number_marker.unwrap_or(0);
    let max = input
        .max_parts
        .map_or(MAX_LISTED, |m| m.clamp(0, 1000) as usize);
    let after: Vec<_> = parts.into_values().filter(|p| p.number > marker).collect();
    let truncated = after.len() > max;
    let page: Vec<Part> = after
        .into_iter()
        .take(max)
        .map(|p| Part {
            e_tag: Some(ETag::Strong(p.md5)),
            last_modified: Some(Timestamp::from(p.modified)),
            part_number: Some(p.number),
            size: Some(p.size as i64),
            ..Default::default()
        })
        .collect();
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(input.upload_id),
        is_truncated: Some(truncated),
        max_parts: Some(max as i32),
        part_number_marker: input.part_number_marker,
        next_part_number_marker: page.last().and_then(|p| p.part_number),
        parts: Some(page),
        ..Default::default()
    }))
}

pub async fn list_uploads(
    app: &Arc<AppState>,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let input = req.input;
    require(app, &input.bucket)?;
    let mut uploads = Vec::new();
    for open in app
        .node
        .parts
        .uploads()
        .await
        .map_err(|e| internal("list the uploads", e))?
    {
        let upload: Upload =
            serde_json::from_slice(&open.description).map_err(|e| internal("upload.json", e))?;
        uploads.push((open.id, upload));
    }
    let prefix = input.prefix.clone().unwrap_or_default();
    uploads.retain(|(_, u)| u.bucket == input.bucket && u.key.starts_with(&prefix));
    uploads.sort_by(|(a_id, a), (b_id, b)| (&a.key, a_id).cmp(&(&b.key, b_id)));
    if let Some(key_marker) = &input.key_marker {
        let id_marker = input.upload_id_marker.clone().unwrap_or_default();
        uploads.retain(|(id, u)| {
            &u.key > key_marker
                || (&u.key == key_marker && !id_marker.is_empty() && *id > id_marker)
        });
    }
    let max = input
        .max_uploads
        .map_or(MAX_LISTED, |m| m.clamp(0, 1000) as usize);
    // With a delimiter, the uploads of keys under a common prefix are one entry, as in
    // ListObjects; a page that ended on such a prefix is not repeated by the next.
    let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
    let mut entries: Vec<(String, Option<(String, Upload)>)> = Vec::new();
    for (id, u) in uploads {
        let common = delimiter.as_deref().and_then(|d| {
            u.key[prefix.len()..]
                .find(d)
                .map(|i| u.key[..prefix.len() + i + d.len()].to_string())
        });
        match common {
            Some(c) if input.key_marker.as_deref() == Some(c.as_str()) => {}
            Some(c) if entries.last().is_some_and(|(k, e)| e.is_none() && *k == c) => {}
            Some(c) => entries.push((c, None)),
            None => entries.push((u.key.clone(), Some((id, u)))),
        }
    }
    let truncated = entries.len() > max;
    entries.truncate(max);
    let (next_key, next_id) = match entries.last() {
        Some((key, upload)) if truncated => {
            (Some(key.clone()), upload.as_ref().map(|(id, _)| id.clone()))
        }
        _ => (None, None),
    };
    let (mut listed, mut prefixes) = (Vec::new(), Vec::new());
    for (key, upload) in entries {
        match upload {
            Some((id, u)) => listed.push(MultipartUpload {
                initiated: Some(timestamp(u.initiated)),
                key: Some(u.key),
                upload_id: Some(id),
                owner: Some(super::buckets::owner()),
                storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                ..Default::default()
            }),
            None => prefixes.push(CommonPrefix { prefix: Some(key) }),
        }
    }
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(input.bucket),
        prefix: input.prefix,
        delimiter,
        key_marker: input.key_marker,
        upload_id_marker: input.upload_id_marker,
        max_uploads: Some(max as i32),
        is_truncated: Some(truncated),
        next_key_marker: next_key,
        next_upload_id_marker: next_id,
        uploads: Some(listed),
        common_prefixes: Some(prefixes),
        ..Default::default()
    }))
}

pub async fn abort(
    app: &Arc<AppState>,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let input = req.input;
    let _claim = Finishing::claim(&input.upload_id)?;
    load(app, &input.bucket, &input.key, &input.upload_id).await?;
    app.node
        .parts
        .remove(&input.upload_id)
        .await
        .map_err(|e| internal("remove the upload", e))?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

/// The parts `listed` names, in order, once each is checked against what was received.
fn check_parts(
    listed: &[CompletedPart],
    mut stored: BTreeMap<i32, PartInfo>,
) -> S3Result<Vec<PartInfo>> {
    if listed.is_empty() {
        return Err(s3_error!(
            MalformedXML,
            "the completion lists no parts; list at least one"
        ));
    }
    let mut chosen = Vec::with_capacity(listed.len());
    let mut previous = 0;
    for p in listed {
        let number = p
            .part_number
            .ok_or_else(|| s3_error!(InvalidPart, "a listed part has no part number"))?;
        if number <= previous {
            return Err(s3_error!(
                InvalidPartOrder,
                "part {number} follows part {previous}: list parts in ascending order, once each"
            ));
        }
        previous = number;
        let part = stored
            .remove(&number)
            .ok_or_else(|| s3_error!(InvalidPart, "part {number} was never uploaded"))?;
        let wanted = p.e_tag.as_ref().map(|e| e.value().trim_matches('"'));
        if wanted != Some(part.md5.as_str()) {
            return Err(s3_error!(
                InvalidPart,
                "part {number} has ETag \"{}\", not {:?}",
                part.md5,
                wanted.unwrap_or("")
            ));
        }
        chosen.push(part);
    }
    let last = chosen.len() - 1;
    if let Some(small) = chosen[..last].iter().find(|p| p.size < MIN_PART_BYTES) {
        return Err(s3_error!(
            EntityTooSmall,
            "part {} is {} bytes; every part but the last must be at least {MIN_PART_BYTES}",
            small.number,
            small.size
        ));
    }
    Ok(chosen)
}

/// S3's ETag of a multipart object: the MD5 of the parts' MD5s, then `-<parts>`.
fn multipart_etag(parts: &[PartInfo]) -> S3Result<String> {
    let mut md5 = Md5::new();
    for p in parts {
        let bytes = (0..p.md5.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(p.md5.get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|e| internal("part name", e))?;
        md5.update(&bytes);
    }
    Ok(format!("{}-{}", hex(&md5.finalize()), parts.len()))
}

pub async fn complete(
    app: &Arc<AppState>,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let ctx = super::context(&req);
    let input = req.input;
    let _claim = Finishing::claim(&input.upload_id)?;
    let upload = match load(app, &input.bucket, &input.key, &input.upload_id).await {
        Ok(upload) => upload,
        Err(e) => {
            return match completed_before(&input.upload_id, &input.bucket, &input.key) {
                Some(out) => Ok(S3Response::new(out)),
                None => Err(e),
            };
        }
    };
    let condition = write_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
    let stored = app
        .node
        .parts
        .parts(&input.upload_id)
        .await
        .map_err(|e| internal("read the upload", e))?;
    let listed = input
        .multipart_upload
        .and_then(|m| m.parts)
        .unwrap_or_default();
    let parts = check_parts(&listed, stored)?;
    let size: u64 = parts.iter().map(|p| p.size).sum();
    let max = app.limits.max_object_bytes;
    if size > max {
        return Err(s3_error!(
            EntityTooLarge,
            "the object would be {size} bytes, more than {max} (--max-object-bytes)"
        ));
    }
    let metadata: Option<Metadata> = upload.metadata.map(|m| m.into_iter().collect());
    let mut mutation = checked_put(
        &upload.bucket,
        &upload.key,
        upload.content_type.as_deref(),
        metadata.as_ref(),
        upload.tagging.as_deref(),
    )?;
    let etag = multipart_etag(&parts)?;
    let part_sizes: Vec<i64> = parts.iter().map(|p| p.size as i64).collect();
    let body = app.node.parts.concatenated(&input.upload_id, parts);
    let stored = app.node.blobs.put(body, max).await.map_err(from_core)?;
    mutation.size = Some(stored.size as i64);
    mutation.etag = Some(etag.clone());
    mutation.sha256 = Some(stored.sha256);
    let version = super::versioning::new_version(app, &input.bucket);
    mutation.version_id = Some(version.clone());
    mutation.event_type = Some(EventType::ObjectCreatedCompleteMultipartUpload);
    mutation.condition = condition;
    mutation.headers = upload.headers;
    mutation.part_sizes = Some(part_sizes);
    // Durable before the parts go: a crash in between leaves an upload the client can abort.
    app.writer.append(mutation, &ctx).await.map_err(from_core)?;
    app.node
        .parts
        .remove(&input.upload_id)
        .await
        .map_err(|e| internal("remove the parts", e))?;
    let versioned = super::versioning::status(app, &input.bucket).versioned();
    let done = Completed {
        upload_id: input.upload_id,
        bucket: input.bucket,
        key: input.key,
        etag,
        version_id: versioned.then_some(version),
    };
    let out = done.answer();
    remember_completed(done);
    Ok(S3Response::new(out))
}
