//! Lakes on an S3-compatible endpoint, through `object_store`. A file is committed with one
//! PUT of the whole object, which S3 applies atomically: readers see all of it or nothing,
//! so no temporary names are needed. A file whose key exists is already committed.
//!
//! The service refusing our credentials, or a bucket that does not exist, is the lake's
//! settings ([`Error::Config`]); anything else may pass ([`Error::Transient`]).

use std::sync::Arc;

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How to reach the S3 service (`sink.s3`); without it, the AWS defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Spec {
    /// The service's URL, for S3-compatible services (`http://127.0.0.1:9000`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// A value (moved to the secret store) or a reference (`env:NAME`, `file:PATH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// Address buckets as `endpoint/bucket` (most S3-compatible services) rather than
    /// `bucket.endpoint`.
    #[serde(default = "yes")]
    pub path_style: bool,
}

fn default_region() -> String {
    "us-east-1".into()
}

fn yes() -> bool {
    true
}

pub struct S3Lake {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    describe: String,
    runtime: tokio::runtime::Handle,
}

impl S3Lake {
    /// `url` is `s3://bucket/prefix`; `secret` the resolved secret access key.
    pub fn open(url: &str, spec: &S3Spec, secret: Option<String>) -> Result<S3Lake> {
        let (store, _bucket, prefix) = connect(url, spec, secret)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Config("S3 lakes need the server's runtime".to_string()))?;
        Ok(S3Lake {
            store,
            prefix,
            describe: url.to_string(),
            runtime,
        })
    }

    pub fn describe(&self) -> String {
        self.describe.clone()
    }

    fn key(&self, dir: &str, name: &str) -> Path {
        let mut key = self.prefix.clone();
        for part in dir.split('/').filter(|p| !p.is_empty()).chain([name]) {
            key = key.join(part);
        }
        key
    }

    /// Whether `dir/name` is committed. Blocking, as `put`: called from the writer's
    /// blocking thread.
    pub fn exists(&self, dir: &str, name: &str) -> Result<bool> {
        let key = self.key(dir, name);
        match self.runtime.block_on(self.store.head(&key)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(store_error(format!("cannot check {key}: {e}"), &e)),
        }
    }

    /// Commit `bytes` as `dir/name`: one PUT.
    pub fn put(&self, dir: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let key = self.key(dir, name);
        self.runtime
            .block_on(self.store.put(&key, PutPayload::from(bytes.to_vec())))
            .map(|_| ())
            .map_err(|e| store_error(format!("cannot write {key}: {e}"), &e))
    }

    /// The names of committed files under the prefix.
    pub fn names(&self) -> Result<Vec<String>> {
        self.runtime.block_on(async {
            let mut names = Vec::new();
            let mut list = self.store.list(Some(&self.prefix));
            while let Some(meta) = list.next().await {
                let meta = meta
                    .map_err(|e| store_error(format!("cannot list {}: {e}", self.describe), &e))?;
                if let Some(name) = meta.location.filename() {
                    names.push(name.to_string());
                }
            }
            Ok(names)
        })
    }
}

/// A client for the bucket of `url` (`s3://bucket/prefix`), the bucket's name and the prefix;
/// `secret` is the resolved secret access key.
pub(crate) fn connect(
    url: &str,
    spec: &S3Spec,
    secret: Option<String>,
) -> Result<(Arc<dyn ObjectStore>, String, Path)> {
    let bad = |message: String| Error::Config(message);
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| bad(format!("'{url}' is not an s3://bucket/prefix URL")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(bad(format!("'{url}' names no bucket (s3://bucket/prefix)")));
    }
    // A few quick retries: writers retry a failed file themselves, and status should show a
    // broken endpoint in seconds, not after object_store's three minutes.
    let retry = object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(15),
        ..Default::default()
    };
    let mut builder = AmazonS3Builder::new()
        .with_retry(retry)
        .with_bucket_name(bucket)
        .with_region(&spec.region)
        .with_virtual_hosted_style_request(!spec.path_style);
    if let Some(endpoint) = &spec.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    if let Some(key) = &spec.access_key_id {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = secret {
        builder = builder.with_secret_access_key(secret);
    }
    let store = builder
        .build()
        .map_err(|e| bad(format!("cannot configure S3 for {url}: {e}")))?;
    let prefix = Path::parse(prefix.trim_end_matches('/'))
        .map_err(|e| bad(format!("'{prefix}' is not a valid key prefix: {e}")))?;
    Ok((Arc::new(store), bucket.to_string(), prefix))
}

/// `message` about a failed request, of the kind its cause says. A missing object is not an
/// error where one may be missing (`exists`); elsewhere a missing bucket is.
fn store_error(message: String, e: &object_store::Error) -> Error {
    match e {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. }
        | object_store::Error::NotFound { .. } => Error::Config(message),
        _ => Error::Transient(message),
    }
}
