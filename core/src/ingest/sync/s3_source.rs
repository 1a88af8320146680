//! An S3 bucket as a sync source: its URL and how to reach it. Listing it takes
//! `object_store` (`s3_list.rs`, the `s3-source` feature); this part does not.

use std::fmt;

use crate::ingest::validate_bucket;
use crate::{Error, Result};

/// How to reach the S3 service. The secret is the resolved value: whoever builds this has
/// looked up `env:` / `file:` references already, and `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Connection {
    /// The service's URL for S3-compatible services; `None`: AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// `endpoint/bucket` addressing (most S3-compatible services) rather than
    /// `bucket.endpoint`.
    pub path_style: bool,
}

impl Default for S3Connection {
    fn default() -> Self {
        S3Connection {
            endpoint: None,
            region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
            path_style: true,
        }
    }
}

impl fmt::Debug for S3Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Connection")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("path_style", &self.path_style)
            .finish()
    }
}

/// `s3://BUCKET[/PREFIX]` and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Source {
    pub bucket: String,
    /// The URL's prefix (possibly empty); the sync's prefix starts with it.
    pub prefix: String,
    pub connection: S3Connection,
}

impl S3Source {
    /// `s3://BUCKET[/PREFIX]`, reached with the default connection (AWS, us-east-1); the
    /// error names the `source` field.
    pub fn parse(url: &str) -> Result<S3Source> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            Error::invalid("source", format!("'{url}' is not s3://BUCKET[/PREFIX]"))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::invalid(
                "source",
                format!("'{url}' names no bucket: s3://BUCKET[/PREFIX]"),
            ));
        }
        validate_bucket(bucket).map_err(|m| {
            Error::invalid("source", format!("'{bucket}' is not a bucket name: {m}"))
        })?;
        Ok(S3Source {
            bucket: bucket.into(),
            prefix: prefix.into(),
            connection: S3Connection::default(),
        })
    }

    /// `s3://bucket/prefix`, as the user wrote it.
    pub fn url(&self) -> String {
        match self.prefix.as_str() {
            "" => format!("s3://{}", self.bucket),
            p => format!("s3://{}/{p}", self.bucket),
        }
    }
}
