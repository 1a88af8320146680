//! Group commit: one thread owns every append. It takes all append requests queued while the
//! previous group was being written, writes them, fsyncs each touched partition once, and only
//! then publishes the new records to readers and acknowledges the requests. Under load one
//! fsync covers many requests; idle, a single request pays one fsync.
//!
//! If a write or fsync fails (a full disk, an I/O error), the group is refused and the log
//! stops accepting appends: the files may hold part of it. The next append (at most once a
//! second) first recovers every partition from what is on disk (whole records the failed
//! write left are kept, a torn one is cut; see `Partition::recover_writer`), and appends
//! resume on their own once that works, e.g. when space is free again. A failure for lack of
//! space is [`Error::StorageFull`].

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

use super::Topic;
use super::compaction::compact_topics;
use super::config::{FsyncPolicy, LogConfig};
use super::partition::Partition;
use super::wal::{self, Wal};
use crate::log::{NewRecord, Position};
use crate::time::now_us;
use crate::{Error, Result};

/// Cap on the records in one group, so one fsync does not wait behind unbounded work.
const MAX_GROUP_RECORDS: usize = 200_000;

pub(super) struct Job {
    pub topic: Arc<Topic>,
    /// Records with their partitions already chosen.
    pub records: Vec<(u32, NewRecord)>,
    pub done: oneshot::Sender<Result<Vec<Position>>>,
}

pub(super) enum Command {
    Append(Job),
    Shutdown,
}

/// Why the log refuses appends until it has recovered.
#[derive(Debug, Clone)]
pub struct Failure {
    pub message: String,
    /// No space left on the disk (or over a quota): freeing some lets it recover.
    pub storage_full: bool,
}

impl Failure {
    fn error(&self) -> Error {
        match self.storage_full {
            true => Error::StorageFull(self.message.clone()),
            false => Error::Unavailable(self.message.clone()),
        }
    }
}

/// Set once an append failed, cleared once the log recovered.
pub(super) type Failed = Arc<Mutex<Option<Failure>>>;

/// Segments of compacted topics roll at this size at most, so what compaction can reclaim
/// (only sealed segments are compacted) is never far behind.
const COMPACTED_SEGMENT_BYTES: u64 = 16 << 20;

/// How often a failed log tries to recover (on an append).
const RECOVER_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) struct Writer {
    pub config: LogConfig,
    pub topics: Arc<std::sync::RwLock<std::collections::HashMap<String, Arc<Topic>>>>,
    pub failed: Failed,
    /// The log's directory, named in failures.
    pub root: std::path::PathBuf,
    /// Run before each group is written, under the `always` policy (see
    /// [`crate::log::BeforeSync`]).
    pub before_sync: Arc<std::sync::RwLock<Option<crate::log::BeforeSync>>>,
    /// The write-ahead file, under the `always` policy.
    pub wal: std::cell::RefCell<Option<Ahead>>,
}

/// The write-ahead file and the partitions written through it since its last checkpoint
/// (their segments are not fsynced yet).
pub(super) struct Ahead {
    pub file: Wal,
    pub unsynced: Vec<Arc<Partition>>,
}

impl Writer {
    pub fn run(self, rx: Receiver<Command>) {
        let housekeeping = self
            .config
            .retention_check
            .min(self.config.compaction_check);
        let tick = match self.config.fsync {
            FsyncPolicy::Always => housekeeping,
            FsyncPolicy::Interval(d) => d.min(housekeeping),
        };
        let mut last_retention = Instant::now();
        let mut last_compaction = Instant::now();
        // Compaction reads and rewrites sealed segments: on a thread of its own, so appends
        // never wait for it; one pass at a time.
        let compacting = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut last_recovery: Option<Instant> = None;
        let mut last_sync = Instant::now();
        let mut unsynced: Vec<Arc<Partition>> = Vec::new();
        let mut shutdown = false;
        while !shutdown {
            let mut jobs = Vec::new();
            match rx.recv_timeout(tick) {
                Ok(Command::Append(job)) => jobs.push(job),
                Ok(Command::Shutdown) | Err(RecvTimeoutError::Disconnected) => shutdown = true,
                Err(RecvTimeoutError::Timeout) => {}
            }
            let mut records: usize = jobs.iter().map(|j| j.records.len()).sum();
            while !shutdown && records < MAX_GROUP_RECORDS {
                match rx.try_recv() {
                    Ok(Command::Append(job)) => {
                        records += job.records.len();
                        jobs.push(job);
                    }
                    Ok(Command::Shutdown) => shutdown = true,
                    Err(_) => break,
                }
            }
            if !jobs.is_empty() {
                self.recover_if_failed(&mut last_recovery, &mut unsynced);
                self.commit_group(jobs, &mut unsynced);
            }
            if let FsyncPolicy::Interval(d) = self.config.fsync
                && (last_sync.elapsed() >= d || shutdown)
            {
                self.sync_all(&mut unsynced);
                last_sync = Instant::now();
            }
            if last_retention.elapsed() >= self.config.retention_check {
                self.apply_retention();
                last_retention = Instant::now();
            }
            if last_compaction.elapsed() >= self.config.compaction_check
                && !compacting.swap(true, std::sync::atomic::Ordering::AcqRel)
            {
                let topics: Vec<Arc<Topic>> =
                    self.topics.read().unwrap().values().cloned().collect();
                let (config, done) = (self.config.clone(), compacting.clone());
                let spawned = std::thread::Builder::new()
                    .name("tidemark-log-compaction".into())
                    .spawn(move || {
                        compact_topics(&topics, &config);
                        done.store(false, std::sync::atomic::Ordering::Release);
                    });
                if let Err(e) = spawned {
                    tracing::warn!("cannot start log compaction: {e}; retrying next period");
                    compacting.store(false, std::sync::atomic::Ordering::Release);
                }
                last_compaction = Instant::now();
            }
        }
        self.sync_all(&mut unsynced);
        if let Err(e) = self.checkpoint() {
            tracing::warn!(
                "checkpointing the log's write-ahead file at shutdown: {e}; the next start \
                 replays it"
            );
        }
    }

