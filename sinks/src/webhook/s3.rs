//! The `s3` payload: AWS S3's event notification structure, field for field, so existing
//! S3/Lambda handlers parse it unchanged.

use chrono::{DateTime, SecondsFormat, Utc};
use tidemark_core::time::format_us;
use uuid::Uuid;

use super::format::{Context, Item, percent_encode};

// The S3 record, borrowed from the event and serialized directly: it is built once per
// delivery on the hot path, where a `serde_json::Value` tree costs an allocation per field.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct S3Record<'a> {
    event_version: &'static str,
    event_source: &'static str,
    aws_region: &'a str,
    event_time: String,
    event_name: &'static str,
    user_identity: Principal<'a>,
    request_parameters: RequestParameters<'a>,
    response_elements: ResponseElements<'a>,
    s3: S3Entity<'a>,
    tidemark: TidemarkExtra<'a>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Principal<'a> {
    principal_id: &'a str,
}

#[derive(serde::Serialize)]
struct RequestParameters<'a> {
    #[serde(rename = "sourceIPAddress")]
    source_ip_address: &'a str,
}

#[derive(serde::Serialize)]
struct ResponseElements<'a> {
    #[serde(rename = "x-amz-request-id")]
    request_id: &'a str,
    #[serde(rename = "x-amz-id-2")]
    id_2: &'a str,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct S3Entity<'a> {
    s3_schema_version: &'static str,
    configuration_id: &'a str,
    bucket: S3Bucket<'a>,
    object: S3Object<'a>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct S3Bucket<'a> {
    name: &'a str,
    // Tidemark has no bucket-owner account; the field stays for parsers that need it.
    owner_identity: Principal<'a>,
    arn: String,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct S3Object<'a> {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    e_tag: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_id: Option<&'a str>,
    sequencer: String,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct TidemarkExtra<'a> {
    event_id: Uuid,
    sequence: i64,
    partition: u32,
    offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    replay: Option<&'a str>,
}

pub(super) fn s3_record<'a>(ctx: &Context<'a>, item: &Item<'a>) -> S3Record<'a> {
    let e = item.event;
    let or_empty = |field: &'a Option<String>| field.as_deref().unwrap_or_default();
    S3Record {
        event_version: "2.1",
        event_source: "tidemark:s3",
        aws_region: or_empty(&e.region),
        event_time: s3_time(e.event_time),
        event_name: e.event_type.as_str(),
        user_identity: Principal {
            principal_id: or_empty(&e.requester),
        },
        request_parameters: RequestParameters {
            source_ip_address: or_empty(&e.source_ip),
        },
        response_elements: ResponseElements {
            request_id: or_empty(&e.request_id),
            id_2: or_empty(&e.node),
        },
        s3: S3Entity {
            s3_schema_version: "1.0",
            configuration_id: ctx.subscription,
            bucket: S3Bucket {
                name: &e.bucket,
                owner_identity: Principal { principal_id: "" },
                arn: format!("arn:aws:s3:::{}", e.bucket),
            },
            object: match e.removed_version_id.as_deref() {
                // A version removed for good: S3 names that version, with no size or ETag.
                Some(removed) => S3Object {
                    key: s3_key(&e.key),
                    size: None,
                    e_tag: None,
                    version_id: Some(removed),
                    sequencer: format!("{:016X}", e.sequence.max(0)),
                },
                None => S3Object {
                    key: s3_key(&e.key),
                    size: e.size,
                    // S3 notifications carry the ETag without the quotes the HTTP header has.
                    e_tag: e.etag.as_deref().map(|t| t.trim_matches('"')),
                    version_id: e.version_id.as_deref(),
                    sequencer: format!("{:016X}", e.sequence.max(0)),
                },
            },
        },
        tidemark: TidemarkExtra {
            event_id: e.event_id,
            sequence: e.sequence,
            partition: item.partition,
            offset: item.offset,
            replay: ctx.replay,
        },
    }
}

/// S3 writes event times with millisecond precision; truncating (not rounding) keeps the time
/// from moving past the instant the change happened.
fn s3_time(us: i64) -> String {
    match DateTime::<Utc>::from_timestamp_micros(us) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => format_us(us),
    }
}

/// The key as S3 puts it in notifications: `application/x-www-form-urlencoded` style (Java's
/// `URLEncoder` set: letters, digits, `-_.*` kept, space as `+`), with `/` also kept.
pub(super) fn s3_key(key: &str) -> String {
    let keep = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'*' | b'/');
    percent_encode(key, keep, true)
}
