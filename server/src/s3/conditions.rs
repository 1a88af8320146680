//! Conditional requests (RFC 9110 §13). Reads: If-Match and If-None-Match on the ETag, then
//! If-Unmodified-Since and If-Modified-Since (each skipped when its ETag counterpart is given);
//! a copy's `x-amz-copy-source-if-*` the same way on its source. Writes: `If-None-Match: *`
//! and `If-Match: ETAG` become a [`Condition`] of the mutation, checked with the write itself.

use s3s::dto::{ETagCondition, Timestamp};
use s3s::{S3Result, s3_error};
use tidemark_core::event::ObjectState;
use tidemark_core::ingest::Condition;

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

/// The condition of a PutObject or CompleteMultipartUpload: `If-None-Match: *` (create
/// only) or `If-Match: ETAG` (replace only that version), as S3 takes them.
pub fn write_condition(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<Option<Condition>> {
    match (if_match, if_none_match) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(s3_error!(
            NotImplemented,
            "If-Match and If-None-Match cannot both condition one write"
        )),
        (Some(ETagCondition::ETag(e)), None) => Ok(Some(Condition::ETag(
            e.value().trim_matches('"').to_string(),
        ))),
        (Some(ETagCondition::Any), None) => Err(s3_error!(
            NotImplemented,
            "If-Match on a write takes an ETag, not *"
        )),
        (None, Some(ETagCondition::Any)) => Ok(Some(Condition::Absent)),
        (None, Some(ETagCondition::ETag(_))) => Err(s3_error!(
            NotImplemented,
            "If-None-Match on a write takes only * (create if absent)"
        )),
    }
}

/// A copy's conditions on its source: every failure is `PreconditionFailed`, as S3 answers
/// (no 304 for a copy).
pub fn check_copy_source(c: &Conditions, source: &ObjectState) -> S3Result<()> {
    check(c, source).map_err(|e| match e.code() {
        s3s::S3ErrorCode::NotModified => s3_error!(
            PreconditionFailed,
            "the copy source fails x-amz-copy-source-if-none-match or -if-modified-since"
        ),
        _ => s3_error!(
            PreconditionFailed,
            "the copy source fails x-amz-copy-source-if-match or -if-unmodified-since"
        ),
    })
}
