//! A new sink kind needs only the stream-sink trait: a test double implementing nothing else
//! runs through the real engine (consumer group, partition workers, reader, feeds) on the
//! embedded log, and gets every event the rules match, in log order, with the subscription's
//! position committed; a restarted run goes on from there. A replay hands it the range
//! again (the trait's default backfill) without moving the position.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tidemark_core::catalog::Catalog;
use tidemark_core::codec::config::ConfigCodec;
use tidemark_core::codec::{EventCodec, SchemaSource};
use tidemark_core::event::{ObjectEvent, sample_event};
use tidemark_core::log::embedded::{EmbeddedLog, LogConfig};
use tidemark_core::log::{Log, NewRecord, TopicSpec};
use tidemark_core::registry::SchemaRegistry;
use tidemark_core::{CONFIG_TOPIC, OBJECTS_TOPIC};
use tokio::sync::{Notify, watch};

use super::replay::{Replay, ReplayMark};
use super::{DEAD_LETTERS_TOPIC, DeadLetters, Engine, runner};
use crate::function::Functions;
use crate::guard::DestinationPolicy;
use crate::sink::{Feed, SinkKind, StreamSink};
use crate::subscription::{Subscription, Subscriptions};

/// What a stream sink saw: per partition, the offsets and event ids, in the order written.
#[derive(Default)]
struct Recorder {
    written: Mutex<BTreeMap<u32, Vec<(u64, uuid::Uuid)>>>,
    /// Each batch's deliveries and whether its read had reached the log's end.
    batches: Mutex<Vec<(usize, bool)>>,
    changed: Notify,
}

impl StreamSink for Recorder {
    fn endpoint(&self) -> &str {
        "test://recorder"
    }

    /// Writes each batch at once and commits right after it.
    fn write<'a>(self: Arc<Self>, feed: &'a mut Feed) -> BoxFuture<'a, crate::Result<()>> {
        Box::pin(async move {
            while let Some(batch) = feed.next().await {
                self.batches
                    .lock()
                    .unwrap()
                    .push((batch.deliveries.len(), batch.caught_up));
                {
                    let mut written = self.written.lock().unwrap();
                    let partition = written.entry(feed.partition()).or_default();
                    partition.extend(
                        batch
                            .deliveries
                            .iter()
                            .map(|d| (d.offset, d.event().event_id)),
                    );
                }
                feed.commit(batch.next).await?;
                self.changed.notify_waiters();
            }
            Ok(())
        })
    }
}

impl Recorder {
    fn count(&self) -> usize {
        self.written.lock().unwrap().values().map(Vec::len).sum()
    }

    async fn wait_for(&self, n: usize) {
        let waited = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let changed = self.changed.notified();
                if self.count() >= n {
                    return;
                }
                changed.await;
            }
        });
        waited
            .await
            .unwrap_or_else(|_| panic!("{} of {n} events written", self.count()));
    }
}

/// One node's log, catalog and engine, without the engine following the catalog: the test
/// starts the subscription's run itself, with its own sink.
struct Node {
    _dir: tempfile::TempDir,
    log: Arc<dyn Log>,
    codec: Arc<EventCodec>,
    engine: Arc<Engine>,
}

async fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn Log> = Arc::new(EmbeddedLog::open(dir.path(), LogConfig::default()).unwrap());
    log.ensure_topic(OBJECTS_TOPIC, &TopicSpec::new(2))
        .await
        .unwrap();
    let compacted = TopicSpec {
        compacted: true,
        ..TopicSpec::new(1)
    };
    log.ensure_topic(CONFIG_TOPIC, &compacted).await.unwrap();
    log.ensure_topic(DEAD_LETTERS_TOPIC, &compacted)
        .await
        .unwrap();
    let registry = Arc::new(SchemaRegistry::open(log.clone()).await.unwrap());
    let object = tidemark_schemas::object_event_latest();
    let config = tidemark_schemas::config_event_latest();
    let object_id = registry
        .register(object.subject, object.text)
        .await
        .unwrap();
    let config_id = registry
        .register(config.subject, config.text)
        .await
        .unwrap();
    let source: Arc<dyn SchemaSource> = registry;
    let codec = Arc::new(EventCodec::new(object_id, source.clone()).unwrap());
    let config_codec = Arc::new(ConfigCodec::new(config_id, source).unwrap());
    let catalog = Catalog::open(log.clone(), config_codec.clone(), None)
        .await
        .unwrap();
    let letters = Catalog::open_topic(log.clone(), config_codec, None, DEAD_LETTERS_TOPIC)
        .await
        .unwrap();
    let limits = tidemark_plugins::Limits::default();
    let filters = Arc::new(tidemark_plugins::Filters::new(
        catalog.clone(),
        Arc::new(tidemark_core::blobs::ObjectStoreBlobs::in_memory()),
        tidemark_plugins::FilterEngine::new(limits, 1).unwrap(),
        None,
        limits,
    ));
    let policy = DestinationPolicy {
        loopback: true,
        private: false,
    };
    let subscriptions = Arc::new(Subscriptions::new(
        catalog,
        log.clone(),
        policy,
        filters,
        Arc::new(Functions::default()),
    ));
    let engine = Arc::new(Engine::new(
        subscriptions,
        Arc::new(DeadLetters::new(letters)),
        log.clone(),
        codec.clone(),
        "/tidemark/test".into(),
        crate::client::outbound(policy, None).unwrap(),
        None,
    ));
    Node {
        _dir: dir,
        log,
        codec,
        engine,
    }
}

