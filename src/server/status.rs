//! Health and log status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tidemark_core::{CONFIG_TOPIC, OBJECTS_TOPIC, SCHEMAS_TOPIC};

use super::State;
use super::error::ApiError;

/// 200 while the log answers (`degraded` while ingest waits to resync after a failed append),
/// 503 with the reason while it does not.
pub async fn healthz(axum::extract::State(app): State) -> Response {
    let stale = app.node.ingestor.is_stale();
    match app.node.materializer.lag().await {
        Ok(lag) => Json(json!({
            "status": if stale { "degraded" } else { "ok" },
            "log": "ok",
            "ingest": if stale { "resync pending after a failed append" } else { "ok" },
            "index_lag": lag,
            "keys": app.node.ingestor.key_count(),
            "writes_partitions": app.node.ingestor.owned(),
        }))
        .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "log": e.to_string()})),
        )
            .into_response(),
    }
}

/// `GET /v1/log`: Tidemark's topics with each partition's offsets (and, on the embedded log,
/// bytes and segment counts).
pub async fn log(axum::extract::State(app): State) -> Result<Json<Value>, ApiError> {
    let open = &app.node.log;
    let mut topics = serde_json::Map::new();
    for name in [OBJECTS_TOPIC, SCHEMAS_TOPIC, CONFIG_TOPIC] {
        let stats = match &open.embedded {
            Some(e) => serde_json::to_value(e.stats(name)?).expect("stats serialize"),
            None => {
                let mut parts = Vec::new();
                for p in 0..open.log.partitions(name)? {
                    let r = open.log.offsets(name, p).await?;
                    parts.push(json!({"partition": p, "start": r.start, "end": r.end}));
                }
                Value::Array(parts)
            }
        };
        topics.insert(name.to_string(), stats);
    }
    Ok(Json(json!({ "topics": topics })))
}
