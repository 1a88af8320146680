//! The Parquet lake sink: a subscription's events as Hive-partitioned Parquet files,
//! committed exactly once.
//!
//! # Layout
//! - `columns.rs`: the column mapping of an event (Arrow schema and builders).
//! - `template.rs`: the partition directory template (`bucket={bucket}/dt={yyyy-MM-dd}/...`).
//! - `encode.rs`: Parquet options (codec, row groups, pages) and encoding a batch.
//! - `writer.rs`: segments of the log and their files; the exactly-once argument is there.
//! - `files.rs`: committing a file atomically in a local directory.
//! - `s3.rs`: committing a file with one PUT on an S3-compatible service.
//! - `backfill.rs`: rewriting a range's missing files (a replay of a lake subscription).
//!
//! Each log partition of a lake subscription has one worker (`run`): it reads the
//! partition like any subscription (rules, filter, dead letters for what cannot be read),
//! feeds the segment writer, writes closed segments, and only then commits the position.

mod backfill;
pub mod columns;
pub mod encode;
mod files;
mod s3;
pub mod template;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidemark_core::OBJECTS_TOPIC;
use tokio::sync::{mpsc, watch};

use crate::delivery::RunCtxRef;
use crate::sink::{Delivery, SendError, Sink};
pub(crate) use backfill::backfill;
pub use encode::ParquetOptions;
use files::LocalLake;
use s3::S3Lake;
pub use s3::S3Spec;
use template::Template;
pub use writer::RollSpec;
use writer::{Closed, Writer};

/// The `parquet` sink of a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSpec {
    /// The lake's root: a directory, or `s3://bucket/prefix`.
    pub path: String,
    /// For `s3://` paths: the endpoint, region and credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Spec>,
    /// Partition directories under it.
    #[serde(default = "default_template")]
    pub partition: String,
    #[serde(default)]
    pub roll: RollSpec,
    #[serde(default)]
    pub parquet: ParquetOptions,
}

fn default_template() -> String {
    "bucket={bucket}/dt={yyyy-MM-dd}/hour={HH}".into()
}

/// Where a lake's files go.
enum Files {
    Local(LocalLake),
    S3(S3Lake),
}

impl Files {
    fn exists(&self, dir: &str, name: &str) -> Result<bool, String> {
        match self {
            Files::Local(l) => l.exists(dir, name),
            Files::S3(s) => s.exists(dir, name),
        }
    }

    fn put(&self, dir: &str, name: &str, bytes: &[u8]) -> Result<(), String> {
        match self {
            Files::Local(l) => l.put(dir, name, bytes),
            Files::S3(s) => s.put(dir, name, bytes),
        }
    }

    fn names(&self) -> Result<Vec<String>, String> {
        match self {
            Files::Local(l) => l.names(),
            Files::S3(s) => s.names(),
        }
    }

    /// Temporary files a crash left (S3 has none: an object is one PUT).
    fn remove_leftovers(&self, prefix: &str) -> Result<usize, String> {
        match self {
            Files::Local(l) => l.remove_leftovers(prefix),
            Files::S3(_) => Ok(0),
        }
    }
}

/// A lake subscription's settings, checked and opened.
pub struct Lake {
    pub template: Template,
    pub roll: RollSpec,
    pub options: ParquetOptions,
    files: Files,
    describe: String,
}

impl Lake {
    /// Check the settings that need no destination; errors name the field.
    pub fn check(spec: &ParquetSpec) -> Result<Template, (&'static str, String)> {
        let template = Template::parse(&spec.partition).map_err(|e| ("sink.partition", e))?;
        let r = &spec.roll;
        if r.max_rows == 0 || r.max_bytes == 0 || r.max_age_ms == 0 {
            return Err((
                "sink.roll",
                "max_rows, max_bytes and max_age_ms must be positive".into(),
            ));
        }
        match (spec.path.starts_with("s3://"), &spec.s3) {
            (false, Some(_)) => Err(("sink.s3", "only for s3:// paths".into())),
            _ => Ok(template),
        }
    }

    /// Check every setting and open the destination (a local directory is created and
    /// probed); `secret` is the S3 secret access key, resolved.
    pub fn open(
        spec: &ParquetSpec,
        secret: Option<String>,
    ) -> Result<Lake, (&'static str, String)> {
        let template = Self::check(spec)?;
        let files = if spec.path.starts_with("s3://") {
            Files::S3(
                S3Lake::open(&spec.path, &spec.s3.clone().unwrap_or_default(), secret)
                    .map_err(|e| ("sink.path", e))?,
            )
        } else {
            Files::Local(LocalLake::open(&spec.path).map_err(|e| ("sink.path", e))?)
        };
        let describe = match &files {
            Files::Local(l) => l.describe(),
            Files::S3(s) => s.describe(),
        };
        Ok(Lake {
            template,
            roll: spec.roll,
            options: spec.parquet.clone(),
            files,
            describe,
        })
    }
}

/// A lake is written by its partition workers, not through `send`; as a `Sink` it only
/// names its destination (status, circuit key).
impl Sink for Lake {
    fn endpoint(&self) -> &str {
        &self.describe
    }

    fn send<'a>(
        &'a self,
        _batch: &'a [Arc<Delivery>],
        _attempt: u32,
    ) -> futures::future::BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async {
            Err(SendError::retry(
                "a lake is written by its partition workers",
            ))
        })
    }
}

