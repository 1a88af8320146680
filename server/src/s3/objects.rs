//! Objects: uploads stream into the content store and become `put` mutations; reads come from
//! the index (after catching up) and the content store.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tidemark_core::event::{EventType, ObjectState};
use tidemark_core::ingest::{BatchLimits, Mutation, Op, RequestContext, parse_batch};

use super::buckets::require;
use super::conditions::{Conditions, check, check_copy_source, write_condition};
use super::errors::{check_key, from_core};
use super::headers;
use super::integrity::{Algorithm, Expected, Sum};
use crate::http::AppState;
use crate::node::objects::Consistency;
use crate::node::objects::parse_tagging;

/// An event time (µs) as an S3 timestamp.
pub fn timestamp(us: i64) -> Timestamp {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us.max(0) as u64);
    Timestamp::from(t)
}

fn etag(state: &ObjectState) -> Option<ETag> {
    state
        .etag
        .as_ref()
        .map(|e| ETag::Strong(e.trim_matches('"').to_string()))
}

/// A `put` of `bucket/key` checked by the same rules as `POST /v1/mutations` (metadata and
/// tag limits); size and digests are filled in once the content is stored.
pub(super) fn checked_put(
    bucket: &str,
    key: &str,
    content_type: Option<&str>,
    metadata: Option<&Metadata>,
    tagging: Option<&str>,
) -> S3Result<Mutation> {
    let mut m = serde_json::json!({"op": "put", "bucket": bucket, "key": key, "size": 0});
    if let Some(ct) = content_type {
        m["content_type"] = ct.into();
    }
    if let Some(meta) = metadata.filter(|m| !m.is_empty()) {
        let sorted: BTreeMap<_, _> = meta.iter().collect();
        m["metadata"] = serde_json::json!(sorted);
    }
    if let Some(t) = tagging {
        let tags =
            parse_tagging(t).map_err(|m| S3Error::with_message(S3ErrorCode::InvalidTag, m))?;
        m["tags"] = serde_json::json!(tags);
    }
    let body = serde_json::json!({ "mutations": [m] }).to_string();
    let mut parsed =
        parse_batch(body.as_bytes(), BatchLimits { max_mutations: 1 }).map_err(|e| match e {
            tidemark_core::Error::Invalid { field, message } if field.ends_with(".metadata") => {
                S3Error::with_message(S3ErrorCode::MetadataTooLarge, format!("metadata {message}"))
            }
            tidemark_core::Error::Invalid { field, message } if field.ends_with(".tags") => {
                S3Error::with_message(S3ErrorCode::InvalidTag, format!("tags {message}"))
            }
            e => from_core(e),
        })?;
    Ok(parsed.pop().expect("one mutation"))
}

/// A mutation of an existing object (delete, tag, untag).
pub fn simple(op: Op, bucket: &str, key: &str) -> Mutation {
    Mutation::new(op, bucket, key)
}

/// The object as it is after every acknowledged write, or `NoSuchKey`.
pub async fn existing(app: &AppState, bucket: &str, key: &str) -> S3Result<ObjectState> {
    require(app, bucket)?;
    check_key(key)?;
    app.node
        .catch_up(Consistency::Strong)
        .await
        .map_err(from_core)?;
    app.node
        .current_state(bucket, key)
        .await
        .map_err(from_core)?
        .ok_or_else(|| s3_error!(NoSuchKey, "object {bucket}/{key} does not exist"))
}

