//! An S3 bucket (AWS or any S3-compatible service) as the external store, through
//! `object_store`: one listing, then a HEAD per object for what a listing does not carry
//! (content type, user metadata). Keys are the store's own keys, so the index names every
//! object exactly as the store does; a prefix narrows both sides alike.
//!
//! The ETag is the store's, unquoted. A multipart upload's ETag (`…-N`) is not an MD5 of the
//! content, but it is still the store's identity of that content, so it is compared as an
//! ETag like any other; no SHA-256 is known.

use std::time::Duration;

use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path;
use object_store::{Attribute, GetOptions, ObjectMeta, ObjectStore, RetryConfig};

#[cfg(test)]
use super::s3_source::S3Connection;
use super::s3_source::S3Source;
use super::{Entry, Skipped};
use crate::event::StringMap;
use crate::ingest::validate_key;
use crate::{Error, Result};

/// HEAD requests in flight at once: enough to hide a round trip, few enough for any service.
const HEADS: usize = 16;

impl S3Source {
    /// The URL and, for S3-compatible services, where it is.
    fn describe(&self) -> String {
        match &self.connection.endpoint {
            Some(endpoint) => format!("{} at {endpoint}", self.url()),
            None => self.url(),
        }
    }

    fn store(&self) -> Result<AmazonS3> {
        // A few quick retries, as the lakes: a wrong endpoint should fail the sync in
        // seconds, not after object_store's default three minutes.
        let retry = RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(15),
            ..Default::default()
        };
        let c = &self.connection;
        let mut builder = AmazonS3Builder::new()
            .with_retry(retry)
            .with_bucket_name(&self.bucket)
            .with_region(&c.region)
            .with_virtual_hosted_style_request(!c.path_style);
        if let Some(endpoint) = &c.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(key) = &c.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &c.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        builder.build().map_err(|e| {
            Error::invalid(
                "s3",
                format!("cannot configure S3 for {}: {e}", self.describe()),
            )
        })
    }

    /// The error for a failed request, naming the source and what is likely wrong.
    fn failure(&self, doing: &str, e: &object_store::Error) -> Error {
        let what = format!("cannot {doing} {}", self.describe());
        match cause(e) {
            Cause::Unreachable(detail) => Error::Unavailable(format!(
                "{what}: the endpoint does not answer ({detail}); check its URL and that the \
                 service is running"
            )),
            Cause::NoBucket => Error::NotFound(format!(
                "{what}: bucket '{}' does not exist there",
                self.bucket
            )),
            Cause::Denied => Error::BadInput(format!(
                "{what}: access denied (403); check the access key id and secret access key \
                 and that they may list and read the bucket ({e})"
            )),
            Cause::Other => Error::Unavailable(format!("{what}: {e}")),
        }
    }
}

