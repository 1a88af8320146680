//! Long-running jobs (re-deliveries, restores): each has an id, a state, progress
//! (`done` of `total`), kind-specific counters and result, and can be cancelled. Jobs live on
//! the node that runs them; finished ones are kept (the newest [`KEEP_FINISHED`]) so their
//! outcome can be read after the fact. A failed job keeps its typed error: its kind says
//! whether running it again may help.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tidemark_core::ErrorKind;
use tidemark_core::time::{format_us, now_us};
use tokio::sync::watch;

use crate::Error;

/// Finished jobs kept for `GET`, per node.
pub const KEEP_FINISHED: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }
}

pub struct Job {
    /// `<kind>-<uuid v7>`: sorts by creation time.
    pub id: String,
    pub kind: &'static str,
    /// The request, as accepted.
    pub spec: Value,
    pub created_at: i64,
    pub total: AtomicU64,
    pub done: AtomicU64,
    inner: Mutex<Inner>,
    cancel: watch::Sender<bool>,
}

struct Inner {
    state: State,
    finished_at: Option<i64>,
    /// Kind-specific counters while running, and the result once finished.
    detail: Value,
    error: Option<Error>,
}

impl Job {
    fn new(kind: &'static str, spec: Value) -> Job {
        Job {
            id: format!("{kind}-{}", uuid::Uuid::now_v7().simple()),
            kind,
            spec,
            created_at: now_us(),
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                state: State::Running,
                finished_at: None,
                detail: json!({}),
                error: None,
            }),
            cancel: watch::Sender::new(false),
        }
    }

    pub fn state(&self) -> State {
        self.inner.lock().unwrap().state
    }

    /// Why a failed job failed, as a kind a caller can act on (retry or not).
    pub fn failure_kind(&self) -> Option<ErrorKind> {
        self.inner.lock().unwrap().error.as_ref().map(Error::kind)
    }

    /// Ask the job to stop; it stops at its next step and reports how far it got.
    pub fn cancel(&self) {
        self.cancel.send_replace(true);
    }

    pub fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Turns true when the job is cancelled.
    pub fn cancelled(&self) -> watch::Receiver<bool> {
        self.cancel.subscribe()
    }

    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    pub fn add_done(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// Replace the kind-specific counters shown while running.
    pub fn set_detail(&self, detail: Value) {
        self.inner.lock().unwrap().detail = detail;
    }

    fn finish(&self, outcome: Result<Value, Error>) {
        let mut inner = self.inner.lock().unwrap();
        inner.finished_at = Some(now_us());
        match outcome {
            Ok(result) => {
                inner.state = if self.is_cancelled() {
                    State::Cancelled
                } else {
                    State::Succeeded
                };
                inner.detail = result;
            }
            Err(e) => {
                inner.state = State::Failed;
                inner.error = Some(e);
            }
        }
    }

    /// `GET /v1/replays/ID` (and restores): what the job is, where it is, what it did.
    pub fn to_json(&self) -> Value {
        let inner = self.inner.lock().unwrap();
        let (done, total) = (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        );
        json!({
            "id": self.id,
            "kind": self.kind,
            "state": inner.state.as_str(),
            "spec": self.spec,
            "created_at": format_us(self.created_at),
            "finished_at": inner.finished_at.map(format_us),
            "progress": {"done": done, "total": total},
            "result": inner.detail,
            "error": inner.error.as_ref().map(Error::to_string),
        })
    }
}

/// The jobs of this node.
#[derive(Default)]
pub struct Jobs {
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
}

impl Jobs {
    /// Register a job and run `work` for it in its own task. `work` returns the job's result
    /// (also when it stopped early because it was cancelled) or its error.
    pub fn start<F, Fut, E>(&self, kind: &'static str, spec: Value, work: F) -> Arc<Job>
    where
        F: FnOnce(Arc<Job>) -> Fut,
        Fut: Future<Output = Result<Value, E>> + Send + 'static,
        E: Into<Error>,
    {
        let job = Jobs::prepare(kind, spec);
        let fut = work(job.clone());
        self.run(job, fut)
    }

    /// A job not yet registered or running: its id is known before its work is set up.
    pub fn prepare(kind: &'static str, spec: Value) -> Arc<Job> {
        Arc::new(Job::new(kind, spec))
    }

    /// Register `job` and run `fut` for it in its own task.
    pub fn run<Fut, E>(&self, job: Arc<Job>, fut: Fut) -> Arc<Job>
    where
        Fut: Future<Output = Result<Value, E>> + Send + 'static,
        E: Into<Error>,
    {
        {
            let mut jobs = self.jobs.lock().unwrap();
            jobs.insert(job.id.clone(), job.clone());
            let finished: Vec<String> = jobs
                .iter()
                .filter(|(_, j)| j.state() != State::Running)
                .map(|(id, _)| id.clone())
                .collect();
            for id in finished
                .iter()
                .take(finished.len().saturating_sub(KEEP_FINISHED))
            {
                jobs.remove(id);
            }
        }
        let me = job.clone();
        tokio::spawn(async move {
            let outcome = fut.await.map_err(Into::into);
            if let Err(e) = &outcome {
                tracing::error!(job = me.id, "job failed: {e}");
            }
            me.finish(outcome);
        });
        job
    }

    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs.lock().unwrap().get(id).cloned()
    }

    /// Every job of `kind`, oldest first.
    pub fn list(&self, kind: &str) -> Vec<Arc<Job>> {
        self.jobs
            .lock()
            .unwrap()
            .values()
            .filter(|j| j.kind == kind)
            .cloned()
            .collect()
    }

    /// Cancel every running job (shutdown).
    pub fn cancel_all(&self) {
        for job in self.jobs.lock().unwrap().values() {
            job.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_reports_and_cancels() {
        let jobs = Jobs::default();
        let job = jobs.start("replay", json!({"x": 1}), |job| async move {
            job.set_total(10);
            let mut cancelled = job.cancelled();
            for _ in 0..10 {
                if job.is_cancelled() {
                    break;
                }
                job.add_done(1);
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
                    _ = cancelled.changed() => {}
                }
            }
            Ok::<_, Error>(json!({"sent": job.done.load(Ordering::Relaxed)}))
        });
        assert!(job.id.starts_with("replay-"));
        assert_eq!(job.to_json()["state"], "running");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        jobs.get(&job.id).unwrap().cancel();
        for _ in 0..100 {
            if job.state() != State::Running {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let j = job.to_json();
        assert_eq!(j["state"], "cancelled");
        assert!(j["result"]["sent"].as_u64().unwrap() < 10);
        assert_eq!(jobs.list("replay").len(), 1);
        assert!(jobs.list("restore").is_empty());
    }
}
