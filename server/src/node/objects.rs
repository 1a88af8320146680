//! Reading objects as the node knows them, for every front (the HTTP API, the S3 API):
//! reads wait (briefly) until the index has applied everything the log had when they
//! arrived, so a client reads its own acknowledged writes; an object's state now, or as one
//! of its versions last was.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use tidemark_core::blocking::blocking;
use tidemark_core::event::ObjectState;
use tidemark_core::{Error, OBJECTS_TOPIC, Result};

use super::Node;

/// Longest a read waits for the index to catch up before answering anyway.
const CATCH_UP: Duration = Duration::from_secs(5);

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Wait until the index has applied every write acknowledged before this request.
    #[default]
    Strong,
    /// Answer from the index as it is.
    Eventual,
}

/// A version read back from the log.
pub enum Version {
    State(Box<ObjectState>),
    /// Its event is older than the log's retention: gone with its content.
    Expired,
}

impl Node {
    /// Wait for the index per `consistency`; returns how many records it still lags behind.
    pub async fn catch_up(&self, consistency: Consistency) -> Result<u64> {
        let m = &self.materializer;
        if consistency == Consistency::Strong {
            let targets = m.log_ends().await?;
            if m.wait_for(&targets, CATCH_UP).await {
                return Ok(0);
            }
        }
        m.lag().await
    }

    /// The object as the index has it now, if it exists.
    pub async fn current_state(&self, bucket: &str, key: &str) -> Result<Option<ObjectState>> {
        // One key's look-up takes microseconds: less than a trip to the blocking pool would.
        let head = self.index.get(bucket, key)?;
        Ok(head.and_then(|h| h.state))
    }

    /// Version `version_id` as it last was (its newest event that left it existing), read
    /// back from the log; `None` when the object never had that version, or it was removed
    /// for good (a version delete) after it was last written.
    pub async fn version_state(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<Option<Version>> {
        let index = self.index.clone();
        let (b, k) = (bucket.to_string(), key.to_string());
        let history = blocking(move || index.history_at(&b, &k)).await?;
        let Some((at, entry)) = history.iter().rev().find(|(_, e)| {
            e.removed_version_id.as_deref() == Some(version_id)
                || (e.version_id.as_deref() == Some(version_id) && e.size.is_some())
        }) else {
            return Ok(None);
        };
        if entry.removed_version_id.as_deref() == Some(version_id) {
            return Ok(None);
        }
        let log = &self.log.log;
        if log.offsets(OBJECTS_TOPIC, at.partition).await?.start > at.offset {
            return Ok(Some(Version::Expired));
        }
        let records = log
            .read(
                OBJECTS_TOPIC,
                at.partition,
                at.offset,
                1,
                Duration::from_secs(2),
            )
            .await?;
        let record = records
            .into_iter()
            .find(|r| r.offset == at.offset)
            .ok_or_else(|| {
                Error::Unavailable(format!(
                    "the event of version {version_id} could not be read from the log; retry"
                ))
            })?;
        Ok(self
            .codec()
            .decode_for_index(&record.value)?
            .after_state()
            .map(|s| Version::State(Box::new(s))))
    }
}

/// A tag set in URL query form (`x-amz-tagging`, `x-tidemark-tagging`: `k=v&k2=v2`); a tag
/// given twice is refused, naming it.
pub fn parse_tagging(text: &str) -> std::result::Result<BTreeMap<String, String>, String> {
    let mut tags = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(text.as_bytes()) {
        if tags.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("tag '{k}' is given more than once"));
        }
    }
    Ok(tags)
}