pub async fn put(
    app: &Arc<AppState>,
    req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    let ctx = super::context(&req);
    let expected = Arc::new(Expected::of(&req.headers, req.trailing_headers.clone())?);
    let input = req.input;
    require(app, &input.bucket)?;
    check_key(&input.key)?;
    let mut mutation = checked_put(
        &input.bucket,
        &input.key,
        input.content_type.as_deref(),
        input.metadata.as_ref(),
        input.tagging.as_deref(),
    )?;
    mutation.condition = write_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
    mutation.headers = headers::from_upload(
        input.cache_control.as_deref(),
        input.content_disposition.as_deref(),
        input.content_encoding.as_deref(),
        input.content_language.as_deref(),
        input.expires.as_ref(),
    );
    let max = app.limits.max_object_bytes;
    if input.content_length.is_some_and(|n| n as u64 > max) {
        return Err(too_large(max));
    }
    let body = input
        .body
        .ok_or_else(|| s3_error!(MissingRequestBodyError))?;
    let stream = expected.check(body.map_err(std::io::Error::other));
    let stored = app
        .node
        .blobs
        .put_before_append(Box::pin(stream), max)
        .await
        .map_err(|e| match (expected.failure(), e) {
            (Some(refusal), _) => refusal,
            (None, tidemark_core::Error::Invalid { field, .. }) if field == "body" => {
                too_large(max)
            }
            (None, e) => from_core(e),
        })?;
    mutation.size = Some(stored.size as i64);
    mutation.etag = Some(stored.md5.clone());
    mutation.sha256 = Some(stored.sha256);
    mutation.checksum = expected.sum().as_ref().map(headers::checksum_text);
    let version = super::versioning::new_version(app, &input.bucket);
    mutation.version_id = Some(version.clone());
    // If the event cannot be appended, the blob stays unreferenced and GC takes it later.
    app.writer.append(mutation, &ctx).await.map_err(from_core)?;
    let sum = expected.sum();
    let sum = sum.as_ref();
    Ok(S3Response::new(PutObjectOutput {
        e_tag: Some(ETag::Strong(stored.md5)),
        checksum_crc32: Sum::of(sum, Algorithm::Crc32),
        checksum_crc32c: Sum::of(sum, Algorithm::Crc32c),
        checksum_crc64nvme: Sum::of(sum, Algorithm::Crc64Nvme),
        checksum_sha1: Sum::of(sum, Algorithm::Sha1),
        checksum_sha256: Sum::of(sum, Algorithm::Sha256),
        version_id: super::versioning::status(app, &input.bucket)
            .versioned()
            .then_some(version),
        ..Default::default()
    }))
}

fn too_large(max: u64) -> S3Error {
    s3_error!(
        EntityTooLarge,
        "the object is larger than {max} bytes, the most this server stores (--max-object-bytes)"
    )
}

pub async fn get(
    app: &Arc<AppState>,
    req: S3Request<GetObjectInput>,
) -> S3Result<S3Response<GetObjectOutput>> {
    let ctx = super::context(&req);
    let input = req.input;
    let state = match &input.version_id {
        Some(v) => super::versioning::existing_version(app, &input.bucket, &input.key, v).await?,
        None => match existing(app, &input.bucket, &input.key).await {
            Ok(state) => state,
            Err(e) => {
                return Err(super::versioning::not_found(app, &input.bucket, &input.key, e).await);
            }
        },
    };
    check(
        &Conditions {
            if_match: input.if_match,
            if_none_match: input.if_none_match,
            if_modified_since: input.if_modified_since,
            if_unmodified_since: input.if_unmodified_since,
        },
        &state,
    )?;
    let size = state.size as u64;
    let range = match (input.part_number, input.range) {
        (Some(_), Some(_)) => {
            return Err(s3_error!(
                InvalidRequest,
                "a Range header and partNumber cannot be given together"
            ));
        }
        (Some(n), None) => Some(part(&state, n)?),
        (None, r) => r.map(|r| r.check(size)).transpose().map_err(|_| {
            s3_error!(
                InvalidRange,
                "the range is outside the object's {size} bytes"
            )
        })?,
    };
    let sha256 = state.sha256.clone().ok_or_else(|| {
        s3_error!(
            InvalidObjectState,
            "{}/{} was recorded as metadata only; Tidemark never held its bytes",
            input.bucket,
            input.key
        )
    })?;
    let blob = app
        .node
        .blobs
        .read(&sha256, range.clone())
        .await
        .map_err(from_core)?
        .ok_or_else(|| {
            s3_error!(
                InvalidObjectState,
                "the content of {}/{} is not held on this node",
                input.bucket,
                input.key
            )
        })?;
    let seen = EventType::ObjectAccessedGet;
    super::access::read(app, &input.bucket, &input.key, seen, ctx, &state);
    let (length, content_range) = match &range {
        Some(r) => (
            r.end - r.start,
            Some(format!(
                "bytes {}-{}/{size}",
                r.start,
                r.end.saturating_sub(1)
            )),
        ),
        None => (size, None),
    };
    let kept = headers::of(&state);
    // The checksum is of the whole object: a read of less (a range, one part of several)
    // answers none, as S3 does, or a client that checks it would refuse the bytes.
    let whole = range.as_ref().is_none_or(|r| r.start == 0 && r.end == size);
    let sum = checksum_mode(input.checksum_mode.as_ref(), &state).filter(|_| whole);
    let sum = sum.as_ref();
    Ok(S3Response::new(GetObjectOutput {
        body: Some(StreamingBlob::wrap(SyncBody::new(blob.body))),
        content_length: Some(length as i64),
        content_range,
        accept_ranges: Some("bytes".into()),
        content_type: state.content_type.clone(),
        cache_control: kept.cache_control,
        content_disposition: kept.content_disposition,
        content_encoding: kept.content_encoding,
        content_language: kept.content_language,
        expires: kept.expires,
        parts_count: parts_count(&state, input.part_number),
        checksum_crc32: Sum::of(sum, Algorithm::Crc32),
        checksum_crc32c: Sum::of(sum, Algorithm::Crc32c),
        checksum_crc64nvme: Sum::of(sum, Algorithm::Crc64Nvme),
        checksum_sha1: Sum::of(sum, Algorithm::Sha1),
        checksum_sha256: Sum::of(sum, Algorithm::Sha256),
        e_tag: etag(&state),
        last_modified: Some(timestamp(state.last_modified)),
        metadata: Some(state.metadata.clone().into_iter().collect()),
        version_id: super::versioning::shown(app, &input.bucket, &state),
        tag_count: (!state.tags.is_empty()).then_some(state.tags.len() as i32),
        ..Default::default()
    }))
}

