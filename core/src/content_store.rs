//! `--content-store DIR|s3://bucket/prefix`: where object content (blobs), multipart parts and
//! filter modules are kept. A directory is the default (the node's data directory, as always);
//! processes on one machine can share one. `s3://` is an S3-compatible store every node of a
//! Kafka cluster shares, so any node serves any object and completes any multipart upload.
//!
//! ```text
//! DIR/blobs/…        DiskBlobs            <prefix>/blobs/…       ObjectStoreBlobs
//! DIR/multipart/…    FileParts            <prefix>/multipart/…   ObjectStoreParts
//! ```
//!
//! An `s3://` store is configured from the standard AWS environment: `AWS_ENDPOINT_URL` (an
//! S3-compatible service), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION` (or `AWS_DEFAULT_REGION`), `AWS_ALLOW_HTTP=true` for a plain-http endpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::blobs::{BlobStore, DiskBlobs};
use crate::multipart::{FileParts, PartStore};
use crate::{Error, Result};

/// Where `--content-store` says content lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory on this machine.
    Dir(PathBuf),
    /// `s3://bucket/prefix`.
    S3 { bucket: String, prefix: String },
}

impl Location {
    /// `s3://bucket[/prefix]` or a directory.
    pub fn parse(value: &str) -> Result<Location> {
        let bad = |why: &str| {
            Error::BadInput(format!(
                "'{value}' {why}: give a directory or s3://bucket/prefix"
            ))
        };
        if let Some(rest) = value.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("names no bucket"));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if value.contains("://") {
            return Err(bad(
                "is a URL of a kind this server does not store content in",
            ));
        }
        if value.is_empty() {
            return Err(bad("is empty"));
        }
        Ok(Location::Dir(PathBuf::from(value)))
    }

    /// The location as a user wrote it.
    pub fn describe(&self) -> String {
        match self {
            Location::Dir(dir) => dir.display().to_string(),
            Location::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        }
    }

    /// Whether other machines can reach it (a directory may still be shared by processes on
    /// this machine, or be a shared file system).
    pub fn is_remote(&self) -> bool {
        matches!(self, Location::S3 { .. })
    }
}

/// An open content store.
pub struct ContentStore {
    pub location: Location,
    pub blobs: Arc<dyn BlobStore>,
    pub parts: Arc<dyn PartStore>,
}

impl ContentStore {
    /// Open the store; an `s3://` one is checked reachable and writable first, and an error
    /// names the URL and the cause. `gc_grace` is how long collections keep unreferenced
    /// blobs (`--blob-gc-grace-secs`). `own`: this process alone uses a directory store (the
    /// embedded log's node), so small content may be packed (see `blobs::DiskBlobs`).
    pub async fn open(
        location: Location,
        gc_grace: std::time::Duration,
        own: bool,
    ) -> Result<ContentStore> {
        match &location {
            Location::Dir(dir) => Ok(ContentStore {
                blobs: Arc::new(DiskBlobs::open_with(&dir.join("blobs"), own)?),
                parts: Arc::new(FileParts::new(&dir.join("multipart"))),
                location,
            }),
            Location::S3 { bucket, prefix } => {
                let (blobs, parts) =
                    open_s3(bucket, prefix, &location.describe(), gc_grace).await?;
                Ok(ContentStore {
                    blobs,
                    parts,
                    location,
                })
            }
        }
    }

    /// The default: today's layout under the data directory.
    pub fn default_dir(data_dir: &Path) -> Location {
        Location::Dir(data_dir.to_path_buf())
    }
}

#[cfg(feature = "s3-source")]
async fn open_s3(
    bucket: &str,
    prefix: &str,
    describe: &str,
    gc_grace: std::time::Duration,
) -> Result<(Arc<dyn BlobStore>, Arc<dyn PartStore>)> {
    use crate::blobs::ObjectStoreBlobs;
    use crate::multipart::ObjectStoreParts;
    use object_store::ObjectStoreExt;
    use object_store::path::Path as Key;

    let unusable = |why: String| {
        Error::Unavailable(format!(
            "content store {describe} (--content-store): {why}; check AWS_ENDPOINT_URL, \
             AWS_REGION, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_ALLOW_HTTP=true \
             for an http:// endpoint), and that the bucket exists"
        ))
    };
    // A few quick retries: a wrong endpoint should stop `serve` in seconds, not minutes.
    let retry = object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(15),
        ..Default::default()
    };
    let store = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(retry)
        .build()
        .map_err(|e| unusable(format!("cannot be configured: {e}")))?;
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(store);
    let root = Key::parse(prefix).map_err(|e| {
        Error::invalid(
            "content_store",
            format!("'{prefix}' is not a valid key prefix: {e}"),
        )
    })?;
    // Reachable and writable: write, read back and delete one object.
    let probe = root
        .clone()
        .join("probe")
        .join(uuid::Uuid::now_v7().simple().to_string());
    store
        .put(&probe, "tidemark".into())
        .await
        .map_err(|e| unusable(format!("cannot write to it ({e})")))?;
    store
        .head(&probe)
        .await
        .map_err(|e| unusable(format!("cannot read from it ({e})")))?;
    store
        .delete(&probe)
        .await
        .map_err(|e| unusable(format!("cannot delete from it ({e})")))?;
    Ok((
        Arc::new(ObjectStoreBlobs::new(store.clone(), &root, describe).with_grace(gc_grace)),
        Arc::new(ObjectStoreParts::new(store, &root, describe)),
    ))
}

#[cfg(not(feature = "s3-source"))]
async fn open_s3(
    _bucket: &str,
    _prefix: &str,
    describe: &str,
    _gc_grace: std::time::Duration,
) -> Result<(Arc<dyn BlobStore>, Arc<dyn PartStore>)> {
    Err(Error::invalid(
        "content_store",
        format!("{describe}: this build has no S3 client (the `s3-source` feature)"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_bad_ones_are_named() {
        assert_eq!(
            Location::parse("s3://bucket/a/b/").unwrap(),
            Location::S3 {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            Location::parse("/srv/content").unwrap(),
            Location::Dir("/srv/content".into())
        );
        for (bad, why) in [
            ("s3:///x", "names no bucket"),
            ("gs://b/p", "of a kind"),
            ("", "empty"),
        ] {
            let e = Location::parse(bad).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("'{bad}' ")) && e.contains(why),
                "{e}"
            );
        }
    }
}
