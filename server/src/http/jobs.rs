//! What replay and restore jobs share over HTTP: list, show, cancel (`/v1/replays/...`,
//! `/v1/restores/...`).

use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use serde_json::{Value, json};
use tidemark_replay::jobs::Job;

use super::State;
use super::error::ApiError;

/// `{"<kind>s": [...]}`: every job of `kind` on this node, oldest first.
pub fn list(state: &State, kind: &str) -> Json<Value> {
    let jobs: Vec<Value> = state
        .node
        .jobs
        .list(kind)
        .iter()
        .map(|j| j.to_json())
        .collect();
    Json(json!({ format!("{kind}s"): jobs }))
}

/// The job `id` of `kind`, or a 404 that says where to look.
pub fn find(state: &State, kind: &str, id: &str) -> Result<Arc<Job>, ApiError> {
    state
        .node
        .jobs
        .get(id)
        .filter(|j| j.kind == kind)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no {kind} '{id}' on this node; GET /v1/{kind}s lists them"),
            )
        })
}

/// Ask the job to stop; 202 with where it is now.
pub fn cancel(state: &State, kind: &str, id: &str) -> Result<(StatusCode, Json<Value>), ApiError> {
    let job = find(state, kind, id)?;
    job.cancel();
    Ok((StatusCode::ACCEPTED, Json(job.to_json())))
}