/// The end of a segment of `partition` starting at `start` whose files exist already (a
/// crash came between committing them and committing the position).
fn interrupted(lake: &Lake, partition: u32, start: u64) -> Result<Option<u64>, String> {
    Ok(lake
        .files
        .names()?
        .iter()
        .filter_map(|n| writer::parse_file_name(partition, n))
        .find(|(s, _)| *s == start)
        .map(|(_, end)| end))
}

/// Write `closed`, then commit its end. False when the write failed (the worker starts
/// over from the committed position, producing the same segment again) or `stop` came first.
async fn write_and_commit(
    ctx: &RunCtxRef,
    lake: &Arc<Lake>,
    partition: u32,
    closed: Closed,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let (rows, end) = (closed.rows() as u64, closed.end);
    let lake2 = lake.clone();
    // Encoding and fsync are blocking work.
    let result = tokio::task::spawn_blocking(move || writer::write(&lake2, partition, closed))
        .await
        .unwrap_or_else(|e| Err(format!("the writer thread failed: {e}")));
    match result {
        Ok(files) => ctx.stats.lake_written(files as u64, rows),
        Err(e) => {
            failed(ctx, partition, format!("writing the lake: {e}"));
            return false;
        }
    }
    loop {
        match ctx
            .log
            .commit(&ctx.consumer, OBJECTS_TOPIC, partition, end + 1)
            .await
        {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(
                    subscription = ctx.name,
                    partition,
                    "committing {}: {e}",
                    end + 1
                );
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return false,
                }
            }
        }
    }
}

/// A failure the worker will retry, in the log and in status.
fn failed(ctx: &RunCtxRef, partition: u32, message: String) {
    tracing::error!(subscription = ctx.name, partition, "{message}");
    ctx.stats.failed(crate::delivery::stats::LastError {
        at: tidemark_core::time::format_us(tidemark_core::time::now_us()),
        message,
        status: None,
        attempt: 0,
    });
}

/// Write `partition` of a lake subscription until `stop`. Events buffered in an open segment
/// when it stops are not lost: the position is still before them.
pub(crate) async fn run(
    ctx: RunCtxRef,
    lake: Arc<Lake>,
    partition: u32,
    mut stop: watch::Receiver<bool>,
) {
    let mut pause = Duration::from_millis(200);
    loop {
        if *stop.borrow() || run_once(&ctx, &lake, partition, &mut stop).await {
            return;
        }
        // A failed write: start over from the committed position after a pause.
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

/// One pass from the committed position; true when stopped, false after a failed write.
async fn run_once(
    ctx: &RunCtxRef,
    lake: &Arc<Lake>,
    partition: u32,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let from = loop {
        match crate::delivery::start_offset(ctx, partition).await {
            Ok(o) => break o,
            Err(e) => {
                tracing::warn!(
                    subscription = ctx.name,
                    partition,
                    "finding the start position: {e}"
                );
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return true,
                }
            }
        }
    };
    let prefix = format!("objects-p{partition}-");
    let setup = {
        let lake = lake.clone();
        tokio::task::spawn_blocking(move || -> Result<Option<u64>, String> {
            lake.files.remove_leftovers(&prefix)?;
            interrupted(&lake, partition, from)
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
    };
    let forced = match setup {
        Ok(f) => f,
        Err(e) => {
            failed(ctx, partition, format!("opening the lake: {e}"));
            return false;
        }
    };
    if let Some(end) = forced {
        tracing::info!(
            subscription = ctx.name,
            partition,
            "completing the interrupted segment {from}..={end}"
        );
    }
    let (tx, mut rx) = mpsc::channel(4);
    let reader = tokio::spawn(crate::delivery::read(
        ctx.clone(),
        partition,
        from,
        None,
        tx,
    ));
    let mut w = Writer::new(lake.clone(), from, forced);
    let live = ctx.stats.live_position(partition);
    let mut committed = from;
    let idle = Duration::from_millis(lake.roll.idle_ms);
    let mut last_event = tokio::time::Instant::now();
    let mut read_next = from;
    let stopped = loop {
        live.store(w.start(), std::sync::atomic::Ordering::Relaxed);
        let idle_due = (!w.is_empty() && !idle.is_zero()).then(|| last_event + idle);
        tokio::select! {
            chunk = rx.recv() => {
                let Some(mut chunk) = chunk else { break false };
                crate::delivery::dead_letter_failures(ctx, partition, &mut chunk).await;
                let mut ok = true;
                for d in &chunk.deliveries {
                    last_event = tokio::time::Instant::now();
                    if let Some(closed) = w.push(d.offset, &d.event, partition) {
                        ok = write_and_commit(ctx, lake, partition, closed, stop).await;
                        if !ok { break }
                    }
                }
                if !ok { break *stop.borrow() }
                read_next = chunk.next;
                let (closed, position) = w.advance(chunk.next);
                if let Some(closed) = closed
                    && !write_and_commit(ctx, lake, partition, closed, stop).await
                {
                    break *stop.borrow();
                }
                if let Some(p) = position
                    && p > committed
                    && ctx.log.commit(&ctx.consumer, OBJECTS_TOPIC, partition, p).await.is_ok()
                {
                    committed = p;
                }
            }
            _ = tokio::time::sleep_until(idle_due.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600))), if idle_due.is_some() => {
                if let Some(closed) = w.close_idle(read_next)
                    && !write_and_commit(ctx, lake, partition, closed, stop).await
                {
                    break *stop.borrow();
                }
            }
            _ = stop.changed() => break true,
        }
    };
    reader.abort();
    stopped
}
