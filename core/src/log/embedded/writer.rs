//! Group commit: one thread owns every append. It takes all append requests queued while the
//! previous group was being written, writes them, fsyncs each touched partition once, and only
//! then publishes the new records to readers and acknowledges the requests. Under load one
//! fsync covers many requests; idle, a single request pays one fsync.
//!
//! If a write or fsync fails, the log stops accepting appends (the file may hold records in an
//! unknown state); a restart recovers from what is on disk.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

use super::Topic;
use super::config::{FsyncPolicy, LogConfig};
use super::partition::Partition;
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

/// Set once an append failed; every later append gets this message.
pub(super) type Failed = Arc<Mutex<Option<String>>>;

pub(super) struct Writer {
    pub config: LogConfig,
    pub topics: Arc<std::sync::RwLock<std::collections::HashMap<String, Arc<Topic>>>>,
    pub failed: Failed,
}

impl Writer {
    pub fn run(self, rx: Receiver<Command>) {
        let tick = match self.config.fsync {
            FsyncPolicy::Always => self.config.retention_check,
            FsyncPolicy::Interval(d) => d.min(self.config.retention_check),
        };
        let mut last_retention = Instant::now();
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
        }
        self.sync_all(&mut unsynced);
    }

    fn commit_group(&self, jobs: Vec<Job>, unsynced: &mut Vec<Arc<Partition>>) {
        if let Some(msg) = self.failed.lock().unwrap().clone() {
            for job in jobs {
                let _ = job.done.send(Err(Error::Unavailable(msg.clone())));
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
                let msg = format!(
                    "the log stopped accepting writes after an I/O error ({e}); restart the server to recover"
                );
                tracing::error!("{msg}");
                *self.failed.lock().unwrap() = Some(msg);
                let text = e.to_string();
                for job in jobs {
                    let _ = job
                        .done
                        .send(Err(Error::Unavailable(format!("append failed: {text}"))));
                }
            }
        }
    }

    /// Stage, write, fsync (policy `always`) and publish one group.
    #[allow(clippy::type_complexity)]
    fn write_group(&self, jobs: &[Job]) -> Result<(Vec<Vec<Position>>, Vec<Arc<Partition>>)> {
        let now = now_us();
        let mut touched: Vec<Arc<Partition>> = Vec::new();
        let mut positions = Vec::with_capacity(jobs.len());
        for job in jobs {
            let mut out = Vec::with_capacity(job.records.len());
            for (p, rec) in &job.records {
                let part = &job.topic.partitions[*p as usize];
                let mut guard = part.writer.lock().unwrap();
                let w = guard.as_mut().expect("writable partition");
                let offset = part.stage(w, rec, &self.config, now)?;
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
        for part in &touched {
            let mut guard = part.writer.lock().unwrap();
            part.flush(guard.as_mut().expect("writable partition"), sync)?;
        }
        for part in &touched {
            let guard = part.writer.lock().unwrap();
            part.publish(guard.as_ref().expect("writable partition"));
        }
        Ok((positions, touched))
    }

    fn sync_all(&self, unsynced: &mut Vec<Arc<Partition>>) {
        for part in unsynced.drain(..) {
            let mut guard = part.writer.lock().unwrap();
            if let Some(w) = guard.as_mut()
                && let Err(e) = part.flush(w, true)
            {
                let msg = format!(
                    "the log stopped accepting writes after an fsync error ({e}); restart the server to recover"
                );
                tracing::error!("{msg}");
                *self.failed.lock().unwrap() = Some(msg);
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
