//! The embedded segment log: Kafka's storage model on local disk, for one machine with zero
//! setup.
//!
//! # Layout
//! - `frame.rs`: the on-disk record frame (length + CRC32C).
//! - `segment.rs`: a segment file and its sparse offset/time index.
//! - `partition.rs`: a partition's segments, recovery of a torn tail, rolling, retention.
//! - `writer.rs`: the group-commit thread that owns every append.
//! - `offsets.rs`: durable committed offsets per named consumer.
//! - `config.rs`: fsync policy, segment size, index interval.
//! - `compaction.rs`: newest record per key in sealed segments of compacted topics.
//! - `wal.rs`: the write-ahead file: one fsync for a small group's partitions.
//!
//! On disk, under the log directory:
//! ```text
//! LOCK                                  held by the writing process
//! wal                                   write-ahead file (policy `always`)
//! <topic>/topic.json                    partitions, retention
//! <topic>/<partition>/<base>.log        records, base = first offset, 20 digits
//! <topic>/<partition>/<base>.index      sparse index of a sealed segment
//! _consumers/<consumer>.json            committed offsets
//! ```

mod compaction;
mod config;
mod frame;
mod offsets;
mod partition;
mod segment;
mod wal;
mod writer;

pub use compaction::Compacted;
pub use writer::Failure;

pub use config::{FsyncPolicy, LogConfig, MAX_SEGMENT_BYTES};
pub use offsets::write_atomically;
pub use partition::Partition;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::oneshot;

use self::offsets::OffsetStore;
use self::writer::{Command, Failed, Job, Writer};
use crate::error::IoContext;
use crate::log::{
    AppendFuture, Log, NewRecord, OffsetRange, Record, TopicSpec, partition_for, validate_name,
};
use crate::{Error, Result};

/// A topic and its partitions.
pub struct Topic {
    pub name: String,
    pub spec: TopicSpec,
    pub partitions: Vec<Arc<Partition>>,
}

pub struct EmbeddedLog {
    root: PathBuf,
    config: LogConfig,
    topics: Arc<RwLock<HashMap<String, Arc<Topic>>>>,
    /// Queue to the group-commit thread; `None` when opened read-only.
    writer: Option<Mutex<Sender<Command>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    failed: Failed,
    before_sync: Arc<RwLock<Option<crate::log::BeforeSync>>>,
    /// Shared with the blocking tasks that write it (a commit fsyncs).
    offsets: Option<Arc<OffsetStore>>,
    /// Held for the life of a writable log so two processes never append to one directory.
    _lock: Option<File>,
}

/// Per-partition numbers for status pages and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionStats {
    pub partition: u32,
    pub start: u64,
    pub end: u64,
    pub bytes: u64,
    pub segments: usize,
}

const TOPIC_FILE: &str = "topic.json";
const CONSUMERS_DIR: &str = "_consumers";