impl Node {
    /// Append `event` (keyed by its object, as ingest does); returns its id.
    async fn append(&self, event: &ObjectEvent) -> uuid::Uuid {
        let mut value = Vec::new();
        self.codec.encode(event, &mut value);
        let record = NewRecord::new(event.log_key(), value);
        self.log.append(OBJECTS_TOPIC, vec![record]).await.unwrap();
        event.event_id
    }

    /// Run `sub` into `sink` on the real engine until the returned sender says stop.
    fn run(
        &self,
        sub: &Subscription,
        sink: Arc<Recorder>,
    ) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        self.start(self.engine.context_with(sub, SinkKind::Stream(sink), None))
    }

    /// Run `sub` into the sink its spec names, built as the engine builds it.
    fn run_built(&self, sub: &Subscription) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let ctx = self.engine.context(sub, None).unwrap();
        self.start(ctx)
    }

    fn start(
        &self,
        ctx: super::context::RunCtx,
    ) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(runner::run(self.engine.clone(), Arc::new(ctx), stopped));
        (stop, task)
    }

    /// Wait until the subscription's committed position is the log's end on every partition.
    async fn wait_committed(&self, consumer: &str) {
        let caught_up = async {
            loop {
                let mut behind = false;
                for p in 0..2 {
                    let end = self.log.offsets(OBJECTS_TOPIC, p).await.unwrap().end;
                    let at = self
                        .log
                        .committed(consumer, OBJECTS_TOPIC, p)
                        .await
                        .unwrap();
                    behind |= at != Some(end);
                }
                if !behind {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), caught_up)
            .await
            .expect("positions committed to the log's end");
    }
}

/// Event `i` of the test: under `keep/` (matching) or `skip/`, five keys each.
fn event(i: u64, keep: bool) -> ObjectEvent {
    let mut e = sample_event(i);
    e.event_id = uuid::Uuid::now_v7();
    e.key = format!("{}/k{}", if keep { "keep" } else { "skip" }, i % 5);
    e
}

#[tokio::test]
async fn a_stream_sink_kind_gets_every_matching_event_in_order_with_positions_committed() {
    let node = node().await;
    let spec = crate::subscription::parse(
        br#"{"name": "recorded", "start": "earliest", "rules": {"prefix": ["keep/"]},
             "sink": {"type": "webhook", "url": "http://127.0.0.1:9/never-called"}}"#,
    )
    .unwrap();
    let sub = node.engine.subscriptions.create(spec, None).await.unwrap();
    // History before the run starts, then live events while it runs.
    let mut matching = Vec::new();
    for i in 0..30 {
        let id = node.append(&event(i, i % 3 != 0)).await;
        if i % 3 != 0 {
            matching.push(id);
        }
    }
    let sink = Arc::new(Recorder::default());
    let (stop, task) = node.run(&sub, sink.clone());
    for i in 30..60 {
        let id = node.append(&event(i, i % 3 != 0)).await;
        if i % 3 != 0 {
            matching.push(id);
        }
    }
    sink.wait_for(matching.len()).await;
    node.wait_committed(&sub.consumer()).await;
    stop.send_replace(true);
    task.await.unwrap();

    // Every match once, each partition in offset order (so each key in its order).
    let written = sink.written.lock().unwrap().clone();
    let mut ids: Vec<uuid::Uuid> = Vec::new();
    for offsets in written.values() {
        assert!(offsets.windows(2).all(|w| w[0].0 < w[1].0), "{offsets:?}");
        ids.extend(offsets.iter().map(|(_, id)| *id));
    }
    ids.sort();
    matching.sort();
    assert_eq!(ids, matching);

    // A new run starts from the committed positions: only what came since is written.
    let again = Arc::new(Recorder::default());
    let (stop, task) = node.run(&sub, again.clone());
    let id = node.append(&event(60, true)).await;
    node.append(&event(61, false)).await;
    again.wait_for(1).await;
    node.wait_committed(&sub.consumer()).await;
    stop.send_replace(true);
    task.await.unwrap();
    let written: Vec<_> = again
        .written
        .lock()
        .unwrap()
        .values()
        .flatten()
        .copied()
        .collect();
    assert_eq!(written.iter().map(|(_, id)| *id).collect::<Vec<_>>(), [id]);
}

