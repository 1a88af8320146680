//! Multipart uploads. Parts stream to files of their own, in constant memory; completion
//! checks the listed parts, concatenates them (streaming) into the content store and appends
//! one `ObjectCreated:CompleteMultipartUpload` event; the parts are removed only after that
//! event is durable.
//!
//! ```text
//! <data-dir>/multipart/<upload-id>/upload.json           bucket, key and what the object gets
//! <data-dir>/multipart/<upload-id>/<nnnnn>.<md5>.part   a part: number and MD5 in its name
//! <data-dir>/multipart/<upload-id>/<uuid>.tmp           a part being received
//! ```
//!
//! Invariants:
//! - a part file exists under its final name only once all of its bytes are fsynced (written
//!   to a `.tmp`, then renamed), so its name's MD5 is always the MD5 of its content;
//! - uploads in progress are state on disk only, so they survive a restart;
//! - a refused completion changes nothing: the checks run before any byte moves, and the parts
//!   stay until the upload is completed or aborted.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use serde::{Deserialize, Serialize};
use tidemark_core::blobs::hex;
use tidemark_core::event::EventType;

use super::buckets::require;
use super::errors::{check_key, from_core};
use super::objects::{checked_put, timestamp};
use crate::http::AppState;

/// The smallest part but the last that a completion accepts: S3's 5 MiB.
pub const MIN_PART_BYTES: u64 = 5 << 20;
/// Part numbers S3 accepts.
const PART_NUMBERS: std::ops::RangeInclusive<i32> = 1..=10_000;
/// Bytes gathered before each write or read: one blocking call per MiB.
const CHUNK: usize = 1 << 20;
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
}

/// A received part, as its file name records it.
struct StoredPart {
    number: i32,
    /// Lower-case hex MD5 of the part: its ETag.
    md5: String,
    size: u64,
    modified: std::time::SystemTime,
    path: PathBuf,
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

fn root(app: &AppState) -> PathBuf {
    app.node.multipart_dir.clone()
}

/// An upload's directory; the id must be ours (32 hex characters), so it names no other path.
fn upload_dir(app: &AppState, upload_id: &str) -> S3Result<PathBuf> {
    let ours = upload_id.len() == 32 && upload_id.bytes().all(|b| b.is_ascii_hexdigit());
    if !ours {
        return Err(no_such_upload(upload_id));
    }
    Ok(root(app).join(upload_id))
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

async fn run<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> S3Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal(what, e))?
        .map_err(|e| internal(what, e))
}

/// The upload `upload_id` of `bucket/key`, or `NoSuchUpload`.
async fn load(app: &AppState, bucket: &str, key: &str, upload_id: &str) -> S3Result<PathBuf> {
    let dir = upload_dir(app, upload_id)?;
    let path = dir.join("upload.json");
    let text = match tokio::fs::read(&path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(no_such_upload(upload_id));
        }
        Err(e) => return Err(internal("read upload state", e)),
    };
    let upload: Upload = serde_json::from_slice(&text).map_err(|e| internal("upload.json", e))?;
    if upload.bucket != bucket || upload.key != key {
        return Err(no_such_upload(upload_id));
    }
    Ok(dir)
}

fn read_upload(dir: &Path) -> std::io::Result<Upload> {
    let text = std::fs::read(dir.join("upload.json"))?;
    serde_json::from_slice(&text).map_err(std::io::Error::other)
}