pub async fn head(
    app: &Arc<AppState>,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    let ctx = super::context(&req);
    let input = req.input;
    let state = match &input.version_id {
        Some(v) => super::versioning::existing_version(app, &input.bucket, &input.key, v).await?,
        None => match existing(app, &input.bucket, &input.key).await {
            Ok(state) => state,
            Err(e) => {
                return Err(super::versioning::not_found(app, &input.bucket, &input.key, e).await);
            }
        },
    };
    check(
        &Conditions {
            if_match: input.if_match,
            if_none_match: input.if_none_match,
            if_modified_since: input.if_modified_since,
            if_unmodified_since: input.if_unmodified_since,
        },
        &state,
    )?;
    let length = match input.part_number {
        Some(n) => part(&state, n).map(|r| (r.end - r.start) as i64)?,
        None => state.size,
    };
    let seen = EventType::ObjectAccessedHead;
    super::access::read(app, &input.bucket, &input.key, seen, ctx, &state);
    let kept = headers::of(&state);
    let sum = checksum_mode(input.checksum_mode.as_ref(), &state);
    let sum = sum.as_ref();
    Ok(S3Response::new(HeadObjectOutput {
        content_length: Some(length),
        accept_ranges: Some("bytes".into()),
        content_type: state.content_type.clone(),
        cache_control: kept.cache_control,
        content_disposition: kept.content_disposition,
        content_encoding: kept.content_encoding,
        content_language: kept.content_language,
        expires: kept.expires,
        parts_count: parts_count(&state, input.part_number),
        checksum_crc32: Sum::of(sum, Algorithm::Crc32),
        checksum_crc32c: Sum::of(sum, Algorithm::Crc32c),
        checksum_crc64nvme: Sum::of(sum, Algorithm::Crc64Nvme),
        checksum_sha1: Sum::of(sum, Algorithm::Sha1),
        checksum_sha256: Sum::of(sum, Algorithm::Sha256),
        e_tag: etag(&state),
        last_modified: Some(timestamp(state.last_modified)),
        metadata: Some(state.metadata.clone().into_iter().collect()),
        version_id: super::versioning::shown(app, &input.bucket, &state),
        ..Default::default()
    }))
}

/// Part `number` of the object as a byte range: `InvalidPartNumber` when it has no such part
/// (a single-part object has part 1 only).
fn part(state: &ObjectState, number: i32) -> S3Result<std::ops::Range<u64>> {
    headers::part_range(state.part_sizes.as_deref(), state.size, number).ok_or_else(|| {
        let parts = state.part_sizes.as_ref().map_or(1, Vec::len);
        let mut e = S3Error::with_message(
            S3ErrorCode::Custom("InvalidPartNumber".into()),
            format!("the object has {parts} part(s); part {number} is not one of them"),
        );
        e.set_status_code(hyper::StatusCode::RANGE_NOT_SATISFIABLE);
        e
    })
}

/// `x-amz-mp-parts-count` for a read by part of a multipart object.
fn parts_count(state: &ObjectState, number: Option<i32>) -> Option<i32> {
    number?;
    state.part_sizes.as_ref().map(|p| p.len() as i32)
}

/// The stored checksum, when the read asked for it (`x-amz-checksum-mode: ENABLED`).
fn checksum_mode(mode: Option<&ChecksumMode>, state: &ObjectState) -> Option<Sum> {
    mode.filter(|m| m.as_str() == ChecksumMode::ENABLED)?;
    headers::checksum_of(state)
}