impl EmbeddedLog {
    /// Open (or create) a log directory for reading and writing, repairing torn tails.
    pub fn open(root: &Path, config: LogConfig) -> Result<EmbeddedLog> {
        if config.segment_bytes > MAX_SEGMENT_BYTES || config.segment_bytes < 1024 {
            return Err(Error::BadInput(format!(
                "segment size {} is out of range 1 KiB..1 GiB",
                config.segment_bytes
            )));
        }
        std::fs::create_dir_all(root).ctx("create log directory", root)?;
        let lock_path = root.join("LOCK");
        let lock = File::create(&lock_path).ctx("create lock file", &lock_path)?;
        if lock.try_lock().is_err() {
            return Err(Error::Unavailable(format!(
                "log directory {} is in use by another Tidemark process (it holds {}); stop it \
                 or use a different --data-dir",
                root.display(),
                lock_path.display()
            )));
        }
        // Before the segments are scanned: it puts back what a crash lost of their writes.
        let wal = wal::Wal::open(root)?;
        let topics = Arc::new(RwLock::new(load_topics(root, &config, true)?));
        let failed: Failed = Arc::default();
        let before_sync = Arc::default();
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            config: config.clone(),
            topics: topics.clone(),
            failed: failed.clone(),
            root: root.to_path_buf(),
            before_sync: Arc::clone(&before_sync),
            wal: std::cell::RefCell::new(matches!(config.fsync, FsyncPolicy::Always).then(|| {
                writer::Ahead {
                    file: wal,
                    unsynced: Vec::new(),
                }
            })),
        };
        let thread = std::thread::Builder::new()
            .name("tidemark-log-writer".into())
            .spawn(move || writer.run(rx))
            .ctx("start log writer thread", root)?;
        Ok(EmbeddedLog {
            offsets: Some(Arc::new(OffsetStore::open(root.join(CONSUMERS_DIR))?)),
            root: root.to_path_buf(),
            config,
            topics,
            writer: Some(Mutex::new(tx)),
            writer_thread: Mutex::new(Some(thread)),
            failed,
            before_sync,
            _lock: Some(lock),
        })
    }

    /// Whether each group of appends is fsynced before it is acknowledged (the `always`
    /// policy): only then may content share the group commit through `run_before_sync`.
    pub fn fsyncs_every_group(&self) -> bool {
        matches!(self.config.fsync, FsyncPolicy::Always)
    }

    /// Run `hook` before each group of appends is written, under the `always` policy (the
    /// content store's, see [`crate::blobs::BlobStore::sync_with_log`]).
    pub fn run_before_sync(&self, hook: crate::log::BeforeSync) {
        *self.before_sync.write().unwrap() = Some(hook);
    }

    /// Why appends are refused now (a full disk, an I/O error), until the log recovers.
    pub fn write_failure(&self) -> Option<writer::Failure> {
        self.failed.lock().unwrap().clone()
    }

    /// Compact the compacted topics now (the writer also does it every
    /// `compaction_check`). Blocking: it reads and may rewrite sealed segments.
    pub fn compact_now(&self) -> Result<Compacted> {
        if self.writer.is_none() {
            return Err(Error::BadInput(
                "the log is open read-only; compaction is done by the server".into(),
            ));
        }
        let topics: Vec<Arc<Topic>> = self.topics.read().unwrap().values().cloned().collect();
        Ok(compaction::compact_topics(&topics, &self.config))
    }

    /// Open a log directory for reading only, alongside a server that may be writing it:
    /// nothing is repaired or locked, and a partial record at the end is treated as the end.
    pub fn open_read_only(root: &Path) -> Result<EmbeddedLog> {
        if !root.is_dir() {
            return Err(Error::NotFound(format!(
                "no log at {}: is --data-dir right? (`tidemark serve` creates it)",
                root.display()
            )));
        }
        let config = LogConfig::default();
        let topics = load_topics(root, &config, false)?;
        Ok(EmbeddedLog {
            root: root.to_path_buf(),
            config,
            topics: Arc::new(RwLock::new(topics)),
            writer: None,
            writer_thread: Mutex::new(None),
            failed: Arc::default(),
            before_sync: Arc::default(),
            offsets: None,
            _lock: None,
        })
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.topics
            .read()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "topic '{name}' does not exist in {}",
                    self.root.display()
                ))
            })
    }

    fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        let t = self.topic(topic)?;
        t.partitions
            .get(partition as usize)
            .cloned()
            .ok_or_else(|| {
                Error::BadInput(format!(
                    "topic '{topic}' has {} partitions; there is no partition {partition}",
                    t.partitions.len()
                ))
            })
    }

    /// Names of all topics, sorted.
    pub fn topic_names(&self) -> Vec<String> {
        let mut names: Vec<_> = self.topics.read().unwrap().keys().cloned().collect();
        names.sort();
        names
    }

    pub fn stats(&self, topic: &str) -> Result<Vec<PartitionStats>> {
        Ok(self
            .topic(topic)?
            .partitions
            .iter()
            .map(|p| {
                let range = p.range();
                PartitionStats {
                    partition: p.id,
                    start: range.start,
                    end: range.end,
                    bytes: p.size_bytes(),
                    segments: p.segment_count(),
                }
            })
            .collect())
    }

    /// Read-only mode: pick up what the writing process appended (new records, segments and
    /// topics). Returns whether anything changed.
    pub fn refresh(&self) -> Result<bool> {
        let mut changed = false;
        for name in list_topic_dirs(&self.root)? {
            if !self.topics.read().unwrap().contains_key(&name) {
                let topic = open_topic(&self.root, &name, &self.config, false)?;
                self.topics.write().unwrap().insert(name, Arc::new(topic));
                changed = true;
            }
        }
        let topics: Vec<_> = self.topics.read().unwrap().values().cloned().collect();
        for t in topics {
            for p in &t.partitions {
                changed |= p.refresh(&self.config)?;
            }
        }
        Ok(changed)
    }

    /// Stop the writer thread after it has written (and, with `interval`, fsynced) everything
    /// queued so far.
    pub fn close(&self) {
        if let Some(tx) = &self.writer {
            let _ = tx.lock().unwrap().send(Command::Shutdown);
        }
        if let Some(handle) = self.writer_thread.lock().unwrap().take() {
            let _ = handle.join();
        }
    }

    /// Change how long `topic` keeps its records (`None`: for ever); applied by the writer's
    /// next retention pass, and kept in the topic's metadata.
    pub fn set_retention(
        &self,
        topic: &str,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
    ) -> Result<()> {
        if self.writer.is_none() {
            return Err(Error::BadInput(
                "the log is open read-only; retention is set by the server".into(),
            ));
        }
        let mut topics = self.topics.write().unwrap();
        let old = topics
            .get(topic)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("topic '{topic}' does not exist")))?;
        if (old.spec.retention_ms, old.spec.retention_bytes) == (retention_ms, retention_bytes) {
            return Ok(());
        }
        let spec = TopicSpec {
            retention_ms,
            retention_bytes,
            ..old.spec.clone()
        };
        let dir = self.root.join(topic);
        let text = serde_json::to_vec_pretty(&spec).expect("topic spec serializes");
        write_atomically(&dir, TOPIC_FILE, &text)?;
        topics.insert(
            topic.to_string(),
            Arc::new(Topic {
                name: old.name.clone(),
                spec,
                partitions: old.partitions.clone(),
            }),
        );
        Ok(())
    }

    fn create_topic(&self, name: &str, spec: &TopicSpec) -> Result<Arc<Topic>> {
        validate_name("topic", name)?;
        if spec.partitions == 0 || spec.partitions > 1024 {
            return Err(Error::BadInput(format!(
                "topic '{name}': partitions must be 1..=1024, got {}",
                spec.partitions
            )));
        }
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).ctx("create topic directory", &dir)?;
        let text = serde_json::to_vec_pretty(spec).expect("topic spec serializes");
        write_atomically(&dir, TOPIC_FILE, &text)?;
        partition::sync_dir(&self.root)?;
        let topic = open_topic(&self.root, name, &self.config, true)?;
        Ok(Arc::new(topic))
    }
}

