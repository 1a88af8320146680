//! A node's log, data directory and the components opened on them.
//!
//! ```text
//! <data-dir>/log/...               the embedded log (source of truth), unless the log is Kafka
//! <data-dir>/index/objects.redb    the materialized object index (always local)
//! <data-dir>/filters/compiled/      precompiled WASM filters (a cache of the modules' code)
//! <data-dir>/snapshots/             index snapshots: the state at an instant starts from them
//! <data-dir>/ingest/s3-events.redb  source identities of ingested S3 notification records
//! <content-store>/blobs/            object content and filter modules by SHA-256
//! <content-store>/multipart/        S3 multipart uploads in progress (parts, upload.json)
//! ```
//!
//! The content store is `--content-store` (default: the data directory): a directory, or
//! `s3://bucket/prefix` shared by every node of a Kafka cluster.
//!
//! # Layout
//! - `mod.rs`: opening a node (log, registry, codec, index, materializer, ingest, delivery).
//! - `writer.rs`: the node writer, the one write path of every front (routed to the node that
//!   writes a key's partition).
//! - `objects.rs`: reads the fronts share (catch-up, current and version state).
//! - `buckets.rs`: bucket settings on the catalog.
//! - `live_objects.rs`: the index's live objects, for sinks that start a state table there.

pub mod buckets;
mod live_objects;
pub mod objects;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tidemark_core::blobs::{self, BlobStore};
use tidemark_core::catalog::Catalog;
use tidemark_core::codec::EventCodec;
use tidemark_core::codec::SchemaSource;
use tidemark_core::codec::config::ConfigCodec;
use tidemark_core::content_store::{ContentStore, Location};
use tidemark_core::index::{Materializer, ObjectIndex};
use tidemark_core::ingest::ownership::{INGEST_GROUP, Routes, own_partitions};
use tidemark_core::ingest::{Ingestor, Origin};
use tidemark_core::log::embedded::{EmbeddedLog, LogConfig};
use tidemark_core::log::kafka::{KafkaConfig, KafkaLog};
use tidemark_core::log::{Log, TopicSpec};
use tidemark_core::multipart::PartStore;
use tidemark_core::registry::SchemaRegistry;
use tidemark_core::registry::external::ExternalRegistry;
use tidemark_core::{CONFIG_TOPIC, OBJECTS_TOPIC, rebuild};
use tidemark_plugins::{FilterEngine, Filters, Limits as FilterLimits};
use tidemark_sinks::delivery::{DEAD_LETTERS_TOPIC, DeadLetters, Engine};
use tidemark_sinks::guard::DestinationPolicy;
use tidemark_sinks::subscription::Subscriptions;
use tokio::task::JoinSet;

pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("log")
}

pub fn index_path(data_dir: &Path) -> PathBuf {
    data_dir.join("index").join("objects.redb")
}

/// Where the log lives.
#[derive(Debug, Clone)]
pub enum LogChoice {
    /// Segment files under `<data-dir>/log`.
    Embedded(LogConfig),
    /// Topics on a Kafka cluster.
    Kafka(KafkaConfig),
}

/// An open log, and the embedded log behind it when there is one (for its file statistics).
#[derive(Clone)]
pub struct OpenLog {
    pub log: Arc<dyn Log>,
    pub embedded: Option<Arc<EmbeddedLog>>,
}

impl OpenLog {
    /// Open for reading and writing (the server).
    pub fn open(choice: &LogChoice, data_dir: &Path) -> anyhow::Result<OpenLog> {
        Ok(match choice {
            LogChoice::Embedded(config) => {
                let log = Arc::new(EmbeddedLog::open(&log_dir(data_dir), config.clone())?);
                OpenLog {
                    log: log.clone(),
                    embedded: Some(log),
                }
            }
            LogChoice::Kafka(config) => OpenLog {
                log: Arc::new(KafkaLog::connect(config.clone())?),
                embedded: None,
            },
        })
    }

    /// Open for reading alongside a server that may be writing (offline tools).
    pub fn open_read_only(choice: &LogChoice, data_dir: &Path) -> anyhow::Result<OpenLog> {
        Ok(match choice {
            LogChoice::Embedded(_) => {
                let log = Arc::new(EmbeddedLog::open_read_only(&log_dir(data_dir))?);
                OpenLog {
                    log: log.clone(),
                    embedded: Some(log),
                }
            }
            LogChoice::Kafka(_) => Self::open(choice, data_dir)?,
        })
    }

