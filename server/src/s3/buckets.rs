//! Buckets: catalog entities of kind `bucket` on `_config`, so every node sees the same set
//! and a restart keeps it; each creation and removal is also a `BucketCreated` /
//! `BucketRemoved` event on the objects log, for subscribers.

use std::sync::Arc;

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tidemark_core::blocking::blocking;
use tidemark_core::catalog::Action;
use tidemark_core::event::EventType;

use super::errors::{check_bucket, from_core};
use crate::http::AppState;
use crate::node::objects::Consistency;

use crate::node::buckets::KIND;

/// `NoSuchBucket` unless `bucket` exists.
pub fn require(app: &AppState, bucket: &str) -> S3Result<()> {
    check_bucket(bucket)?;
    match app.node.catalog.get(KIND, bucket) {
        Some(_) => Ok(()),
        None => Err(s3_error!(
            NoSuchBucket,
            "bucket '{bucket}' does not exist; create it first"
        )),
    }
}

pub async fn create(
    app: &Arc<AppState>,
    req: S3Request<CreateBucketInput>,
) -> S3Result<S3Response<CreateBucketOutput>> {
    let bucket = &req.input.bucket;
    check_bucket(bucket)?;
    // As us-east-1 answers: creating a bucket you already own succeeds and changes nothing
    // (every bucket here is the one key pair's own).
    if app.node.catalog.get(KIND, bucket).is_some() {
        return Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        }));
    }
    let actor = req.credentials.as_ref().map(|c| c.access_key.clone());
    let spec = serde_json::json!({ "name": bucket }).to_string();
    let created = app
        .node
        .catalog
        .change(KIND, bucket, Action::Create, Some(spec), actor)
        .await;
    match created {
        Ok(_) => {
            app.node
                .ingestor
                .append_bucket_event(bucket, EventType::BucketCreated, &super::context(&req))
                .await
                .map_err(from_core)?;
        }
        // Created by a concurrent request: it is ours, as above.
        Err(tidemark_core::Error::Conflict(_)) => {}
        Err(e) => return Err(from_core(e)),
    }
    Ok(S3Response::new(CreateBucketOutput {
        location: Some(format!("/{bucket}")),
    }))
}

pub async fn head(
    app: &Arc<AppState>,
    req: S3Request<HeadBucketInput>,
) -> S3Result<S3Response<HeadBucketOutput>> {
    require(app, &req.input.bucket)?;
    Ok(S3Response::new(HeadBucketOutput::default()))
}

/// The owner of every bucket and object: one key pair owns them all.
pub fn owner() -> Owner {
    Owner {
        display_name: Some("tidemark".into()),
        id: Some("tidemark".into()),
    }
}

/// The most buckets one ListBuckets page holds, as on S3.
const MAX_BUCKETS: i32 = 10_000;

/// ListBuckets, in name order, paged by `max-buckets` with the last name returned as the
/// continuation token, and narrowed by `prefix`.
pub async fn list(
    app: &Arc<AppState>,
    req: S3Request<ListBucketsInput>,
) -> S3Result<S3Response<ListBucketsOutput>> {
    let input = req.input;
    let max = input.max_buckets.unwrap_or(MAX_BUCKETS);
    if !(1..=MAX_BUCKETS).contains(&max) {
        return Err(s3_error!(
            InvalidArgument,
            "max-buckets must be between 1 and {MAX_BUCKETS}, got {max}"
        ));
    }
    let prefix = input.prefix.clone().unwrap_or_default();
    let after = input.continuation_token.clone().unwrap_or_default();
    let mut entries: Vec<_> = app
        .node
        .catalog
        .list(KIND)
        .into_iter()
        .filter(|e| e.name.starts_with(&prefix) && e.name.as_str() > after.as_str())
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let truncated = entries.len() > max as usize;
    entries.truncate(max as usize);
    let next = entries.last().map(|e| e.name.clone()).filter(|_| truncated);
    let buckets = entries
        .into_iter()
        .map(|e| Bucket {
            name: Some(e.name),
            creation_date: Some(super::objects::timestamp(e.created_at)),
            ..Default::default()
        })
        .collect();
    Ok(S3Response::new(ListBucketsOutput {
        buckets: Some(buckets),
        owner: Some(owner()),
        continuation_token: next,
        prefix: input.prefix,
    }))
}

pub async fn delete(
    app: &Arc<AppState>,
    req: S3Request<DeleteBucketInput>,
) -> S3Result<S3Response<DeleteBucketOutput>> {
    let bucket = req.input.bucket.clone();
    require(app, &bucket)?;
    app.node
        .catch_up(Consistency::Strong)
        .await
        .map_err(from_core)?;
    let index = app.node.index.clone();
    let b = bucket.clone();
    let any = blocking(move || index.list(Some(&b), "", None, 1))
        .await
        .map_err(from_core)?;
    if !any.is_empty() {
        return Err(s3_error!(
            BucketNotEmpty,
            "bucket '{bucket}' still holds objects; delete them first"
        ));
    }
    if super::versioning::status(app, &bucket).versioned()
        && super::versioning::holds_versions(app, &bucket).await?
    {
        return Err(s3_error!(
            BucketNotEmpty,
            "bucket '{bucket}' still holds object versions or delete markers; delete every \
             version first"
        ));
    }
    let actor = req.credentials.as_ref().map(|c| c.access_key.clone());
    app.node
        .catalog
        .change(KIND, &bucket, Action::Delete, None, actor)
        .await
        .map_err(|e| match e {
            tidemark_core::Error::NotFound(m) => {
                S3Error::with_message(S3ErrorCode::NoSuchBucket, m)
            }
            e => from_core(e),
        })?;
    app.node
        .ingestor
        .append_bucket_event(&bucket, EventType::BucketRemoved, &super::context(&req))
        .await
        .map_err(from_core)?;
    Ok(S3Response::new(DeleteBucketOutput::default()))
}