#[tokio::test]
async fn a_stream_sink_kind_is_replayed_through_its_default_backfill() {
    let node = node().await;
    let spec = crate::subscription::parse(
        br#"{"name": "replayed", "start": "earliest", "rules": {"prefix": ["keep/"]},
             "sink": {"type": "webhook", "url": "http://127.0.0.1:9/never-called"}}"#,
    )
    .unwrap();
    let sub = node.engine.subscriptions.create(spec, None).await.unwrap();
    let mut matching = Vec::new();
    for i in 0..20 {
        let id = node.append(&event(i, i % 2 == 0)).await;
        if i % 2 == 0 {
            matching.push(id);
        }
    }
    let mut ranges = BTreeMap::new();
    for p in 0..2 {
        let held = node.log.offsets(OBJECTS_TOPIC, p).await.unwrap();
        ranges.insert(p, held.start..held.end);
    }
    let sink = Arc::new(Recorder::default());
    let mark = Arc::new(ReplayMark {
        id: "replay-test".into(),
        pace: None,
    });
    let ctx = node
        .engine
        .context_with(&sub, SinkKind::Stream(sink.clone()), Some(mark));
    let replay = Replay::of(ctx, ranges);
    let (_stop, stopped) = watch::channel(false);
    replay.run(stopped).await.unwrap();

    let mut ids: Vec<uuid::Uuid> = sink
        .written
        .lock()
        .unwrap()
        .values()
        .flatten()
        .map(|(_, id)| *id)
        .collect();
    ids.sort();
    matching.sort();
    assert_eq!(ids, matching);
    let progress = replay.progress();
    assert_eq!((progress.done, progress.total), (20, 20));
    assert_eq!(
        progress.lake_files,
        Some(0),
        "a stream sink's replay counts files"
    );
    for p in 0..2 {
        let at = node
            .log
            .committed(&sub.consumer(), OBJECTS_TOPIC, p)
            .await
            .unwrap();
        assert_eq!(at, None, "a replay never moves the position");
    }
}

#[tokio::test]
async fn a_batch_says_whether_its_read_reached_the_end_of_the_log() {
    let node = node().await;
    let spec = crate::subscription::parse(
        br#"{"name": "ends", "start": "earliest",
             "sink": {"type": "webhook", "url": "http://127.0.0.1:9/never-called"}}"#,
    )
    .unwrap();
    let sub = node.engine.subscriptions.create(spec, None).await.unwrap();
    // One key, so one partition: a backlog of 1,300 is read as 512 + 512 + 276.
    for i in 0..1300 {
        node.append(&event(i * 5, true)).await;
    }
    let sink = Arc::new(Recorder::default());
    let (stop, task) = node.run(&sub, sink.clone());
    sink.wait_for(1300).await;
    // Then a live event: read alone, at the end of the log.
    node.append(&event(0, true)).await;
    sink.wait_for(1301).await;
    stop.send_replace(true);
    task.await.unwrap();
    let batches = sink.batches.lock().unwrap().clone();
    assert_eq!(
        batches,
        [(512, false), (512, false), (276, true), (1, true)],
        "each batch's size and whether its read reached the end"
    );
}

/// The `event_id` column of every Parquet file under `dir`, sorted, each id once (Iceberg
/// files a compaction replaced may still be there).
fn written_event_ids(dir: &std::path::Path) -> Vec<uuid::Uuid> {
    use arrow_array::{Array, StringArray};
    let mut ids = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                let file = std::fs::File::open(&path).unwrap();
                let reader =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                        .unwrap()
                        .build()
                        .unwrap();
                for batch in reader {
                    let batch = batch.unwrap();
                    let column = batch.column_by_name("event_id").unwrap();
                    let column = column.as_any().downcast_ref::<StringArray>().unwrap();
                    for i in 0..column.len() {
                        ids.push(column.value(i).parse().unwrap());
                    }
                }
            }
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

