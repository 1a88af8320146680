//! Buckets: catalog entities of kind `bucket` (made by the S3 front), whose spec holds their
//! settings (`versioning`, `access_events`). Every change is a catalog event naming who made
//! it, and a `BucketConfig:Changed` event on the objects log for subscribers.

use serde_json::{Value, json};
use tidemark_core::Error;
use tidemark_core::catalog::Action;
use tidemark_core::event::EventType;
use tidemark_core::ingest::RequestContext;

use super::Node;

pub const KIND: &str = "bucket";

impl Node {
    /// `bucket`'s spec, `None` when there is no such bucket.
    pub fn bucket_spec(&self, bucket: &str) -> Option<Value> {
        let entry = self.catalog.get(KIND, bucket)?;
        Some(serde_json::from_str(&entry.spec).unwrap_or_else(|_| json!({})))
    }

    /// Whether reads of `bucket` append `ObjectAccessed:*` events (off unless turned on).
    pub fn access_events(&self, bucket: &str) -> bool {
        self.bucket_spec(bucket)
            .is_some_and(|s| s["access_events"].as_bool() == Some(true))
    }

    /// Change `bucket`'s spec with `edit`, which says whether it changed anything; a change is
    /// saved on the catalog and announced as `BucketConfig:Changed`. Returns whether it changed.
    pub async fn update_bucket_spec(
        &self,
        bucket: &str,
        ctx: &RequestContext,
        edit: impl FnOnce(&mut Value) -> bool,
    ) -> Result<bool, Error> {
        let entry = self
            .catalog
            .get(KIND, bucket)
            .ok_or_else(|| Error::NotFound(format!("bucket '{bucket}' does not exist")))?;
        // Keep whatever else the spec holds; only what `edit` touches changes.
        let mut spec: Value = serde_json::from_str(&entry.spec).map_err(|e| {
            Error::Corrupt(format!(
                "bucket '{bucket}' has a spec that is not JSON: {e}"
            ))
        })?;
        if !edit(&mut spec) {
            return Ok(false);
        }
        self.catalog
            .change(
                KIND,
                bucket,
                Action::Update,
                Some(spec.to_string()),
                ctx.requester.clone(),
            )
            .await?;
        self.ingestor
            .append_bucket_event(bucket, EventType::BucketConfigChanged, ctx)
            .await?;
        Ok(true)
    }
}
