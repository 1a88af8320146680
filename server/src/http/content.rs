//! `/v1/content/{bucket}/{key}`: object bytes in and out, over the content store.
//!
//! A `PUT` is checked as a mutation first (bad input stores nothing), then streamed into the
//! store while its SHA-256 and MD5 are computed, then recorded as an `ObjectCreated:Put` event;
//! the answer comes once that event is durable. A `GET` finds the object (or one of its
//! versions) in the index and streams its blob.
//!
//! Blobs are local to the node that took the upload, also when several nodes share a Kafka log.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tidemark_core::Error;
use tidemark_core::event::ObjectState;
use tidemark_core::ingest::{BatchLimits, Mutation, parse_batch};

use super::State;
use super::error::ApiError;
use super::mutations::request_context;
use crate::node::objects::{Consistency, Version};

/// User metadata travels in headers named like S3's `x-amz-meta-*`.
const META_PREFIX: &str = "x-tidemark-meta-";
/// Tags, URL-encoded as S3's `x-amz-tagging`: `k=v&k2=v2`.
const TAGGING: &str = "x-tidemark-tagging";

pub async fn put(
    axum::extract::State(app): State,
    Path((bucket, key)): Path<(String, String)>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let mut mutation = checked_mutation(&bucket, &key, &headers)?;
    let max = app.limits.max_object_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let stored = app
        .node
        .blobs
        .put_before_append(Box::pin(stream), max)
        .await
        .map_err(|e| match e {
            Error::Invalid { field, .. } if field == "body" => too_large(max),
            e => e.into(),
        })?;
    mutation.size = Some(stored.size as i64);
    mutation.etag = Some(stored.md5.clone());
    mutation.sha256 = Some(stored.sha256.clone());
    mutation.version_id = Some(tidemark_core::blobs::new_version_id());
    let version_id = mutation.version_id.clone();
    // If the event cannot be appended, the blob stays unreferenced and GC takes it later.
    let event_id = app
        .writer
        .append(mutation, &request_context(&headers, peer))
        .await?;
    Ok(Json(json!({
        "event_id": event_id,
        "version_id": version_id,
        "etag": stored.md5,
        "sha256": stored.sha256,
        "size": stored.size,
    })))
}

fn too_large(max: u64) -> ApiError {
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: "payload_too_large",
        message: format!(
            "the object is larger than {max} bytes, the most this server stores \
             (--max-object-bytes); nothing was stored"
        ),
        field: Some("body".into()),
    }
}

/// The upload as a validated `put` (size and digests still to come), with the same rules as
/// `POST /v1/mutations`; each error names the header or path part it came from.
fn checked_mutation(bucket: &str, key: &str, headers: &HeaderMap) -> Result<Mutation, ApiError> {
    let mut m = json!({"op": "put", "bucket": bucket, "key": key, "size": 0});
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        m["content_type"] = header_text("content-type", ct)?.into();
    }
    let metadata = metadata_headers(headers)?;
    if !metadata.is_empty() {
        m["metadata"] = json!(metadata);
    }
    if let Some(tagging) = headers.get(TAGGING) {
        m["tags"] = json!(parse_tagging(header_text(TAGGING, tagging)?)?);
    }
    let body = json!({ "mutations": [m] }).to_string();
    let mut parsed =
        parse_batch(body.as_bytes(), BatchLimits { max_mutations: 1 }).map_err(|e| match e {
            Error::Invalid { field, message } => {
                let name = match field.trim_start_matches("mutations[0].") {
                    "metadata" => format!("{META_PREFIX}*"),
                    "tags" => TAGGING.to_string(),
                    "content_type" => "content-type".to_string(),
                    other => other.to_string(),
                };
                ApiError::field(StatusCode::BAD_REQUEST, &name, message)
            }
            e => e.into(),
        })?;
    Ok(parsed.pop().expect("one mutation"))
}

fn header_text<'a>(name: &str, value: &'a HeaderValue) -> Result<&'a str, ApiError> {
    std::str::from_utf8(value.as_bytes())
        .map_err(|_| ApiError::field(StatusCode::BAD_REQUEST, name, "is not valid UTF-8"))
}

/// `x-tidemark-meta-NAME: value` headers as metadata (names in lower case, as HTTP has them).
fn metadata_headers(
    headers: &HeaderMap,
) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
    let mut out = std::collections::BTreeMap::new();
    for (name, value) in headers {
        let Some(meta) = name.as_str().strip_prefix(META_PREFIX) else {
            continue;
        };
        let text = header_text(name.as_str(), value)?;
        if out.insert(meta.to_string(), text.to_string()).is_some() {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                name.as_str(),
                "is given more than once",
            ));
        }
    }
    Ok(out)
}

fn parse_tagging(text: &str) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
    crate::node::objects::parse_tagging(text)
        .map_err(|m| ApiError::field(StatusCode::BAD_REQUEST, TAGGING, m))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetQuery {
    /// A version other than the current one.
    version_id: Option<String>,
}

