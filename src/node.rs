//! A node's data directory and the components opened on it.
//!
//! ```text
//! <data-dir>/log/...               the embedded log (source of truth)
//! <data-dir>/index/objects.redb    the materialized object index
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tidemark_core::codec::EventCodec;
use tidemark_core::index::{Materializer, ObjectIndex};
use tidemark_core::ingest::{Ingestor, Origin};
use tidemark_core::log::embedded::{EmbeddedLog, LogConfig};
use tidemark_core::log::{Log, TopicSpec};
use tidemark_core::registry::SchemaRegistry;
use tidemark_core::{CONFIG_TOPIC, OBJECTS_TOPIC, rebuild};
use tokio::task::JoinSet;

pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("log")
}

pub fn index_path(data_dir: &Path) -> PathBuf {
    data_dir.join("index").join("objects.redb")
}

/// What `tidemark serve` opens.
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub log: LogConfig,
    /// Partitions of the `objects` topic when it is created.
    pub partitions: u32,
    pub origin: Origin,
}

pub struct Node {
    pub log: Arc<EmbeddedLog>,
    pub registry: Arc<SchemaRegistry>,
    codec: Arc<EventCodec>,
    pub index: Arc<ObjectIndex>,
    pub materializer: Arc<Materializer>,
    pub ingestor: Arc<Ingestor>,
    /// The materializer's partition tasks; dropping the node stops them.
    _tasks: JoinSet<()>,
}

impl Node {
    pub async fn open(cfg: NodeConfig) -> anyhow::Result<Node> {
        let log = Arc::new(EmbeddedLog::open(&log_dir(&cfg.data_dir), cfg.log.clone())?);
        let dyn_log: Arc<dyn Log> = log.clone();
        dyn_log
            .ensure_topic(OBJECTS_TOPIC, &TopicSpec::new(cfg.partitions))
            .await?;
        dyn_log
            .ensure_topic(
                CONFIG_TOPIC,
                &TopicSpec {
                    compacted: true,
                    ..TopicSpec::new(1)
                },
            )
            .await?;
        let registry = Arc::new(SchemaRegistry::open(dyn_log.clone()).await?);
        let codec = Arc::new(EventCodec::new(
            register_schemas(&registry).await?,
            registry.clone(),
        )?);

        let path = index_path(&cfg.data_dir);
        std::fs::create_dir_all(path.parent().expect("index path has a parent"))
            .with_context(|| format!("create {}", path.display()))?;
        if index_ahead_of_log(&path, dyn_log.as_ref()).await? {
            rebuild_in_place(dyn_log.clone(), codec.clone(), &path, |_, _| {}).await?;
        }
        let index = Arc::new(ObjectIndex::open(&path)?);
        let ingestor =
            Arc::new(Ingestor::recover(dyn_log.clone(), codec.clone(), &index, cfg.origin).await?);
        let materializer = Materializer::new(dyn_log, index.clone(), codec.clone())?;
        let tasks = materializer.start()?;
        Ok(Node {
            log,
            registry,
            codec,
            index,
            materializer,
            ingestor,
            _tasks: tasks,
        })
    }
}

impl Node {
    pub fn codec(&self) -> Arc<EventCodec> {
        self.codec.clone()
    }
}

/// Register every compiled-in schema version (a no-op when already registered); returns the id
/// of the current object event schema.
pub async fn register_schemas(registry: &SchemaRegistry) -> anyhow::Result<u32> {
    for file in tidemark_schemas::CONFIG_EVENT {
        registry.register(file.subject, file.text).await?;
    }
    let mut write_id = 0;
    for file in tidemark_schemas::OBJECT_EVENT {
        write_id = registry
            .register(file.subject, file.text)
            .await
            .with_context(|| format!("register {} version {}", file.subject, file.version))?;
    }
    Ok(write_id)
}

/// An index that has applied offsets the log no longer has (the log's tail was cut off after a
/// corruption) no longer describes the log; it is rebuilt from the log, the source of truth.
async fn index_ahead_of_log(path: &Path, log: &dyn Log) -> anyhow::Result<bool> {
    if !path.exists() {
        return Ok(false);
    }
    let applied = ObjectIndex::open(path)?.applied()?;
    for (p, next) in applied {
        let end = log.offsets(OBJECTS_TOPIC, p).await?.end;
        if next > end {
            tracing::warn!(
                partition = p,
                applied = next,
                log_end = end,
                "the index is ahead of the log (its tail was truncated); rebuilding the index from the log"
            );
            return Ok(true);
        }
    }
    Ok(false)
}

/// Rebuild the index at `path` from the log: build beside it, then replace it.
pub async fn rebuild_in_place(
    log: Arc<dyn Log>,
    codec: Arc<EventCodec>,
    path: &Path,
    progress: impl FnMut(u64, u64),
) -> anyhow::Result<rebuild::RebuildStats> {
    let tmp = path.with_extension("redb.rebuilding");
    if tmp.exists() {
        std::fs::remove_file(&tmp).with_context(|| format!("remove stale {}", tmp.display()))?;
    }
    let stats = rebuild::rebuild_index(log, codec, &tmp, progress).await?;
    std::fs::rename(&tmp, path).with_context(|| format!("replace {}", path.display()))?;
    Ok(stats)
}

/// A data directory opened for reading while a server may be writing it.
pub struct OfflineLog {
    pub log: Arc<EmbeddedLog>,
    /// `None` until the server has registered the object event schema (no events yet).
    pub codec: Option<Arc<EventCodec>>,
}

pub async fn open_offline(data_dir: &Path) -> anyhow::Result<OfflineLog> {
    let log = Arc::new(EmbeddedLog::open_read_only(&log_dir(data_dir))?);
    let registry = Arc::new(SchemaRegistry::load(log.clone()).await?);
    let current = tidemark_schemas::object_event_latest();
    let codec = match registry.lookup(current.subject, current.text) {
        Ok(v) => Some(Arc::new(EventCodec::new(v.id, registry)?)),
        Err(_) => None,
    };
    Ok(OfflineLog { log, codec })
}