/// Objects of `source` whose key starts with `prefix` (which starts with the URL's prefix),
/// sorted by key. `on_total` gets the number of objects once listed, `on_entry` is called
/// after each HEAD; HEADs stop early (returning what is done) once `cancelled` says so.
/// Objects that cannot be keys here are returned apart, with the reason.
pub async fn list_s3(
    source: &S3Source,
    prefix: &str,
    on_total: &(dyn Fn(u64) + Sync),
    on_entry: &(dyn Fn() + Sync),
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<(Vec<Entry>, Skipped)> {
    let store = source.store()?;
    let mut listed = list(source, &store, prefix, cancelled).await?;
    listed.sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
    // `k/` (a folder marker) reads as `k`: one entry per key, whatever else the store has.
    listed.dedup_by(|a, b| a.location == b.location);
    on_total(listed.len() as u64);
    let mut skipped = Skipped::new();
    let mut entries = Vec::with_capacity(listed.len());
    let mut heads = futures::stream::iter(listed)
        .map(|meta| head(source, &store, meta.location))
        .buffered(HEADS);
    while let Some(result) = heads.next().await {
        match result? {
            Ok(entry) => entries.push(entry),
            Err(skip) => skipped.push(skip),
        }
        on_entry();
        if cancelled() {
            break;
        }
    }
    Ok((entries, skipped))
}

/// The listing under `prefix` (so far, once `cancelled`). `object_store` lists whole path
/// segments, so a prefix that ends inside a segment (`photos/2024-`) is listed from its last
/// `/` and filtered here.
async fn list(
    source: &S3Source,
    store: &AmazonS3,
    prefix: &str,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<Vec<ObjectMeta>> {
    let dir = prefix.rsplit_once('/').map_or("", |(dir, _)| dir);
    let dir = Path::parse(dir).map_err(|e| {
        Error::invalid(
            "prefix",
            format!("'{prefix}' cannot be listed (empty or '.' segments): {e}"),
        )
    })?;
    let mut out = Vec::new();
    let mut stream = store.list(Some(&dir).filter(|d| !d.as_ref().is_empty()));
    while let Some(meta) = stream.next().await {
        if cancelled() {
            break;
        }
        let meta = meta.map_err(|e| source.failure("list", &e))?;
        if meta.location.as_ref().starts_with(prefix) {
            out.push(meta);
        }
    }
    Ok(out)
}

/// One object as an entry, or why it is skipped. An object gone between the listing and its
/// HEAD is skipped (so the index drops it too); any other failed HEAD fails the sync, as a
/// failed listing does, before anything is appended.
async fn head(
    source: &S3Source,
    store: &AmazonS3,
    location: Path,
) -> Result<std::result::Result<Entry, (String, String)>> {
    let key = location.as_ref().to_string();
    if let Err(why) = validate_key(&key) {
        return Ok(Err((key, format!("not a valid key: {why}"))));
    }
    let options = GetOptions {
        head: true,
        ..Default::default()
    };
    let got = match store.get_opts(&location, options).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => {
            let why = "not found by its HEAD: deleted during the sync, or a folder marker 'key/'";
            return Ok(Err((key, why.into())));
        }
        Err(e) => return Err(source.failure(&format!("read '{key}' of"), &e)),
    };
    let mut content_type = None;
    let mut metadata = StringMap::new();
    for (attribute, value) in got.attributes.iter() {
        match attribute {
            Attribute::ContentType => content_type = Some(value.as_ref().to_string()),
            Attribute::Metadata(name) => {
                metadata.insert(name.to_string(), value.as_ref().to_string());
            }
            _ => {}
        }
    }
    Ok(Ok(Entry {
        key,
        size: i64::try_from(got.meta.size).unwrap_or(i64::MAX),
        etag: got.meta.e_tag.map(|t| t.trim_matches('"').to_string()),
        sha256: None,
        content_type,
        metadata: Some(metadata),
    }))
}

/// What a failed request most likely means.
enum Cause {
    Unreachable(String),
    NoBucket,
    Denied,
    Other,
}

/// Read the cause from the error and its sources: the connection error, or the status and
/// S3 error code the service answered.
fn cause(e: &object_store::Error) -> Cause {
    if matches!(
        e,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    ) {
        return Cause::Denied;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(http) = s.downcast_ref::<HttpError>()
            && matches!(http.kind(), HttpErrorKind::Connect | HttpErrorKind::Timeout)
        {
            let mut detail = http.to_string();
            let mut inner = std::error::Error::source(http);
            while let Some(i) = inner {
                detail = i.to_string();
                inner = i.source();
            }
            return Cause::Unreachable(detail);
        }
        text.push_str(" | ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    if has(&["NoSuchBucket"]) {
        Cause::NoBucket
    } else if has(&[
        "403 Forbidden",
        "401 Unauthorized",
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
    ]) {
        Cause::Denied
    } else if has(&["404 Not Found"]) {
        Cause::NoBucket
    } else {
        Cause::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bucket_and_prefix() {
        let s = S3Source::parse("s3://photos/2024/").unwrap();
        assert_eq!((s.bucket.as_str(), s.prefix.as_str()), ("photos", "2024/"));
        assert_eq!(s.url(), "s3://photos/2024/");
        assert_eq!(S3Source::parse("s3://photos").unwrap().prefix, "");
        assert!(S3Source::parse("s3:///x").is_err());
        assert!(S3Source::parse("s3://Not_A_Bucket").is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let c = S3Connection {
            secret_access_key: Some("hunter2".into()),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
