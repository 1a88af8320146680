//! The index's live objects for stream sinks that start a state table from them (the Iceberg
//! inventory), once the index has applied what the caller needs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tidemark_core::index::{Materializer, ObjectIndex};
use tidemark_sinks::sink::{LiveObject, LiveObjects};
use tokio::sync::mpsc;

/// Objects per chunk handed over.
const CHUNK: usize = 4096;

pub struct IndexObjects {
    pub index: Arc<ObjectIndex>,
    pub materializer: Arc<Materializer>,
    /// Partitions of the objects topic.
    pub partitions: u32,
}

impl LiveObjects for IndexObjects {
    fn scan(
        &self,
        partition: u32,
        at_least: u64,
        out: mpsc::Sender<Vec<LiveObject>>,
    ) -> BoxFuture<'_, tidemark_sinks::Result<u64>> {
        Box::pin(async move {
            let target = BTreeMap::from([(partition, at_least)]);
            while !self
                .materializer
                .wait_for(&target, Duration::from_secs(5))
                .await
            {
                if out.is_closed() {
                    return Err(tidemark_sinks::Error::Transient(
                        "nobody reads the live objects any more".into(),
                    ));
                }
                tracing::info!(
                    partition,
                    "waiting for the index to apply offset {at_least} before reading its objects"
                );
            }
            let index = self.index.clone();
            let partitions = self.partitions;
            let scanned = tokio::task::spawn_blocking(move || {
                index.scan_live(partition, partitions, CHUNK, |chunk| {
                    out.blocking_send(chunk).is_ok()
                })
            })
            .await
            .map_err(|e| tidemark_sinks::Error::Transient(format!("the index scan failed: {e}")))?;
            Ok(scanned?)
        })
    }
}
