//! The `s3` payload: AWS S3's event notification structure, field for field, so existing
//! S3/Lambda handlers parse it unchanged.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
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
    event_time: S3Time,
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
    arn: Arn<'a>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct S3Object<'a> {
    key: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    e_tag: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_id: Option<&'a str>,
    sequencer: Sequencer,
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
        event_time: S3Time(e.event_time),
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
                arn: Arn(&e.bucket),
            },
            object: match e.removed_version_id.as_deref() {
                // A version removed for good: S3 names that version, with no size or ETag.
                Some(removed) => S3Object {
                    key: s3_key(&e.key),
                    size: None,
                    e_tag: None,
                    version_id: Some(removed),
                    sequencer: Sequencer(e.sequence),
                },
                None => S3Object {
                    key: s3_key(&e.key),
                    size: e.size,
                    // S3 notifications carry the ETag without the quotes the HTTP header has.
                    e_tag: e.etag.as_deref().map(|t| t.trim_matches('"')),
                    version_id: e.version_id.as_deref(),
                    sequencer: Sequencer(e.sequence),
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

// The record's computed strings are written straight into the body as it is serialized
// (`collect_str`), not built as a `String` each first.

/// S3 writes event times with millisecond precision; truncating (not rounding) keeps the time
/// from moving past the instant the change happened.
struct S3Time(i64);

impl fmt::Display for S3Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match DateTime::<Utc>::from_timestamp_micros(self.0) {
            // RFC 3339 with milliseconds and `Z`, as `to_rfc3339_opts(Millis, true)` writes
            // it, without building a string first; years past four digits take that path.
            Some(t) if (0..=9999).contains(&t.year()) => {
                write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%S%.3fZ"))
            }
            Some(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            None => f.write_str(&format_us(self.0)),
        }
    }
}

/// The bucket's ARN.
struct Arn<'a>(&'a str);

impl fmt::Display for Arn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "arn:aws:s3:::{}", self.0)
    }
}

/// S3's `sequencer`: the object's sequence as 16 upper-case hex digits.
struct Sequencer(i64);

impl fmt::Display for Sequencer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0.max(0))
    }
}

macro_rules! serialize_as_display {
    ($($t:ty),*) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}
serialize_as_display!(S3Time, Arn<'_>, Sequencer);

/// The key as S3 puts it in notifications: `application/x-www-form-urlencoded` style (Java's
/// `URLEncoder` set: letters, digits, `-_.*` kept, space as `+`), with `/` also kept.
pub(super) fn s3_key(key: &str) -> Cow<'_, str> {
    let keep = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'*' | b'/');
    if key.bytes().all(keep) {
        return Cow::Borrowed(key);
    }
    Cow::Owned(percent_encode(key, keep, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_times_are_written_as_rfc3339_with_milliseconds() {
        let times = [
            0,
            1,
            999,
            1_795_356_000_123_456,
            -1,
            -1_000_001,
            253_402_300_799_999_999, // the last microsecond of year 9999
            253_402_300_800_000_000, // year 10000
            -62_167_219_200_000_001, // before year 0
            i64::MAX,
        ];
        for us in times {
            let want = DateTime::<Utc>::from_timestamp_micros(us)
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
                .unwrap_or_else(|| format_us(us));
            assert_eq!(S3Time(us).to_string(), want, "{us}");
        }
        assert_eq!(Sequencer(255).to_string(), "00000000000000FF");
        assert_eq!(Sequencer(-3).to_string(), "0000000000000000");
        assert_eq!(Arn("b").to_string(), "arn:aws:s3:::b");
    }
}