impl Drop for EmbeddedLog {
    fn drop(&mut self) {
        self.close();
    }
}

fn list_topic_dirs(root: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root).ctx("list log directory", root)? {
        let entry = entry.ctx("list log directory", root)?;
        if entry.path().join(TOPIC_FILE).is_file()
            && let Some(name) = entry.file_name().to_str()
        {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

fn load_topics(
    root: &Path,
    config: &LogConfig,
    repair: bool,
) -> Result<HashMap<String, Arc<Topic>>> {
    let mut topics = HashMap::new();
    for name in list_topic_dirs(root)? {
        let topic = open_topic(root, &name, config, repair)?;
        topics.insert(name, Arc::new(topic));
    }
    Ok(topics)
}

fn open_topic(root: &Path, name: &str, config: &LogConfig, repair: bool) -> Result<Topic> {
    let dir = root.join(name);
    let path = dir.join(TOPIC_FILE);
    let text = std::fs::read(&path).ctx("read topic metadata", &path)?;
    let spec: TopicSpec = serde_json::from_slice(&text).map_err(|e| {
        Error::Corrupt(format!(
            "{} is not valid topic metadata: {e}",
            path.display()
        ))
    })?;
    let partitions = (0..spec.partitions)
        .map(|p| Partition::open(dir.join(p.to_string()), p, config, repair).map(Arc::new))
        .collect::<Result<Vec<_>>>()?;
    Ok(Topic {
        name: name.to_string(),
        spec,
        partitions,
    })
}

impl Log for EmbeddedLog {
    fn ensure_topic<'a>(
        &'a self,
        topic: &'a str,
        spec: &'a TopicSpec,
    ) -> BoxFuture<'a, Result<u32>> {
        async move {
            if let Ok(t) = self.topic(topic) {
                return Ok(t.partitions.len() as u32);
            }
            if self.writer.is_none() {
                return Err(Error::BadInput(format!(
                    "topic '{topic}' does not exist (log opened read-only)"
                )));
            }
            let mut topics = self.topics.write().unwrap();
            if let Some(t) = topics.get(topic) {
                return Ok(t.partitions.len() as u32);
            }
            let t = self.create_topic(topic, spec)?;
            topics.insert(topic.to_string(), t);
            Ok(spec.partitions)
        }
        .boxed()
    }

    fn partitions(&self, topic: &str) -> Result<u32> {
        Ok(self.topic(topic)?.partitions.len() as u32)
    }

    fn append(&self, topic: &str, records: Vec<NewRecord>) -> AppendFuture {
        let queued = (|| {
            let Some(tx) = &self.writer else {
                return Err(Error::BadInput("the log is open read-only".into()));
            };
            // A failed log still takes the request: the writer tries to recover first.
            let t = self.topic(topic)?;
            let n = t.partitions.len() as u32;
            let records = records
                .into_iter()
                .map(|r| {
                    let p = r.partition.unwrap_or_else(|| partition_for(&r.key, n));
                    if p >= n {
                        return Err(Error::BadInput(format!(
                            "topic '{topic}' has {n} partitions; there is no partition {p}"
                        )));
                    }
                    Ok((p, r))
                })
                .collect::<Result<Vec<_>>>()?;
            let (done, rx) = oneshot::channel();
            tx.lock()
                .unwrap()
                .send(Command::Append(Job {
                    topic: t,
                    records,
                    done,
                }))
                .map_err(|_| Error::Unavailable("the log writer has stopped".into()))?;
            Ok(rx)
        })();
        async move {
            queued?.await.map_err(|_| {
                Error::Unavailable("the log writer stopped before the append was durable".into())
            })?
        }
        .boxed()
    }

    fn read<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<Record>>> {
        async move {
            self.partition(topic, partition)?
                .read(from, max, wait)
                .await
        }
        .boxed()
    }

    fn offsets<'a>(&'a self, topic: &'a str, partition: u32) -> BoxFuture<'a, Result<OffsetRange>> {
        async move { Ok(self.partition(topic, partition)?.range()) }.boxed()
    }

    fn offset_for_time<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        ts_us: i64,
    ) -> BoxFuture<'a, Result<u64>> {
        async move { self.partition(topic, partition)?.offset_for_time(ts_us) }.boxed()
    }

    fn commit<'a>(
        &'a self,
        consumer: &'a str,
        topic: &'a str,
        partition: u32,
        next_offset: u64,
    ) -> BoxFuture<'a, Result<()>> {
        async move {
            validate_name("consumer", consumer)?;
            self.partition(topic, partition)?;
            let store = self
                .offsets
                .clone()
                .ok_or_else(|| Error::BadInput("the log is open read-only".into()))?;
            // Two fsyncs: off the async threads, which deliveries and requests share.
            let (consumer, topic) = (consumer.to_string(), topic.to_string());
            crate::blocking::blocking(move || {
                store.commit(&consumer, &topic, partition, next_offset)
            })
            .await
        }
        .boxed()
    }

    /// One process owns the embedded log, so a member owns every partition for good.
    fn join_group<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<crate::log::Membership>> {
        async move {
            validate_name("group", group)?;
            let n = self.topic(topic)?.partitions.len() as u32;
            Ok(crate::log::Membership::fixed((0..n).collect()))
        }
        .boxed()
    }

    fn committed<'a>(
        &'a self,
        consumer: &'a str,
        topic: &'a str,
        partition: u32,
    ) -> BoxFuture<'a, Result<Option<u64>>> {
        async move {
            validate_name("consumer", consumer)?;
            Ok(self
                .offsets
                .as_ref()
                .and_then(|s| s.get(consumer, topic, partition)))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests;