    /// Flush and stop background work (the embedded log's writer thread).
    pub fn close(&self) {
        if let Some(e) = &self.embedded {
            e.close();
        }
    }
}

/// Where schemas are registered.
#[derive(Clone)]
pub enum Registry {
    /// Built in, stored in the log's `_schemas` topic, served at the node's registry paths.
    BuiltIn(Arc<SchemaRegistry>),
    /// An external Confluent-compatible registry.
    External(Arc<ExternalRegistry>),
}

impl Registry {
    /// Open the registry: the built-in one on `log`, or the external one at `url`.
    async fn open(log: &Arc<dyn Log>, url: Option<&str>) -> anyhow::Result<Registry> {
        Ok(match url {
            Some(url) => Registry::External(Arc::new(ExternalRegistry::new(url))),
            None => Registry::BuiltIn(Arc::new(SchemaRegistry::open(log.clone()).await?)),
        })
    }

    /// Register a schema version (a no-op when it is registered already); returns its id.
    async fn register(&self, subject: &str, text: &str) -> anyhow::Result<u32> {
        Ok(match self {
            Registry::BuiltIn(r) => r.register(subject, text).await?,
            Registry::External(r) => r.register(subject, text).await?,
        })
    }

    fn source(&self) -> Arc<dyn SchemaSource> {
        match self {
            Registry::BuiltIn(r) => r.clone(),
            Registry::External(r) => r.clone(),
        }
    }
}

/// What `tidemark serve` opens.
pub struct NodeConfig {
    /// Kafka: join the ingest group with a stable instance id (static membership).
    pub static_membership: bool,
    pub data_dir: PathBuf,
    pub log: LogChoice,
    /// An external schema registry; `None` for the built-in one.
    pub schema_registry: Option<String>,
    /// Where other nodes reach this one (forwarded mutations).
    pub advertise_url: String,
    /// Partitions of the `objects` topic when it is created.
    pub partitions: u32,
    /// Retention of the `objects` topic: milliseconds, bytes per partition (`None`: keep).
    pub retention: (Option<u64>, Option<u64>),
    pub origin: Origin,
    /// Non-public addresses webhooks and functions may be sent to.
    pub destinations: DestinationPolicy,
    /// CA certificates (PEM) trusted for webhook and function URLs besides the web PKI.
    pub webhook_ca_file: Option<PathBuf>,
    /// Memory for caches (`serve --cache-bytes`): the index's pages and ingest's heads.
    pub cache_bytes: usize,
    /// The process functions subscriptions may name (`serve --function`).
    pub functions: tidemark_sinks::function::Functions,
    /// WASM filter instances that may exist at once (one per filtered subscription and
    /// partition, plus tests in progress).
    pub filter_instances: u32,
    /// Limits a filter version gets unless its upload asks otherwise, and the most it may ask.
    pub filter_defaults: FilterLimits,
    pub filter_maxima: FilterLimits,
    /// What all filters together may use (memory budget, versions kept), where they compile.
    pub filter_server: tidemark_plugins::ServerLimits,
    /// When index snapshots are taken, and how many are kept.
    pub snapshots: tidemark_replay::snapshot::Policy,
    /// When unreferenced content blobs are collected.
    pub blob_gc: BlobGc,
    /// How long the source identity of an ingested S3 notification record is remembered.
    pub s3_dedup_window: std::time::Duration,
}

/// Garbage collection of content blobs.
#[derive(Debug, Clone, Copy)]
pub struct BlobGc {
    /// Time between collections; `None`: only when asked (`POST /v1/admin/blobs/gc`).
    pub every: Option<std::time::Duration>,
    /// Blobs younger than this are kept even when unreferenced: their event may still be on
    /// its way to the log.
    pub grace: std::time::Duration,
}

impl Default for BlobGc {
    fn default() -> Self {
        BlobGc {
            every: Some(std::time::Duration::from_secs(3600)),
            grace: std::time::Duration::from_secs(3600),
        }
    }
}

