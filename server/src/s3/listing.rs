//! ListObjectsV2 and ListObjects (v1), from the index after it caught up. Keys under a common
//! prefix (up to the delimiter) are rolled into one `CommonPrefixes` entry; the continuation
//! token (v2) and marker (v1) are the last key or prefix returned.

use std::sync::Arc;

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use tidemark_core::blocking::blocking;

use super::buckets::require;
use super::errors::from_core;
use super::objects::timestamp;
use crate::http::AppState;
use crate::node::objects::Consistency;

const MAX_KEYS: i32 = 1000;
/// Rows read from the index per step while rolling keys into common prefixes.
const PAGE: usize = 1000;

/// One page of a listing.
struct Page {
    objects: Vec<Object>,
    prefixes: Vec<CommonPrefix>,
    /// The last key or prefix returned, when more follow.
    next: Option<String>,
}

async fn page(
    app: &AppState,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<String>,
    max_keys: i32,
) -> S3Result<Page> {
    require(app, bucket)?;
    if max_keys < 0 {
        return Err(s3_error!(InvalidArgument, "max-keys must not be negative"));
    }
    let max = max_keys.min(MAX_KEYS) as usize;
    app.node
        .catch_up(Consistency::Strong)
        .await
        .map_err(from_core)?;
    let delimiter = delimiter.filter(|d| !d.is_empty());
    let mut out = Page {
        objects: Vec::new(),
        prefixes: Vec::new(),
        next: None,
    };
    let mut cursor = after;
    let mut last: Option<String> = None;
    loop {
        let index = app.node.index.clone();
        let (b, p, a) = (bucket.to_string(), prefix.to_string(), cursor.clone());
        let rows = blocking(move || index.list(Some(&b), &p, a.as_deref(), PAGE))
            .await
            .map_err(from_core)?;
        let exhausted = rows.len() < PAGE;
        for row in rows {
            cursor = Some(row.key.clone());
            // Keys under a prefix already returned (also one a continuation ended on).
            if let (Some(d), Some(l)) = (delimiter, &last)
                && l.ends_with(d)
                && row.key.starts_with(l.as_str())
            {
                continue;
            }
            if out.objects.len() + out.prefixes.len() == max {
                out.next = last.clone();
                return Ok(out);
            }
            let rolled = delimiter.and_then(|d| {
                let rest = &row.key[prefix.len()..];
                rest.find(d)
                    .map(|i| row.key[..prefix.len() + i + d.len()].to_string())
            });
            match rolled {
                Some(common) => {
                    out.prefixes.push(CommonPrefix {
                        prefix: Some(common.clone()),
                    });
                    last = Some(common);
                }
                None => {
                    out.objects.push(Object {
                        key: Some(row.key.clone()),
                        size: Some(row.state.size),
                        e_tag: row
                            .state
                            .etag
                            .as_ref()
                            .map(|e| ETag::Strong(e.trim_matches('"').to_string())),
                        last_modified: Some(timestamp(row.state.last_modified)),
                        storage_class: Some(ObjectStorageClass::from_static(
                            ObjectStorageClass::STANDARD,
                        )),
                        ..Default::default()
                    });
                    last = Some(row.key);
                }
            }
        }
        if exhausted {
            return Ok(out);
        }
    }
}

/// Where a listing resumes: a key (start exclusive), and the prefix it may have ended on.
fn resume_after(from: Option<String>, prefix: &str) -> Option<String> {
    from.filter(|f| !f.is_empty())
        .map(|f| f.max(prefix.to_string()))
}

pub async fn list_v2(
    app: &Arc<AppState>,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let i = req.input;
    let prefix = i.prefix.clone().unwrap_or_default();
    let from = i.continuation_token.clone().or(i.start_after.clone());
    let max_keys = i.max_keys.unwrap_or(MAX_KEYS);
    let p = page(
        app,
        &i.bucket,
        &prefix,
        i.delimiter.as_deref(),
        resume_after(from, &prefix),
        max_keys,
    )
    .await?;
    Ok(S3Response::new(ListObjectsV2Output {
        name: Some(i.bucket),
        prefix: Some(prefix),
        delimiter: i.delimiter,
        max_keys: Some(max_keys),
        key_count: Some((p.objects.len() + p.prefixes.len()) as i32),
        is_truncated: Some(p.next.is_some()),
        next_continuation_token: p.next,
        continuation_token: i.continuation_token,
        start_after: i.start_after,
        contents: Some(p.objects),
        common_prefixes: Some(p.prefixes),
        ..Default::default()
    }))
}

pub async fn list_v1(
    app: &Arc<AppState>,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let i = req.input;
    let prefix = i.prefix.clone().unwrap_or_default();
    let max_keys = i.max_keys.unwrap_or(MAX_KEYS);
    let p = page(
        app,
        &i.bucket,
        &prefix,
        i.delimiter.as_deref(),
        resume_after(i.marker.clone(), &prefix),
        max_keys,
    )
    .await?;
    Ok(S3Response::new(ListObjectsOutput {
        name: Some(i.bucket),
        prefix: Some(prefix),
        delimiter: i.delimiter,
        marker: i.marker,
        max_keys: Some(max_keys),
        is_truncated: Some(p.next.is_some()),
        next_marker: p.next,
        contents: Some(p.objects),
        common_prefixes: Some(p.prefixes),
        ..Default::default()
    }))
}
