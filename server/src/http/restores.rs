//! `/v1/restores`: restore a bucket to an instant (plan as a dry run, or run as a durable job;
//! list, show, cancel).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde_json::Value;
use tidemark_replay::jobs::Job;
use tidemark_replay::restore::{self, RestoreRequest, Sources};

use super::error::{ApiError, parse_json};
use super::{AppState, State};
use crate::node::Node;

const KIND: &str = "restore";

fn sources(node: &Node) -> Sources {
    Sources {
        log: node.log.log.clone(),
        codec: node.codec(),
        index: node.index.clone(),
        materializer: node.materializer.clone(),
        blobs: node.blobs.clone(),
        snapshots: Some(node.snapshot_dir.clone()),
    }
}

/// A dry run answers the plan (200); otherwise the restore starts as a job (202). Everything
/// about the request is checked before either, so a bad one writes nothing.
pub async fn create(
    state: State,
    caller: super::auth::Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: RestoreRequest = parse_json(&body?)?;
    let restore = req.validate()?;
    caller.check_bucket(&restore.bucket)?;
    let node = &state.node;
    restore::check_within_log(node.log.log.as_ref(), restore.at).await?;
    let sources = sources(node);
    if restore.dry_run {
        let plan = restore::prepare(&sources, &restore).await?;
        let mut body = plan.to_json();
        let spec = restore.to_json();
        body["dry_run"] = true.into();
        for field in ["bucket", "prefix", "at"] {
            body[field] = spec[field].clone();
        }
        return Ok((StatusCode::OK, Json(body)));
    }
    let job = node.jobs.prepare(KIND, restore.to_json(), Value::Null);
    let job = node.jobs.start(job.clone(), work(&state, job)).await?;
    Ok((StatusCode::ACCEPTED, Json(job.to_json())))
}

/// The work of restore `job` on this node: all of it, or what is left after a takeover.
pub fn work(
    state: &AppState,
    job: Arc<Job>,
) -> impl Future<Output = tidemark_replay::Result<Value>> + Send + 'static {
    restore::run(
        sources(&state.node),
        state.node.ingestor.clone(),
        state.writer.clone(),
        job,
    )
}

pub async fn list(state: State) -> Json<Value> {
    super::jobs::list(&state, KIND)
}

pub async fn get(state: State, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    super::jobs::find(&state, KIND, &id)
}

pub async fn cancel(
    state: State,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    super::jobs::cancel(&state, KIND, &id).await
}
