//! Which node writes which partition of `objects`, when several nodes share a Kafka cluster.
//!
//! Nodes are members of one consumer group on `objects` (`INGEST_GROUP`); the partitions the
//! group assigns to a node are the ones it writes. A partition changes hands only after its
//! old owner released it (every append in flight resolved), and the new owner starts writing
//! it only once its index has applied the partition to the end, so its per-key sequences and
//! states continue exactly where the old owner's stopped. Each owner announces itself on
//! `_config` (`ingest-owner` events), which every node follows to forward mutations for
//! partitions it does not own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use uuid::Uuid;

use super::Ingestor;
use crate::codec::config::{ConfigCodec, ConfigEvent};
use crate::index::Materializer;
use crate::log::{Log, Membership, NewRecord};
use crate::time::now_us;
use crate::{CONFIG_TOPIC, OBJECTS_TOPIC, Result};

/// The consumer group whose assignment decides who writes which partition.
pub const INGEST_GROUP: &str = "tidemark-ingest";
/// `kind` of the config events that announce a partition's owner.
const OWNER_KIND: &str = "ingest-owner";

/// Who owns each partition, as announced on `_config`.
pub struct Routes {
    log: Arc<dyn Log>,
    codec: Arc<ConfigCodec>,
    /// Where other nodes send this node mutations.
    url: String,
    node: Option<String>,
    /// Partition -> URL of the node that announced it last.
    owners: RwLock<HashMap<u32, String>>,
}

impl Routes {
    pub fn new(
        log: Arc<dyn Log>,
        codec: Arc<ConfigCodec>,
        url: String,
        node: Option<String>,
    ) -> Arc<Routes> {
        Arc::new(Routes {
            log,
            codec,
            url,
            node,
            owners: RwLock::new(HashMap::new()),
        })
    }

    /// This node's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL of the node that writes `partition`, as far as this node has heard.
    pub fn owner(&self, partition: u32) -> Option<String> {
        self.owners.read().unwrap().get(&partition).cloned()
    }

    async fn announce(&self, partition: u32) -> Result<()> {
        let event = ConfigEvent {
            event_id: Uuid::now_v7(),
            event_time: now_us(),
            kind: OWNER_KIND.into(),
            name: partition.to_string(),
            action: "updated".into(),
            spec: Some(serde_json::json!({ "url": self.url }).to_string()),
            actor: None,
            node: self.node.clone(),
        };
        let value = self.codec.encode(&event)?;
        let key = format!("{OWNER_KIND}/{partition}");
        self.log
            .append(CONFIG_TOPIC, vec![NewRecord::new(key, value)])
            .await?;
        self.owners
            .write()
            .unwrap()
            .insert(partition, self.url.clone());
        Ok(())
    }

    /// Follow `_config` from its start for as long as the node runs.
    pub async fn follow(self: Arc<Self>) {
        let mut next = None;
        loop {
            if let Err(e) = self.follow_from(&mut next).await {
                tracing::warn!("following {CONFIG_TOPIC}: {e}; retrying in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    async fn follow_from(&self, next: &mut Option<u64>) -> Result<()> {
        let mut from = match *next {
            Some(n) => n,
            None => self.log.offsets(CONFIG_TOPIC, 0).await?.start,
        };
        loop {
            let records = self
                .log
                .read(CONFIG_TOPIC, 0, from, 1000, Duration::from_secs(1))
                .await?;
            for rec in &records {
                from = rec.offset + 1;
                *next = Some(from);
                if rec.value.is_empty() {
                    continue; // a tombstone of a catalog entity
                }
                match self.codec.decode(&rec.value) {
                    Ok(e) if e.kind == OWNER_KIND => self.apply(&e),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(
                        offset = rec.offset,
                        "skipping undecodable config event: {e}"
                    ),
                }
            }
        }
    }

    fn apply(&self, e: &ConfigEvent) {
        let url = e
            .spec
            .as_deref()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
            .and_then(|v| v["url"].as_str().map(str::to_string));
        if let (Ok(p), Some(url)) = (e.name.parse::<u32>(), url) {
            self.owners.write().unwrap().insert(p, url);
        }
    }
}

/// Take part in the ingest group for as long as the node runs: write the partitions the group
/// assigns, release those it revokes.
pub async fn own_partitions(
    ingestor: Arc<Ingestor>,
    materializer: Arc<Materializer>,
    log: Arc<dyn Log>,
    routes: Arc<Routes>,
    mut membership: Membership,
) {
    let acquire = |p: u32| {
        let (ingestor, materializer, log, routes) = (
            ingestor.clone(),
            materializer.clone(),
            log.clone(),
            routes.clone(),
        );
        async move {
            // Everything the previous owner wrote is in the log now; take it in first.
            let end = log.offsets(OBJECTS_TOPIC, p).await?.end;
            while !materializer
                .wait_for(&BTreeMap::from([(p, end)]), Duration::from_secs(10))
                .await
            {
                tracing::info!(
                    partition = p,
                    "waiting for the index to reach offset {end} before writing the partition"
                );
            }
            ingestor.acquire(p);
            // Until the announcement is out, other nodes cannot send this partition's mutations.
            while let Err(e) = routes.announce(p).await {
                tracing::warn!(partition = p, "announcing ownership: {e}; retrying in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            tracing::info!(partition = p, "writing partition");
            Ok::<(), crate::Error>(())
        }
    };
    loop {
        tokio::select! {
            revoked = membership.revoked.recv() => {
                let Some(revocation) = revoked else { return };
                ingestor.release(&revocation.partitions).await;
                tracing::info!(partitions = ?revocation.partitions, "released partitions");
                revocation.done();
            }
            changed = membership.assigned.changed() => {
                if changed.is_err() {
                    return;
                }
                let assigned: BTreeSet<u32> = membership.assigned.borrow_and_update().clone();
                let owned = ingestor.owned();
                let gone: BTreeSet<u32> = owned.difference(&assigned).copied().collect();
                if !gone.is_empty() {
                    ingestor.release(&gone).await;
                }
                for &p in assigned.difference(&owned) {
                    if let Err(e) = acquire(p).await {
                        tracing::error!(partition = p, "cannot take the partition over: {e}");
                    }
                }
            }
        }
    }
}