/// DeleteObject with `versionId`: on a versioned bucket, that version removed for good; on an
/// unversioned one only `null` (the object itself) is a version, as on S3.
async fn delete_version(
    app: &AppState,
    bucket: &str,
    key: &str,
    version_id: &str,
    ctx: &RequestContext,
) -> S3Result<super::versioning::Removed> {
    if super::versioning::status(app, bucket).versioned() {
        return super::versioning::delete_version(app, bucket, key, version_id, ctx).await;
    }
    if version_id != "null" {
        return Err(s3_error!(
            InvalidArgument,
            "bucket '{bucket}' is not versioned: its objects' only version is 'null', not \
             '{version_id}'"
        ));
    }
    delete_one(app, bucket, key, ctx).await?;
    Ok(super::versioning::Removed {
        version_id: version_id.to_string(),
        was_marker: false,
    })
}

/// Delete `bucket/key`; deleting a missing key succeeds without an event, as on S3. On a
/// versioned bucket this puts a delete marker and returns its version id.
async fn delete_one(
    app: &AppState,
    bucket: &str,
    key: &str,
    ctx: &RequestContext,
) -> S3Result<Option<String>> {
    if super::versioning::status(app, bucket).versioned() {
        return super::versioning::delete_marker(app, bucket, key, ctx).await;
    }
    require(app, bucket)?;
    check_key(key)?;
    // Whether the object exists is decided with the write, under the ingest lock: one that
    // is missing (or that a concurrent delete removed first) is deleted already.
    match app
        .writer
        .append(simple(Op::Delete, bucket, key), ctx)
        .await
    {
        Ok(_) | Err(tidemark_core::Error::NotFound(_)) => Ok(None),
        Err(e) => Err(from_core(e)),
    }
}

pub async fn delete(
    app: &Arc<AppState>,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let ctx = super::context(&req);
    let bucket = &req.input.bucket;
    if let Some(v) = &req.input.version_id {
        let removed = delete_version(app, bucket, &req.input.key, v, &ctx).await?;
        return Ok(S3Response::new(DeleteObjectOutput {
            delete_marker: removed.was_marker.then_some(true),
            version_id: Some(removed.version_id),
            ..Default::default()
        }));
    }
    let marker = delete_one(app, bucket, &req.input.key, &ctx).await?;
    Ok(S3Response::new(DeleteObjectOutput {
        delete_marker: marker.as_ref().map(|_| true),
        version_id: marker,
        ..Default::default()
    }))
}

pub async fn delete_many(
    app: &Arc<AppState>,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    let ctx = super::context(&req);
    let bucket = &req.input.bucket;
    require(app, bucket)?;
    if req.input.delete.objects.len() > 1000 {
        return Err(s3_error!(
            MalformedXML,
            "a DeleteObjects request names at most 1000 keys; this one names {}",
            req.input.delete.objects.len()
        ));
    }
    let quiet = req.input.delete.quiet.unwrap_or(false);
    let (mut deleted, mut errors) = (Vec::new(), Vec::new());
    for o in &req.input.delete.objects {
        let outcome = match &o.version_id {
            Some(v) => delete_version(app, bucket, &o.key, v, &ctx)
                .await
                .map(|r| DeletedObject {
                    key: Some(o.key.clone()),
                    version_id: Some(r.version_id.clone()),
                    delete_marker: r.was_marker.then_some(true),
                    delete_marker_version_id: r.was_marker.then_some(r.version_id),
                }),
            None => delete_one(app, bucket, &o.key, &ctx)
                .await
                .map(|marker| DeletedObject {
                    key: Some(o.key.clone()),
                    delete_marker: marker.as_ref().map(|_| true),
                    delete_marker_version_id: marker,
                    ..Default::default()
                }),
        };
        match outcome {
            Ok(_) if quiet => {}
            Ok(d) => deleted.push(d),
            Err(e) => errors.push(Error {
                code: Some(e.code().as_str().to_string()),
                key: Some(o.key.clone()),
                message: e.message().map(str::to_string),
                ..Default::default()
            }),
        }
    }
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: Some(errors),
        ..Default::default()
    }))
}

/// What a copy reads (CopyObject, UploadPartCopy): the source's bucket and key, and the
/// state of the version it names (the current one by default), once it meets the
/// `x-amz-copy-source-if-*` conditions.
pub(super) async fn copy_source<'a>(
    app: &AppState,
    source: &'a CopySource,
    conditions: &Conditions,
) -> S3Result<(&'a str, &'a str, ObjectState)> {
    let CopySource::Bucket {
        bucket,
        key,
        version_id,
    } = source
    else {
        return Err(s3_error!(
            NotImplemented,
            "access-point copy sources are not supported"
        ));
    };
    let state = match version_id {
        Some(v) => super::versioning::existing_version(app, bucket, key, v).await?,
        None => existing(app, bucket, key).await?,
    };
    check_copy_source(conditions, &state)?;
    Ok((bucket, key, state))
}

