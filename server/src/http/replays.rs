//! `/v1/replays`: re-delivery jobs (start, list, show, cancel), recorded in `_config`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde_json::Value;
use tidemark_replay::redeliver::{self, ReplayRequest};

use super::State;
use super::error::{ApiError, parse_json};

pub async fn create(
    state: State,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: ReplayRequest = parse_json(&body?)?;
    let node = &state.node;
    let job = redeliver::start(&node.engine, node.log.log.as_ref(), &node.jobs, req).await?;
    Ok((StatusCode::ACCEPTED, Json(job.to_json())))
}

pub async fn list(state: State) -> Json<Value> {
    super::jobs::list(&state, "replay")
}

pub async fn get(state: State, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    super::jobs::find(&state, "replay", &id)
}

pub async fn cancel(
    state: State,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    super::jobs::cancel(&state, "replay", &id).await
}