/// A dry run of a lake subscription reads records the reader handed over unread: a damaged
/// one is no match, and the run goes on.
#[tokio::test]
async fn a_dry_run_of_a_sink_that_reads_views_passes_over_a_damaged_record() {
    for rules in ["{}", r#"{"prefix": ["keep/"]}"#] {
        let node = node().await;
        let out = tempfile::tempdir().unwrap();
        let spec = format!(
            r#"{{"name": "dry", "start": "earliest", "rules": {rules},
                "sink": {{"type": "parquet", "path": "{}"}}}}"#,
            out.path().display()
        );
        let spec = crate::subscription::parse(spec.as_bytes()).unwrap();
        node.engine.subscriptions.create(spec, None).await.unwrap();
        for i in 0..10 {
            let e = event(i, true);
            if i == 4 {
                // Its leading fields read, the rest cut short.
                let mut value = Vec::new();
                node.codec.encode(&e, &mut value);
                value.truncate(value.len() - 3);
                let record = NewRecord::new(e.log_key(), value);
                node.log.append(OBJECTS_TOPIC, vec![record]).await.unwrap();
                continue;
            }
            node.append(&e).await;
        }
        let mut ranges = BTreeMap::new();
        for p in 0..2 {
            let held = node.log.offsets(OBJECTS_TOPIC, p).await.unwrap();
            ranges.insert(p, held.start..held.end);
        }
        let replay = node.engine.replay("dry", "dry-run", ranges, None).unwrap();
        let (_stop, stopped) = watch::channel(false);
        let dry = replay.dry_run(stopped, 20).await;
        assert_eq!(dry.matched, 9, "{rules}");
        assert_eq!(dry.first.len(), 9, "{rules}");
        assert_eq!(dry.by_type.values().sum::<u64>(), 9, "{rules}");
    }
}

/// The sinks that read views (the lake, the Iceberg journal) are handed records whose rules
/// the reader tested on their leading fields alone, so a record damaged further on reaches
/// the sink, which dead-letters it. With a rule on later fields the reader reads the whole
/// record and dead-letters it itself. Either way: dead-lettered once, every other match
/// written, the position past it.
#[tokio::test]
async fn a_damaged_record_is_dead_lettered_once_whichever_side_reads_it() {
    for (kind, rules) in [
        ("parquet", r#"{"prefix": ["keep/"]}"#),
        (
            "parquet",
            r#"{"prefix": ["keep/"], "metadata": {"team": "ml"}}"#,
        ),
        ("iceberg", r#"{"prefix": ["keep/"]}"#),
        // No rule: the reader reads nothing of a record.
        ("parquet", "{}"),
        ("iceberg", "{}"),
    ] {
        let every = rules == "{}";
        let case = format!("{kind} {rules}");
        let node = node().await;
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().to_str().unwrap();
        let sink = match kind {
            "parquet" => {
                format!(r#"{{"type": "parquet", "path": "{dir}", "roll": {{"idle_ms": 100}}}}"#)
            }
            _ => format!(
                r#"{{"type": "iceberg", "warehouse": "{dir}", "inventory": false,
                    "catalog": {{"type": "sql", "path": "{dir}/catalog.db"}},
                    "commit_interval_ms": 1000}}"#
            ),
        };
        let spec = format!(
            r#"{{"name": "damaged", "start": "earliest", "rules": {rules}, "sink": {sink}}}"#
        );
        let spec = crate::subscription::parse(spec.as_bytes()).unwrap();
        let sub = node.engine.subscriptions.create(spec, None).await.unwrap();
        let mut written = Vec::new();
        for i in 0..40 {
            let e = event(i, i % 4 != 0);
            if i == 21 || i == 22 {
                // Its leading fields read, the rest cut short; or cut within them.
                let mut value = Vec::new();
                node.codec.encode(&e, &mut value);
                match i {
                    21 => value.truncate(value.len() - 3),
                    _ => value.truncate(tidemark_core::codec::wire::HEADER_LEN + 20),
                }
                let record = NewRecord::new(e.log_key(), value);
                node.log.append(OBJECTS_TOPIC, vec![record]).await.unwrap();
                continue;
            }
            let id = node.append(&e).await;
            if every || i % 4 != 0 {
                written.push(id);
            }
        }
        let (stop, task) = node.run_built(&sub);
        node.wait_committed(&sub.consumer()).await;
        stop.send_replace(true);
        task.await.unwrap();

        written.sort();
        assert_eq!(
            written_event_ids(out.path()),
            written,
            "{case}: every readable match"
        );
        let letters = node.engine.dead_letters.list(sub.name());
        assert_eq!(letters.len(), 2, "{case}: {letters:?}");
        for letter in &letters {
            assert!(
                letter.error.starts_with("the record cannot be decoded: "),
                "{case}: {}",
                letter.error
            );
        }
    }
}