pub struct Node {
    pub log: OpenLog,
    pub registry: Registry,
    codec: Arc<EventCodec>,
    pub index: Arc<ObjectIndex>,
    pub materializer: Arc<Materializer>,
    pub ingestor: Arc<Ingestor>,
    /// Owners of the partitions this node does not write (`None`: it writes them all).
    pub routes: Option<Arc<Routes>>,
    /// Subscriptions and their delivery.
    pub engine: Arc<Engine>,
    /// WASM filter versions and their compiled code.
    pub filters: Arc<Filters>,
    /// Replays, restores and syncs of every node, recorded in `_config`.
    pub jobs: Arc<tidemark_replay::jobs::Jobs>,
    /// Where this node's index snapshots are (`?at=` queries start from them).
    pub snapshot_dir: PathBuf,
    /// Configuration entities on `_config` (S3 buckets, subscriptions, filters).
    pub catalog: Arc<Catalog>,
    /// Object content and filter modules, by SHA-256 (`--content-store`).
    pub blobs: Arc<dyn BlobStore>,
    /// S3 multipart uploads in progress, in the same content store.
    pub parts: Arc<dyn PartStore>,
    pub blob_gc: BlobGc,
    /// Notification records already ingested (`POST /v1/ingest/s3-events`).
    pub s3_seen: Arc<tidemark_core::ingest::dedup::SeenRecords>,
    /// The catalog `/iceberg` serves and writes (`<data-dir>/iceberg/catalog.db`).
    pub iceberg: tidemark_sinks::iceberg::IcebergSpec,
    /// Background tasks (materializer, ownership); dropping the node stops them.
    _tasks: JoinSet<()>,
}

/// This node's stable identity: made once, kept in `<data-dir>/node.id`.
fn instance_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("node.id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        return Ok(id.trim().to_string());
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    let id = format!("tidemark-{}", uuid::Uuid::now_v7().simple());
    tidemark_core::log::embedded::write_atomically(data_dir, "node.id", id.as_bytes())?;
    Ok(id)
}

impl Node {
    /// A node with its content store in its data directory.
    pub async fn open(cfg: NodeConfig) -> anyhow::Result<Node> {
        let content = ContentStore::default_dir(&cfg.data_dir);
        Node::open_with_content_store(cfg, content).await
    }