    /// Fsync the segments written through the write-ahead file since its last checkpoint,
    /// then start its next epoch.
    fn checkpoint(&self) -> Result<()> {
        let mut ahead = self.wal.borrow_mut();
        let Some(ahead) = ahead.as_mut() else {
            return Ok(());
        };
        if !ahead.file.holds_entries() {
            return Ok(());
        }
        for part in &ahead.unsynced {
            let mut guard = part.writer.lock().unwrap();
            // A partition whose recovery has not finished may hold unsynced frames the file
            // still covers: keep them covered.
            let w = guard.as_mut().ok_or_else(|| {
                Error::Unavailable(format!("partition {} is being recovered", part.id))
            })?;
            part.flush(w, true)?;
        }
        ahead.unsynced.clear();
        ahead.file.checkpoint()
    }

    /// If appends are refused, try (at most every [`RECOVER_EVERY`]) to recover every
    /// partition from disk; on success they are accepted again.
    fn recover_if_failed(&self, last: &mut Option<Instant>, unsynced: &mut Vec<Arc<Partition>>) {
        if self.failed.lock().unwrap().is_none()
            || last.is_some_and(|t| t.elapsed() < RECOVER_EVERY)
        {
            return;
        }
        *last = Some(Instant::now());
        let topics: Vec<Arc<Topic>> = self.topics.read().unwrap().values().cloned().collect();
        for topic in &topics {
            for part in &topic.partitions {
                if let Err(e) = part.recover_writer(&self.config) {
                    tracing::debug!("the log is not writable yet: {e}");
                    return;
                }
            }
        }
        // Every segment is fsynced as recovered: the write-ahead file's entries (some for
        // what the failed group staged, at positions appends now reuse) must go.
        if let Some(ahead) = self.wal.borrow_mut().as_mut() {
            if let Err(e) = ahead.file.checkpoint() {
                tracing::debug!("the log is not writable yet: {e}");
                return;
            }
            ahead.unsynced.clear();
        }
        unsynced.clear();
        *self.failed.lock().unwrap() = None;
        tracing::info!("the log accepts writes again");
    }

    /// The failure an I/O error means, naming the log's directory.
    fn failure(&self, doing: &str, e: &Error) -> Failure {
        let storage_full = is_storage_full(e);
        let message = if storage_full {
            format!(
                "no space left on the disk of the log ({}): {e}; free space there and writes \
                 resume on their own",
                self.root.display()
            )
        } else {
            format!(
                "the log stopped accepting writes after an I/O error {doing} ({e}); it retries \
                 on the next write, and a restart recovers from what is on disk"
            )
        };
        Failure {
            message,
            storage_full,
        }
    }

    fn commit_group(&self, jobs: Vec<Job>, unsynced: &mut Vec<Arc<Partition>>) {
        if let Some(failure) = self.failed.lock().unwrap().clone() {
            for job in jobs {
                let _ = job.done.send(Err(failure.error()));
            }
            return;
        }
        match self.write_group(&jobs) {
            Ok((positions, touched)) => {
                if matches!(self.config.fsync, FsyncPolicy::Interval(_)) {
                    for p in touched {
                        if !unsynced.iter().any(|u| Arc::ptr_eq(u, &p)) {
                            unsynced.push(p);
                        }
                    }
                }
                for (job, pos) in jobs.into_iter().zip(positions) {
                    let _ = job.done.send(Ok(pos));
                }
            }
            Err(e) => {
                let failure = self.failure("appending", &e);
                tracing::error!("{}", failure.message);
                *self.failed.lock().unwrap() = Some(failure.clone());
                for job in jobs {
                    let _ = job.done.send(Err(failure.error()));
                }
            }
        }
    }

