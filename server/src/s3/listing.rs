//! ListObjectsV2 and ListObjects (v1), from the index after it caught up. Keys under a common
//! prefix (up to the delimiter) are rolled into one `CommonPrefixes` entry, and the listing
//! seeks past the rest of that prefix; the continuation token (v2) and marker (v1) are the
//! last key or prefix returned, and a page that resumes after a prefix skips everything in it.
//! With `encoding-type=url`, keys and prefixes come back percent-encoded.

use std::sync::Arc;

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use tidemark_core::blocking::blocking;

use super::buckets::{owner, require};
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

/// Sorts after every key that starts with the prefix it is appended to.
const PAST: char = char::MAX;

/// Where to read on from after `last`: past everything under it when it is a common prefix.
fn seek_after(last: String, delimiter: Option<&str>) -> String {
    match delimiter {
        Some(d) if last.ends_with(d) => format!("{last}{PAST}"),
        _ => last,
    }
}

async fn page(
    app: &AppState,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<String>,
    max_keys: i32,
    with_owner: bool,
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
    let mut cursor = after.map(|a| seek_after(a, delimiter));
    let mut last: Option<String> = None;
    loop {
        let index = app.node.index.clone();
        let (b, p, a) = (bucket.to_string(), prefix.to_string(), cursor.clone());
        let rows = blocking(move || index.list(Some(&b), &p, a.as_deref(), PAGE))
            .await
            .map_err(from_core)?;
        let mut exhausted = rows.len() < PAGE;
        for row in rows {
            cursor = Some(row.key.clone());
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
                    // The rest of this prefix is skipped by seeking past it.
                    cursor = Some(seek_after(common.clone(), delimiter));
                    last = Some(common);
                    exhausted = false;
                    break;
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
                        owner: with_owner.then(owner),
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

/// Whether names come back percent-encoded (`encoding-type=url`, the only type S3 knows).
fn url_encoding(t: Option<&EncodingType>) -> S3Result<bool> {
    match t.map(|t| t.as_str()) {
        None => Ok(false),
        Some(EncodingType::URL) => Ok(true),
        Some(other) => Err(s3_error!(
            InvalidArgument,
            "invalid encoding-type '{other}': the only one is 'url'"
        )),
    }
}

/// A name as `encoding-type=url` returns it: every byte but unreserved ones and `/`
/// percent-encoded (so a client's URL-decoding gives the name back, `+` included).
pub(super) fn url_encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Page {
    /// Keys and prefixes percent-encoded when `encode`.
    fn encoded(mut self, encode: bool) -> Page {
        if encode {
            for o in &mut self.objects {
                o.key = o.key.as_deref().map(url_encode);
            }
            for p in &mut self.prefixes {
                p.prefix = p.prefix.as_deref().map(url_encode);
            }
        }
        self
    }
}

/// `text`, percent-encoded when `encode`.
fn shown(text: Option<String>, encode: bool) -> Option<String> {
    text.map(|t| if encode { url_encode(&t) } else { t })
}

pub async fn list_v2(
    app: &Arc<AppState>,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let i = req.input;
    let encode = url_encoding(i.encoding_type.as_ref())?;
    let prefix = i.prefix.clone().unwrap_or_default();
    let from = i.continuation_token.clone().or(i.start_after.clone());
    let max_keys = i.max_keys.unwrap_or(MAX_KEYS);
    let delimiter = i.delimiter.filter(|d| !d.is_empty());
    let p = page(
        app,
        &i.bucket,
        &prefix,
        delimiter.as_deref(),
        resume_after(from, &prefix),
        max_keys,
        i.fetch_owner == Some(true),
    )
    .await?
    .encoded(encode);
    Ok(S3Response::new(ListObjectsV2Output {
        name: Some(i.bucket),
        prefix: shown(Some(prefix), encode),
        delimiter: shown(delimiter, encode),
        max_keys: Some(max_keys),
        key_count: Some((p.objects.len() + p.prefixes.len()) as i32),
        is_truncated: Some(p.next.is_some()),
        next_continuation_token: p.next,
        continuation_token: i.continuation_token,
        start_after: shown(i.start_after, encode),
        encoding_type: i.encoding_type,
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
    let encode = url_encoding(i.encoding_type.as_ref())?;
    let prefix = i.prefix.clone().unwrap_or_default();
    let max_keys = i.max_keys.unwrap_or(MAX_KEYS);
    let delimiter = i.delimiter.filter(|d| !d.is_empty());
    let p = page(
        app,
        &i.bucket,
        &prefix,
        delimiter.as_deref(),
        resume_after(i.marker.clone(), &prefix),
        max_keys,
        true,
    )
    .await?;
    // S3 gives NextMarker only with a delimiter; without one the last key is the marker.
    let next = p.next.clone().filter(|_| delimiter.is_some());
    let p = p.encoded(encode);
    Ok(S3Response::new(ListObjectsOutput {
        name: Some(i.bucket),
        prefix: shown(Some(prefix), encode),
        delimiter: shown(delimiter, encode),
        marker: shown(Some(i.marker.unwrap_or_default()), encode),
        max_keys: Some(max_keys),
        is_truncated: Some(p.next.is_some()),
        next_marker: shown(next, encode),
        encoding_type: i.encoding_type,
        contents: Some(p.objects),
        common_prefixes: Some(p.prefixes),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_url_encoded_as_clients_decode_them() {
        assert_eq!(super::url_encode("a b/c+d&é"), "a%20b/c%2Bd%26%C3%A9");
        assert_eq!(
            super::seek_after("photos/".into(), Some("/")),
            "photos/\u{10FFFF}"
        );
        assert_eq!(super::seek_after("photos".into(), Some("/")), "photos");
    }
}