/// Copy within the content store: the new object refers to the source's blob, so no bytes
/// move. A `put` whose event is `ObjectCreated:Copy`.
pub async fn copy(
    app: &Arc<AppState>,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let ctx = super::context(&req);
    let input = req.input;
    require(app, &input.bucket)?;
    check_key(&input.key)?;
    let conditions = Conditions {
        if_match: input.copy_source_if_match.clone(),
        if_none_match: input.copy_source_if_none_match.clone(),
        if_modified_since: input.copy_source_if_modified_since.clone(),
        if_unmodified_since: input.copy_source_if_unmodified_since.clone(),
    };
    let (src_bucket, src_key, source) = copy_source(app, &input.copy_source, &conditions).await?;
    let replace_meta = input
        .metadata_directive
        .as_ref()
        .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
    let replace_tags = input
        .tagging_directive
        .as_ref()
        .is_some_and(|d| d.as_str() == TaggingDirective::REPLACE);
    let same_place = src_bucket == input.bucket.as_str() && src_key == input.key.as_str();
    if same_place && !replace_meta {
        return Err(s3_error!(
            InvalidRequest,
            "copying an object onto itself needs the metadata directive REPLACE"
        ));
    }
    let source_meta: Metadata = source.metadata.clone().into_iter().collect();
    let source_tags = tagging_text(&source.tags);
    let (content_type, metadata) = match replace_meta {
        true => (input.content_type.clone(), input.metadata.clone()),
        false => (source.content_type.clone(), Some(source_meta)),
    };
    let kept_headers = match replace_meta {
        true => headers::from_upload(
            input.cache_control.as_deref(),
            input.content_disposition.as_deref(),
            input.content_encoding.as_deref(),
            input.content_language.as_deref(),
            input.expires.as_ref(),
        ),
        false => Some(source.headers.clone()).filter(|h| !h.is_empty()),
    };
    let tagging = match replace_tags {
        true => input.tagging.clone(),
        false => Some(source_tags).filter(|t| !t.is_empty()),
    };
    let mut mutation = checked_put(
        &input.bucket,
        &input.key,
        content_type.as_deref(),
        metadata.as_ref(),
        tagging.as_deref(),
    )?;
    mutation.size = Some(source.size);
    mutation.etag = source.etag.clone();
    mutation.sha256 = source.sha256.clone();
    mutation.headers = kept_headers;
    // The same bytes: the same checksum and, with the same ETag, the same parts.
    mutation.checksum = source.checksum.clone();
    mutation.part_sizes = source.part_sizes.clone();
    let version = super::versioning::new_version(app, &input.bucket);
    mutation.version_id = Some(version.clone());
    mutation.event_type = Some(EventType::ObjectCreatedCopy);
    app.writer.append(mutation, &ctx).await.map_err(from_core)?;
    let versioned = |bucket: &str| super::versioning::status(app, bucket).versioned();
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: etag(&source),
            last_modified: Some(timestamp(tidemark_core::time::now_us())),
            ..Default::default()
        }),
        version_id: versioned(&input.bucket).then_some(version),
        copy_source_version_id: source.version_id.clone().filter(|_| versioned(src_bucket)),
        ..Default::default()
    }))
}

/// Tags as `x-amz-tagging` writes them.
fn tagging_text(tags: &BTreeMap<String, String>) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(tags)
        .finish()
}

/// A blob's bytes as s3s wants them: a `Sync` body, while the blob stream is only `Send`. A
/// mutex makes it `Sync`; polling takes `&mut`, so it is never locked.
struct SyncBody(std::sync::Mutex<tidemark_core::blobs::ByteStream<'static>>);

impl SyncBody {
    fn new(body: tidemark_core::blobs::ByteStream<'static>) -> SyncBody {
        SyncBody(std::sync::Mutex::new(body))
    }
}

impl futures::Stream for SyncBody {
    type Item = std::io::Result<bytes::Bytes>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use futures::StreamExt;
        match self.get_mut().0.get_mut() {
            Ok(body) => body.poll_next_unpin(cx),
            Err(poisoned) => poisoned.into_inner().poll_next_unpin(cx),
        }
    }
}
