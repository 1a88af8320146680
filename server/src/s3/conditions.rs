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
            return Err(s3_error!(NotModified));
        }
    } else if let Some(t) = &c.if_modified_since
        && modified <= seconds(t)
    {
        return Err(s3_error!(NotModified));
    }
    Ok(())
}