pub async fn get(
    axum::extract::State(app): State,
    Path((bucket, key)): Path<(String, String)>,
    query: Result<Query<GetQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    app.node.catch_up(Consistency::Strong).await?;
    let path = format!("{bucket}/{key}");
    let state = match &q.version_id {
        None => app.node.current_state(&bucket, &key).await?,
        Some(v) => match app.node.version_state(&bucket, &key, v).await? {
            Some(Version::State(s)) => Some(*s),
            Some(Version::Expired) => {
                return Err(ApiError::new(
                    StatusCode::GONE,
                    "content_unavailable",
                    format!(
                        "version {v} of {path} is older than the log's retention; its event \
                         and content are gone"
                    ),
                ));
            }
            None => None,
        },
    }
    .ok_or_else(|| {
        let what = match &q.version_id {
            Some(v) => format!("version {v} of object {path}"),
            None => format!("object {path}"),
        };
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} does not exist"),
        )
    })?;
    let unavailable = |why: String| {
        ApiError::new(
            StatusCode::GONE,
            "content_unavailable",
            format!("the content of {path} is not available: {why}"),
        )
    };
    let Some(sha256) = state.sha256.clone() else {
        return Err(unavailable(
            "it was recorded as metadata only (POST /v1/mutations); Tidemark describes it but \
             never held its bytes"
                .into(),
        ));
    };
    let Some(blob) = app.node.blobs.read(&sha256, None).await? else {
        return Err(unavailable(format!(
            "blob sha256 {sha256} is not held on this node (garbage-collected, removed, or \
             uploaded through another node)"
        )));
    };
    let mut resp = Body::from_stream(blob.body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(blob.size));
    content_headers(h, &state, &sha256);
    Ok(resp)
}

/// ETag, content type, version, digests and user metadata of `state`, as response headers.
fn content_headers(h: &mut HeaderMap, state: &ObjectState, sha256: &str) {
    let content_type = state
        .content_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Some(etag) = &state.etag {
        let quoted = if etag.starts_with('"') {
            etag.clone()
        } else {
            format!("\"{etag}\"")
        };
        if let Ok(v) = HeaderValue::from_str(&quoted) {
            h.insert(header::ETAG, v);
        }
    }
    if let Some(t) = chrono::DateTime::from_timestamp_micros(state.last_modified) {
        let date = t.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        h.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_str(&date).expect("ascii"),
        );
    }
    h.insert(
        "x-tidemark-sha256",
        HeaderValue::from_str(sha256).expect("hex"),
    );
    if let Some(v) = state
        .version_id
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        h.insert("x-tidemark-version-id", v);
    }
    // A value a header cannot carry (control characters) is left out here; GET /v1/objects
    // shows every value.
    for (name, value) in &state.metadata {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(format!("{META_PREFIX}{name}").as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            h.insert(n, v);
        }
    }
}

/// `POST /v1/admin/blobs/gc`: collect now; how many blobs were kept and removed, the bytes
/// freed, and the pack files rewritten without removed content and the disk space that gave
/// back.
pub async fn gc(axum::extract::State(app): State) -> Result<Json<Value>, ApiError> {
    let node = &app.node;
    let stats = tidemark_core::blobs::collect_garbage(
        node.log.log.as_ref(),
        &node.codec(),
        node.blobs.clone(),
        node.filters.live_modules(),
        node.blob_gc.grace,
    )
    .await?;
    Ok(Json(json!({
        "kept": stats.kept,
        "removed": stats.removed,
        "bytes_freed": stats.bytes_freed,
        "packs_compacted": stats.packs_compacted,
        "pack_bytes_reclaimed": stats.pack_bytes_reclaimed,
        "grace_secs": node.blob_gc.grace.as_secs(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagging_is_url_encoded_and_duplicates_are_refused() {
        let tags = parse_tagging("stage=raw&team=m%20l&empty=").unwrap();
        assert_eq!(tags["team"], "m l");
        assert_eq!(tags["empty"], "");
        let e = parse_tagging("a=1&a=2").unwrap_err();
        assert!(e.message.contains("'a' is given more than once"), "{e:?}");
    }

    #[test]
    fn upload_headers_are_checked_as_mutations_are() {
        let mut h = HeaderMap::new();
        h.insert("x-tidemark-meta-team", HeaderValue::from_static("ml"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
        let m = checked_mutation("photos", "a.png", &h).unwrap();
        assert_eq!(m.metadata.unwrap()["team"], "ml");
        assert_eq!(m.content_type.as_deref(), Some("image/png"));
        let e = checked_mutation("Photos!", "a.png", &h).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("bucket"));
        let e = checked_mutation("photos", &"k".repeat(1025), &h).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("key"));
        h.insert(
            "x-tidemark-meta-big",
            HeaderValue::from_str(&"x".repeat(3000)).unwrap(),
        );
        let e = checked_mutation("photos", "a.png", &h).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("x-tidemark-meta-*"), "{e:?}");
    }
}