/// The parts received, by number (the newest file when one number was sent twice).
fn parts_of(dir: &Path) -> std::io::Result<BTreeMap<i32, StoredPart>> {
    let mut parts = BTreeMap::<i32, StoredPart>::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".part")) else {
            continue;
        };
        let Some((number, md5)) = stem.split_once('.') else {
            continue;
        };
        let Ok(number) = number.parse::<i32>() else {
            continue;
        };
        let meta = entry.metadata()?;
        let part = StoredPart {
            number,
            md5: md5.to_string(),
            size: meta.len(),
            modified: meta.modified()?,
            path: entry.path(),
        };
        match parts.get(&number) {
            Some(p) if p.modified > part.modified => {}
            _ => {
                parts.insert(number, part);
            }
        }
    }
    Ok(parts)
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
    };
    let dir = root(app).join(&upload_id);
    let json = serde_json::to_vec(&upload).map_err(|e| internal("upload.json", e))?;
    run("create the upload", move || {
        std::fs::create_dir_all(&dir)?;
        tidemark_core::log::embedded::write_atomically(&dir, "upload.json", &json)
            .map_err(std::io::Error::other)
    })
    .await?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(upload_id),
        ..Default::default()
    }))
}

/// A part file being written, with its MD5 so far.
struct PartFile {
    file: std::fs::File,
    md5: Md5,
}

impl PartFile {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.md5.update(bytes);
        self.file.write_all(bytes)
    }
}

pub async fn upload_part(
    app: &Arc<AppState>,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let input = req.input;
    let dir = load(app, &input.bucket, &input.key, &input.upload_id).await?;
    let number = input.part_number;
    if !PART_NUMBERS.contains(&number) {
        return Err(s3_error!(
            InvalidArgument,
            "part number {number} is outside 1..=10000"
        ));
    }
    let max = app.limits.max_object_bytes;
    let mut body = input
        .body
        .ok_or_else(|| s3_error!(MissingRequestBodyError))?;
    let tmp = dir.join(format!("{}.tmp", uuid::Uuid::now_v7().simple()));
    let t = tmp.clone();
    let mut sink = run("create the part", move || {
        Ok(PartFile {
            file: std::fs::File::create(&t)?,
            md5: Md5::new(),
        })
    })
    .await?;
    let written = async {
        let (mut buf, mut size) = (Vec::with_capacity(CHUNK), 0u64);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                s3_error!(IncompleteBody, "the part broke off after {size} bytes: {e}")
            })?;
            size += chunk.len() as u64;
            if size > max {
                return Err(s3_error!(
                    EntityTooLarge,
                    "the part is larger than {max} bytes (--max-object-bytes)"
                ));
            }
            buf.extend_from_slice(&chunk);
            if buf.len() >= CHUNK {
                (sink, buf) = run("write the part", move || {
                    sink.write(&buf)?;
                    buf.clear();
                    Ok((sink, buf))
                })
                .await?;
            }
        }
        let (tmp, dir) = (tmp.clone(), dir.clone());
        run("store the part", move || {
            sink.write(&buf)?;
            sink.file.sync_all()?;
            let md5 = hex(&sink.md5.finalize());
            // Replace an earlier part of the same number.
            for old in parts_of(&dir)?.into_values().filter(|p| p.number == number) {
                std::fs::remove_file(&old.path)?;
            }
            std::fs::rename(&tmp, dir.join(format!("{number:05}.{md5}.part")))?;
            Ok(md5)
        })
        .await
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    Ok(S3Response::new(UploadPartOutput {
        e_tag: Some(ETag::Strong(written?)),
        ..Default::default()
    }))
}