    /// Stage, write, fsync (policy `always`) and publish one group.
    #[allow(clippy::type_complexity)]
    fn write_group(&self, jobs: &[Job]) -> Result<(Vec<Vec<Position>>, Vec<Arc<Partition>>)> {
        if matches!(self.config.fsync, FsyncPolicy::Always) {
            // Before any of the group's records reaches a file (staging may roll a segment,
            // which writes and fsyncs), so none is durable without the content it names.
            self.run_before_sync()?;
            if self.wal.borrow().as_ref().is_some_and(|a| a.file.full()) {
                self.checkpoint()?;
            }
        }
        let now = now_us();
        let mut touched: Vec<Arc<Partition>> = Vec::new();
        let mut positions = Vec::with_capacity(jobs.len());
        for job in jobs {
            let mut out = Vec::with_capacity(job.records.len());
            for (p, rec) in &job.records {
                let part = &job.topic.partitions[*p as usize];
                let mut guard = part.writer.lock().unwrap();
                let w = guard.as_mut().expect("writable partition");
                let segment_bytes = if job.topic.spec.compacted {
                    self.config.segment_bytes.min(COMPACTED_SEGMENT_BYTES)
                } else {
                    self.config.segment_bytes
                };
                let offset = part.stage(w, rec, &self.config, segment_bytes, now)?;
                out.push(Position {
                    partition: *p,
                    offset,
                });
                if !touched.iter().any(|t| Arc::ptr_eq(t, part)) {
                    touched.push(part.clone());
                }
            }
            positions.push(out);
        }
        let sync = matches!(self.config.fsync, FsyncPolicy::Always);
        let ahead = sync && touched.len() > 1 && self.write_ahead(&touched)?;
        for part in &touched {
            let mut guard = part.writer.lock().unwrap();
            part.flush(guard.as_mut().expect("writable partition"), sync && !ahead)?;
        }
        for part in &touched {
            let guard = part.writer.lock().unwrap();
            part.publish(guard.as_ref().expect("writable partition"));
        }
        Ok((positions, touched))
    }

    /// Make a small group durable through the write-ahead file (one fdatasync for all its
    /// partitions); its segments are then written without an fsync each. Returns false for a
    /// group to write directly (a large one, or no write-ahead file).
    fn write_ahead(&self, touched: &[Arc<Partition>]) -> Result<bool> {
        let mut ahead = self.wal.borrow_mut();
        let Some(ahead) = ahead.as_mut() else {
            return Ok(false);
        };
        let guards: Vec<_> = touched.iter().map(|p| p.writer.lock().unwrap()).collect();
        let mut entries = Vec::with_capacity(guards.len());
        let mut bytes = 0;
        for guard in &guards {
            let (path, position, frames) =
                Partition::staged(guard.as_ref().expect("writable partition"));
            // Segments live under the log directory with ASCII names; anything else is
            // written directly.
            let Some(rel) = path.strip_prefix(&self.root).ok().and_then(|p| p.to_str()) else {
                return Ok(false);
            };
            bytes += frames.len();
            entries.push((rel, position, frames));
        }
        if bytes > wal::GROUP_BYTES {
            return Ok(false);
        }
        ahead.file.append(entries.into_iter())?;
        for part in touched {
            if !ahead.unsynced.iter().any(|u| Arc::ptr_eq(u, part)) {
                ahead.unsynced.push(part.clone());
            }
        }
        Ok(true)
    }

    fn run_before_sync(&self) -> Result<()> {
        let hook = self.before_sync.read().unwrap().clone();
        hook.map_or(Ok(()), |h| h())
    }

    fn sync_all(&self, unsynced: &mut Vec<Arc<Partition>>) {
        for part in unsynced.drain(..) {
            let mut guard = part.writer.lock().unwrap();
            if let Some(w) = guard.as_mut()
                && let Err(e) = part.flush(w, true)
            {
                let failure = self.failure("syncing", &e);
                tracing::error!("{}", failure.message);
                *self.failed.lock().unwrap() = Some(failure);
            }
        }
    }

    fn apply_retention(&self) {
        let topics: Vec<Arc<Topic>> = self.topics.read().unwrap().values().cloned().collect();
        let now = now_us();
        for topic in topics {
            for part in &topic.partitions {
                if let Err(e) = part.apply_retention(&topic.spec, now) {
                    tracing::warn!(topic = %topic.name, partition = part.id, "retention failed: {e}");
                }
            }
        }
    }
}

/// Whether `e` is the disk (or a quota) being full.
fn is_storage_full(e: &Error) -> bool {
    match e {
        Error::Io { source, .. } => matches!(
            source.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        ),
        Error::StorageFull(_) => true,
        _ => false,
    }
}
