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
    if app.node.catalog.get(KIND, bucket).is_some() {
        return Err(already_owned(bucket));
    }
    let actor = req.credentials.as_ref().map(|c| c.access_key.clone());
    let spec = serde_json::json!({ "name": bucket }).to_string();
    app.node
        .catalog
        .change(KIND, bucket, Action::Create, Some(spec), actor)
        .await
        .map_err(|e| match e {
            tidemark_core::Error::Conflict(_) => already_owned(bucket),
            e => from_core(e),
        })?;
    app.node
        .ingestor
        .append_bucket_event(bucket, EventType::BucketCreated, &super::context(&req))
        .await
        .map_err(from_core)?;
    Ok(S3Response::new(CreateBucketOutput {
        location: Some(format!("/{bucket}")),
    }))
}

/// One key pair owns every bucket, so an existing bucket is always the caller's.
fn already_owned(bucket: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::BucketAlreadyOwnedByYou,
        format!("bucket '{bucket}' exists already"),
    )
}

pub async fn head(
    app: &Arc<AppState>,
    req: S3Request<HeadBucketInput>,
) -> S3Result<S3Response<HeadBucketOutput>> {
    require(app, &req.input.bucket)?;
    Ok(S3Response::new(HeadBucketOutput::default()))
}

pub async fn list(app: &Arc<AppState>) -> S3Result<S3Response<ListBucketsOutput>> {
    let buckets = app
        .node
        .catalog
        .list(KIND)
        .into_iter()
        .map(|e| Bucket {
            name: Some(e.name),
            creation_date: Some(super::objects::timestamp(e.created_at)),
            ..Default::default()
        })
        .collect();
    Ok(S3Response::new(ListBucketsOutput {
        buckets: Some(buckets),
        owner: Some(Owner {
            display_name: Some("tidemark".into()),
            id: Some("tidemark".into()),
        }),
        ..Default::default()
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
