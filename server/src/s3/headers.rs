//! The standard HTTP headers an object keeps (`Cache-Control`, `Content-Disposition`,
//! `Content-Encoding`, `Content-Language`, `Expires`), its upload checksum, and its parts:
//! taken from uploads, kept in the object's state, given back on reads.

use s3s::dto::{Timestamp, TimestampFormat};
use tidemark_core::event::{ObjectState, StringMap};

use super::integrity::{Algorithm, Sum};

/// The headers of an upload, as the object keeps them (`None` when there are none).
/// `aws-chunked` in `Content-Encoding` describes the request's framing, not the object, and
/// is dropped.
pub fn from_upload(
    cache_control: Option<&str>,
    content_disposition: Option<&str>,
    content_encoding: Option<&str>,
    content_language: Option<&str>,
    expires: Option<&Timestamp>,
) -> Option<StringMap> {
    let encoding = content_encoding.map(|e| {
        e.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("aws-chunked"))
            .collect::<Vec<_>>()
            .join(", ")
    });
    let expires = expires.and_then(|t| {
        let mut out = Vec::new();
        t.format(TimestampFormat::HttpDate, &mut out).ok()?;
        String::from_utf8(out).ok()
    });
    let headers: StringMap = [
        ("cache-control", cache_control.map(str::to_string)),
        (
            "content-disposition",
            content_disposition.map(str::to_string),
        ),
        ("content-encoding", encoding),
        ("content-language", content_language.map(str::to_string)),
        ("expires", expires),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| (k.to_string(), v)))
    .collect();
    (!headers.is_empty()).then_some(headers)
}

/// The headers a read answers with.
pub struct Stored {
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub expires: Option<Timestamp>,
}

pub fn of(state: &ObjectState) -> Stored {
    let get = |name: &str| state.headers.get(name).cloned();
    Stored {
        cache_control: get("cache-control"),
        content_disposition: get("content-disposition"),
        content_encoding: get("content-encoding"),
        content_language: get("content-language"),
        expires: get("expires").and_then(|e| Timestamp::parse(TimestampFormat::HttpDate, &e).ok()),
    }
}

/// A checksum as the object keeps it: `ALGORITHM:base64`.
pub fn checksum_text(sum: &Sum) -> String {
    format!("{}:{}", sum.algorithm.name(), sum.value)
}

/// The object's checksum, for an answer's `Checksum*` fields.
pub fn checksum_of(state: &ObjectState) -> Option<Sum> {
    let (algorithm, value) = state.checksum.as_deref()?.split_once(':')?;
    Some(Sum {
        algorithm: Algorithm::parse(algorithm)?,
        value: value.to_string(),
    })
}

/// The byte range of part `number` (1-based) of an object with `part_sizes` (a single-part
/// object is one part), or `None` when it has no such part.
pub fn part_range(
    part_sizes: Option<&[i64]>,
    size: i64,
    number: i32,
) -> Option<std::ops::Range<u64>> {
    let whole = [size];
    let parts = part_sizes.unwrap_or(&whole);
    let i = usize::try_from(number).ok()?.checked_sub(1)?;
    let start: i64 = parts.get(..i)?.iter().sum();
    let len = *parts.get(i)?;
    Some(start as u64..(start + len) as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parts_are_ranges_of_the_object() {
        let sizes = [5, 5, 2];
        assert_eq!(super::part_range(Some(&sizes), 12, 2), Some(5..10));
        assert_eq!(super::part_range(Some(&sizes), 12, 3), Some(10..12));
        assert_eq!(super::part_range(Some(&sizes), 12, 4), None);
        assert_eq!(super::part_range(None, 7, 1), Some(0..7));
        assert_eq!(super::part_range(None, 7, 2), None);
        assert_eq!(super::part_range(None, 7, 0), None);
    }

    #[test]
    fn aws_chunked_is_not_the_objects_encoding() {
        let h = super::from_upload(None, None, Some("aws-chunked,gzip"), None, None).unwrap();
        assert_eq!(h["content-encoding"], "gzip");
        assert!(super::from_upload(None, None, Some("aws-chunked"), None, None).is_none());
    }
}
