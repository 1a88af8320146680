//! Conditional reads (RFC 9110 §13): If-Match and If-None-Match on the ETag, then
//! If-Unmodified-Since and If-Modified-Since (each skipped when its ETag counterpart is given).

use s3s::dto::{ETagCondition, Timestamp};
use s3s::{S3Result, s3_error};
use tidemark_core::event::ObjectState;

/// The conditions of one read.
pub struct Conditions {
    pub if_match: Option<ETagCondition>,
    pub if_none_match: Option<ETagCondition>,
    pub if_modified_since: Option<Timestamp>,
    pub if_unmodified_since: Option<Timestamp>,
}

fn matches(condition: &ETagCondition, state: &ObjectState) -> bool {
    let etag = state.etag.as_deref().unwrap_or_default().trim_matches('"');
    match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value().trim_matches('"') == etag,
    }
}

/// Seconds since the epoch, the resolution of HTTP dates.
fn seconds(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

/// `NotModified` (304), carrying the object's ETag and Last-Modified as S3's does.
fn not_modified(state: &ObjectState) -> s3s::S3Error {
    let mut e = s3_error!(NotModified);
    let mut headers = hyper::HeaderMap::new();
    if let Some(etag) = &state.etag
        && let Ok(v) = format!("\"{}\"", etag.trim_matches('"')).parse()
    {
        headers.insert(hyper::header::ETAG, v);
    }
    let modified =
        std::time::UNIX_EPOCH + std::time::Duration::from_micros(state.last_modified.max(0) as u64);
    if let Ok(v) = httpdate(modified).parse() {
        headers.insert(hyper::header::LAST_MODIFIED, v);
    }
    e.set_headers(headers);
    e
}

/// An HTTP date (RFC 9110 IMF-fixdate).
fn httpdate(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// `PreconditionFailed` (412) or `NotModified` (304) when the object fails a condition.
pub fn check(c: &Conditions, state: &ObjectState) -> S3Result<()> {
    let modified = state.last_modified.div_euclid(1_000_000);
    if let Some(m) = &c.if_match {
        if !matches(m, state) {
            return Err(s3_error!(
                PreconditionFailed,
                "If-Match does not match the ETag"
            ));
        }
    } else if let Some(t) = &c.if_unmodified_since
        && modified > seconds(t)
    {
        return Err(s3_error!(
            PreconditionFailed,
            "the object was modified after If-Unmodified-Since"
        ));
    }
    if let Some(m) = &c.if_none_match {
        if matches(m, state) {
            return Err(not_modified(state));
        }
    } else if let Some(t) = &c.if_modified_since
        && modified <= seconds(t)
    {
        return Err(not_modified(state));
    }
    Ok(())
}
