//! Health and log status.

use axum::Json;
use serde_json::{Value, json};

use super::State;
use super::error::ApiError;

pub async fn healthz(axum::extract::State(app): State) -> Result<Json<Value>, ApiError> {
    let lag = app.node.materializer.lag().await?;
    Ok(Json(json!({
        "status": "ok",
        "index_lag": lag,
        "keys": app.node.ingestor.key_count(),
    })))
}

/// `GET /v1/log`: every topic with its partitions' offsets, sizes and segment counts.
pub async fn log(axum::extract::State(app): State) -> Result<Json<Value>, ApiError> {
    let log = &app.node.log;
    let mut topics = serde_json::Map::new();
    for name in log.topic_names() {
        topics.insert(
            name.clone(),
            serde_json::to_value(log.stats(&name)?).expect("stats serialize"),
        );
    }
    Ok(Json(json!({ "topics": topics })))
}
