//! Get/Put/DeleteObjectTagging: the `tag` and `untag` mutations.

use std::sync::Arc;

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};
use tidemark_core::ingest::{MAX_TAGS, Op};

use super::errors::from_core;
use super::objects::{existing, simple};
use crate::http::AppState;

pub async fn get(
    app: &Arc<AppState>,
    req: S3Request<GetObjectTaggingInput>,
) -> S3Result<S3Response<GetObjectTaggingOutput>> {
    let state = existing(app, &req.input.bucket, &req.input.key).await?;
    let tag_set = state
        .tags
        .into_iter()
        .map(|(k, v)| Tag {
            key: Some(k),
            value: Some(v),
        })
        .collect();
    Ok(S3Response::new(GetObjectTaggingOutput {
        tag_set,
        ..Default::default()
    }))
}

pub async fn put(
    app: &Arc<AppState>,
    req: S3Request<PutObjectTaggingInput>,
) -> S3Result<S3Response<PutObjectTaggingOutput>> {
    let ctx = super::context(&req);
    let input = req.input;
    existing(app, &input.bucket, &input.key).await?;
    let invalid = |m: String| S3Error::with_message(S3ErrorCode::InvalidTag, m);
    if input.tagging.tag_set.len() > MAX_TAGS {
        return Err(invalid(format!("more than {MAX_TAGS} tags")));
    }
    let mut tags = std::collections::BTreeMap::new();
    for t in input.tagging.tag_set {
        let key = t.key.unwrap_or_default();
        let value = t.value.unwrap_or_default();
        if key.is_empty() || key.chars().count() > 128 || value.chars().count() > 256 {
            return Err(invalid(format!(
                "tag '{key}': keys are 1-128 characters, values at most 256"
            )));
        }
        if tags.insert(key.clone(), value).is_some() {
            return Err(invalid(format!("tag '{key}' is given more than once")));
        }
    }
    let mut mutation = simple(Op::Tag, &input.bucket, &input.key);
    mutation.tags = Some(tags);
    app.writer.append(mutation, &ctx).await.map_err(from_core)?;
    Ok(S3Response::new(PutObjectTaggingOutput::default()))
}

pub async fn delete(
    app: &Arc<AppState>,
    req: S3Request<DeleteObjectTaggingInput>,
) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
    let ctx = super::context(&req);
    existing(app, &req.input.bucket, &req.input.key).await?;
    let mutation = simple(Op::Untag, &req.input.bucket, &req.input.key);
    app.writer.append(mutation, &ctx).await.map_err(from_core)?;
    Ok(S3Response::new(DeleteObjectTaggingOutput::default()))
}