pub async fn list_parts(
    app: &Arc<AppState>,
    req: S3Request<ListPartsInput>,
) -> S3Result<S3Response<ListPartsOutput>> {
    let input = req.input;
    let dir = load(app, &input.bucket, &input.key, &input.upload_id).await?;
    let parts = run("list the parts", move || parts_of(&dir)).await?;
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
    let root = root(app);
    let mut uploads = run("list the uploads", move || {
        let mut found = Vec::new();
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let id = entry.file_name().to_string_lossy().into_owned();
            match read_upload(&entry.path()) {
                Ok(u) => found.push((id, u)),
                // Being created or removed right now.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    })
    .await?;
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
    let truncated = uploads.len() > max;
    uploads.truncate(max);
    let (next_key, next_id) = match uploads.last() {
        Some((id, u)) if truncated => (Some(u.key.clone()), Some(id.clone())),
        _ => (None, None),
    };
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(input.bucket),
        prefix: input.prefix,
        key_marker: input.key_marker,
        upload_id_marker: input.upload_id_marker,
        max_uploads: Some(max as i32),
        is_truncated: Some(truncated),
        next_key_marker: next_key,
        next_upload_id_marker: next_id,
        uploads: Some(
            uploads
                .into_iter()
                .map(|(id, u)| MultipartUpload {
                    initiated: Some(timestamp(u.initiated)),
                    key: Some(u.key),
                    upload_id: Some(id),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }))
}

pub async fn abort(
    app: &Arc<AppState>,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let input = req.input;
    let _claim = Finishing::claim(&input.upload_id)?;
    let dir = load(app, &input.bucket, &input.key, &input.upload_id).await?;
    run("remove the upload", move || remove_upload(&dir)).await?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

/// Remove `upload.json` first, so a crash halfway leaves no upload that looks alive.
fn remove_upload(dir: &Path) -> std::io::Result<()> {
    std::fs::remove_file(dir.join("upload.json"))?;
    std::fs::remove_dir_all(dir)
}

/// The parts `listed` names, in order, once each is checked against what was received.
fn check_parts(
    listed: &[CompletedPart],
    mut stored: BTreeMap<i32, StoredPart>,
) -> S3Result<Vec<StoredPart>> {
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
fn multipart_etag(parts: &[StoredPart]) -> S3Result<String> {
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

/// The parts' bytes one after another, read a MiB at a time.
fn concatenated(paths: Vec<PathBuf>) -> tidemark_core::blobs::ByteStream<'static> {
    futures::stream::iter(paths)
        .then(|path| async move {
            let file = tokio::task::spawn_blocking(move || std::fs::File::open(path))
                .await
                .map_err(std::io::Error::other)??;
            Ok::<_, std::io::Error>(futures::stream::try_unfold(file, |mut file| async move {
                let (file, chunk) = tokio::task::spawn_blocking(move || {
                    let mut chunk = Vec::with_capacity(CHUNK);
                    (&mut file).take(CHUNK as u64).read_to_end(&mut chunk)?;
                    Ok::<_, std::io::Error>((file, chunk))
                })
                .await
                .map_err(std::io::Error::other)??;
                Ok((!chunk.is_empty()).then(|| (Bytes::from(chunk), file)))
            }))
        })
        .try_flatten()
        .boxed()
}

pub async fn complete(
    app: &Arc<AppState>,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let ctx = super::context(&req);
    let input = req.input;
    let _claim = Finishing::claim(&input.upload_id)?;
    let dir = load(app, &input.bucket, &input.key, &input.upload_id).await?;
    let d = dir.clone();
    let (upload, stored) = run("read the upload", move || {
        Ok((read_upload(&d)?, parts_of(&d)?))
    })
    .await?;
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
    let paths = parts.iter().map(|p| p.path.clone()).collect();
    let stored = app
        .node
        .blobs
        .put(concatenated(paths), max)
        .await
        .map_err(from_core)?;
    mutation.size = Some(stored.size as i64);
    mutation.etag = Some(etag.clone());
    mutation.sha256 = Some(stored.sha256);
    let version = tidemark_core::blobs::new_version_id();
    mutation.version_id = Some(version.clone());
    mutation.event_type = Some(EventType::ObjectCreatedCompleteMultipartUpload);
    // Durable before the parts go: a crash in between leaves an upload the client can abort.
    app.writer.append(mutation, &ctx).await.map_err(from_core)?;
    run("remove the parts", move || remove_upload(&dir)).await?;
    let versioned = super::versioning::status(app, &input.bucket).versioned();
    Ok(S3Response::new(CompleteMultipartUploadOutput {
        version_id: versioned.then_some(version),
        bucket: Some(input.bucket),
        key: Some(input.key),
        e_tag: Some(ETag::Strong(etag)),
        ..Default::default()
    }))
}
