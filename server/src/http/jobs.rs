//! What replay, restore and sync jobs share over HTTP: list, show, cancel (`/v1/replays/...`,
//! `/v1/restores/...`, `/v1/sync/...`), and resuming each kind when this node takes a job
//! over (`tidemark_replay::jobs`: the jobs are recorded in `_config`, so every node lists and
//! cancels every job).

use std::sync::{Arc, Weak};

use axum::Json;
use axum::http::StatusCode;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tidemark_replay::jobs::{Job, Resume};

use super::error::ApiError;
use super::{AppState, State};

/// `{"<kind>s": [...]}` (`{"syncs": ...}` for `sync`): every job of `kind`, whichever node runs
/// or ran it, oldest first.
pub fn list(state: &State, kind: &str) -> Json<Value> {
    Json(json!({ format!("{kind}s"): state.node.jobs.list(kind) }))
}

fn not_found(kind: &str, id: &str) -> ApiError {
    let path = match kind {
        "sync" => "sync".to_string(),
        other => format!("{other}s"),
    };
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no {kind} job '{id}'; GET /v1/{path} lists them"),
    )
}

/// The job `id` of `kind`, or a 404 that says where to look.
pub fn find(state: &State, kind: &str, id: &str) -> Result<Json<Value>, ApiError> {
    state
        .node
        .jobs
        .view(kind, id)
        .map(Json)
        .ok_or_else(|| not_found(kind, id))
}

/// Ask the job to stop, on whichever node runs it; 202 with where it is now.
pub async fn cancel(
    state: &State,
    kind: &str,
    id: &str,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    match state.node.jobs.cancel(kind, id).await? {
        Some(job) => Ok((StatusCode::ACCEPTED, Json(job))),
        None => Err(not_found(kind, id)),
    }
}

/// Resumes the jobs this node takes over, each with its kind's work.
struct Resumer(Weak<AppState>);

impl Resume for Resumer {
    fn resume(&self, job: Arc<Job>) -> BoxFuture<'static, tidemark_replay::Result<Value>> {
        let Some(state) = self.0.upgrade() else {
            return futures::future::ready(Err(tidemark_replay::Error::Internal(
                "the node is stopping".into(),
            )))
            .boxed();
        };
        match job.kind.as_str() {
            "restore" => super::restores::work(&state, job).boxed(),
            "replay" => tidemark_replay::redeliver::run(state.node.engine.clone(), job).boxed(),
            "sync" => super::sync::work(&state, job).boxed(),
            other => futures::future::ready(Err(tidemark_replay::Error::Internal(format!(
                "this node does not know jobs of kind '{other}'"
            ))))
            .boxed(),
        }
    }
}

/// Watch the jobs in `_config` for as long as the node runs: resume those whose node is gone,
/// pass cancel requests on to those this node runs.
pub fn supervise(state: &Arc<AppState>) {
    let resumer = Arc::new(Resumer(Arc::downgrade(state)));
    tokio::spawn(state.node.jobs.clone().supervise(resumer));
}