    /// A node with its content blobs, multipart parts and filter modules at `content`
    /// (`--content-store`).
    pub async fn open_with_content_store(
        mut cfg: NodeConfig,
        content: Location,
    ) -> anyhow::Result<Node> {
        if let LogChoice::Kafka(k) = &mut cfg.log
            && cfg.static_membership
        {
            k.instance_id = Some(instance_id(&cfg.data_dir)?);
        }
        let open = OpenLog::open(&cfg.log, &cfg.data_dir)?;
        let log = open.log.clone();
        let (retention_ms, retention_bytes) = cfg.retention;
        log.ensure_topic(
            OBJECTS_TOPIC,
            &TopicSpec {
                retention_ms,
                retention_bytes,
                ..TopicSpec::new(cfg.partitions)
            },
        )
        .await?;
        if let Some(embedded) = &open.embedded {
            embedded.set_retention(OBJECTS_TOPIC, retention_ms, retention_bytes)?;
        }
        log.ensure_topic(
            CONFIG_TOPIC,
            &TopicSpec {
                compacted: true,
                ..TopicSpec::new(1)
            },
        )
        .await?;
        let internal = TopicSpec {
            compacted: true,
            ..TopicSpec::new(1)
        };
        log.ensure_topic(DEAD_LETTERS_TOPIC, &internal).await?;
        let registry = Registry::open(&log, cfg.schema_registry.as_deref()).await?;
        let (object_id, config_id) = register_schemas(&registry).await?;
        let codec = Arc::new(EventCodec::new(object_id, registry.source())?);
        let config_codec = Arc::new(ConfigCodec::new(config_id, registry.source())?);

        let path = index_path(&cfg.data_dir);
        std::fs::create_dir_all(path.parent().expect("index path has a parent"))
            .with_context(|| format!("create {}", path.display()))?;
        if index_ahead_of_log(&path, log.as_ref()).await? {
            rebuild_in_place(log.clone(), codec.clone(), &path, |_, _| {}).await?;
        }
        // Three quarters of the cache budget for the index's pages, a quarter for ingest's heads.
        let index = Arc::new(ObjectIndex::open_with_cache(
            &path,
            cfg.cache_bytes / 4 * 3,
        )?);
        // The embedded log has one writer: this node. On Kafka the ingest group decides.
        let partitions = log.partitions(OBJECTS_TOPIC)?;
        let owned = match open.embedded {
            Some(_) => (0..partitions).collect(),
            None => Default::default(),
        };
        let ingestor = Arc::new(
            Ingestor::recover(
                log.clone(),
                codec.clone(),
                index.clone(),
                cfg.origin.clone(),
                owned,
                cfg.cache_bytes / 4,
            )
            .await?,
        );
        let materializer = Materializer::new(log.clone(), index.clone(), codec.clone())?;
        let mut tasks = materializer.start()?;
        let snapshot_dir = tidemark_replay::snapshot::dir_of(&cfg.data_dir);
        tasks.spawn(tidemark_replay::snapshot::take_periodically(
            index.clone(),
            materializer.subscribe_applied(),
            log.clone(),
            snapshot_dir.clone(),
            cfg.snapshots,
        ));
        let content =
            ContentStore::open(content, cfg.blob_gc.grace, open.embedded.is_some()).await?;
        if let Some(embedded) = &open.embedded
            && embedded.fsyncs_every_group()
            && let Some(hook) = content.blobs.sync_with_log()
        {
            // Small uploads then share the log's group commit: one fsync for many.
            embedded.run_before_sync(hook);
        }
        if open.embedded.is_none() && !content.location.is_remote() {
            tracing::warn!(
                "--log kafka with the content store in the directory {}: other nodes see \
                 content, multipart parts and filter modules stored through this one only if \
                 they share that directory; give every node the same --content-store \
                 (s3://bucket/prefix, or a directory they share)",
                content.location.describe()
            );
        }
        let blobs = content.blobs;
        let routes = match open.embedded {
            Some(_) => None,
            None => {
                let routes = Routes::new(
                    log.clone(),
                    config_codec.clone(),
                    cfg.advertise_url.clone(),
                    cfg.origin.node.clone(),
                );
                tasks.spawn(routes.clone().follow());
                let membership = log.join_group(INGEST_GROUP, OBJECTS_TOPIC).await?;
                tasks.spawn(own_partitions(
                    ingestor.clone(),
                    materializer.clone(),
                    log.clone(),
                    routes.clone(),
                    membership,
                ));
                Some(routes)
            }
        };
        let node_name = cfg.origin.node.clone();
        let catalog = Catalog::open(log.clone(), config_codec.clone(), node_name.clone()).await?;
        let dead_letters = Catalog::open_topic(
            log.clone(),
            config_codec,
            node_name.clone(),
            DEAD_LETTERS_TOPIC,
        )
        .await?;
        let source = format!(
            "/tidemark/{}",
            cfg.origin
                .region
                .clone()
                .or(node_name)
                .unwrap_or_else(|| "local".into())
        );
        let filters = Arc::new(
            Filters::new(
                catalog.clone(),
                blobs.clone(),
                FilterEngine::new(cfg.filter_maxima, cfg.filter_instances)?,
                Some(cfg.data_dir.join("filters").join("compiled")),
                cfg.filter_defaults,
            )
            .with_server_limits(cfg.filter_server),
        );
        if let Some(every) = cfg.blob_gc.every {
            let live = filters.clone();
            tasks.spawn(blobs::collect_periodically(
                log.clone(),
                codec.clone(),
                blobs.clone(),
                Arc::new(move || live.live_modules()),
                every,
                cfg.blob_gc.grace,
            ));
        }
        let engine = Engine::start(
            Arc::new(
                Subscriptions::new(
                    catalog.clone(),
                    log.clone(),
                    cfg.destinations,
                    filters.clone(),
                    Arc::new(cfg.functions),
                )
                .with_iceberg_catalog(tidemark_sinks::iceberg::served_catalog(&cfg.data_dir)),
            ),
            Arc::new(DeadLetters::new(dead_letters)),
            log.clone(),
            codec.clone(),
            source,
            tidemark_sinks::client::outbound(cfg.destinations, cfg.webhook_ca_file.as_deref())?,
            Some(Arc::new(live_objects::IndexObjects {
                index: index.clone(),
                materializer: materializer.clone(),
                partitions,
            })),
        );
        // Jobs live in `_config`; on the embedded log no other process shares it.
        let jobs = Arc::new(tidemark_replay::jobs::Jobs::durable(
            catalog.clone(),
            cfg.origin.node.clone(),
            open.embedded.is_some(),
        ));
        Ok(Node {
            catalog,
            engine,
            filters,
            jobs,
            snapshot_dir,
            blobs,
            parts: content.parts,
            blob_gc: cfg.blob_gc,
            s3_seen: Arc::new(tidemark_core::ingest::dedup::SeenRecords::open(
                &cfg.data_dir.join("ingest").join("s3-events.redb"),
                cfg.s3_dedup_window,
            )?),
            iceberg: tidemark_sinks::iceberg::IcebergSpec::served(&cfg.data_dir),
            log: open,
            registry,
            codec,
            index,
            materializer,
            ingestor,
            routes,
            _tasks: tasks,
        })
    }

    pub fn codec(&self) -> Arc<EventCodec> {
        self.codec.clone()
    }
}

/// Register every compiled-in schema version (a no-op when already registered); returns the
/// ids of the current object event and config event schemas.
pub async fn register_schemas(registry: &Registry) -> anyhow::Result<(u32, u32)> {
    let mut config_id = 0;
    for file in tidemark_schemas::CONFIG_EVENT {
        config_id = registry.register(file.subject, file.text).await?;
    }
    let mut write_id = 0;
    for file in tidemark_schemas::OBJECT_EVENT {
        write_id = registry
            .register(file.subject, file.text)
            .await
            .with_context(|| format!("register {} version {}", file.subject, file.version))?;
    }
    Ok((write_id, config_id))
}

/// An index that has applied offsets the log no longer has (the log's tail was cut off after a
/// corruption, or the topic was recreated) no longer describes the log; it is rebuilt from the
/// log, the source of truth.
async fn index_ahead_of_log(path: &Path, log: &dyn Log) -> anyhow::Result<bool> {
    if !path.exists() {
        return Ok(false);
    }
    // A small page cache: this handle only reads the applied offsets.
    let applied = ObjectIndex::open_with_cache(path, 4 << 20)?.applied()?;
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

/// Rebuild the index at `path` from the log: build beside it, then replace it. Refuses while
/// another process (a running server) has the index open.
pub async fn rebuild_in_place(
    log: Arc<dyn Log>,
    codec: Arc<EventCodec>,
    path: &Path,
    progress: impl FnMut(u64, u64),
) -> anyhow::Result<rebuild::RebuildStats> {
    if path.exists() {
        drop(
            ObjectIndex::open_with_cache(path, 4 << 20)
                .context("rebuilding in place needs the server stopped (or use --into DIR)")?,
        );
    }
    let tmp = path.with_extension("redb.rebuilding");
    if tmp.exists() {
        std::fs::remove_file(&tmp).with_context(|| format!("remove stale {}", tmp.display()))?;
    }
    let stats = rebuild::rebuild_index(log, codec, &tmp, progress).await?;
    std::fs::rename(&tmp, path).with_context(|| format!("replace {}", path.display()))?;
    Ok(stats)
}

/// A log opened for reading while a server may be writing it, with a codec for its events.
pub struct OfflineLog {
    pub log: OpenLog,
    /// `None` until a server has registered the object event schema (no events yet).
    pub codec: Option<Arc<EventCodec>>,
}

pub async fn open_offline(
    choice: &LogChoice,
    data_dir: &Path,
    schema_registry: Option<&str>,
) -> anyhow::Result<OfflineLog> {
    let log = OpenLog::open_read_only(choice, data_dir)?;
    let current = tidemark_schemas::object_event_latest();
    let codec = match schema_registry {
        Some(url) => {
            // Registering an existing version answers its id without changing anything.
            let registry = Arc::new(ExternalRegistry::new(url));
            let id = registry.register(current.subject, current.text).await?;
            Some(Arc::new(EventCodec::new(id, registry)?))
        }
        None => {
            let registry = Arc::new(SchemaRegistry::load(log.log.clone()).await?);
            match registry.lookup(current.subject, current.text) {
                Ok(v) => Some(Arc::new(EventCodec::new(v.id, registry)?)),
                Err(_) => None,
            }
        }
    };
    Ok(OfflineLog { log, codec })
}
