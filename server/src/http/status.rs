//! Health (`/healthz`: the process answers), readiness (`/readyz`: it should get traffic)
//! and log status.

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
            "heads": heads_json(&app.node.ingestor),
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

/// Ingest's per-key heads in memory: pending (the index has not applied them), cached.
fn heads_json(ingestor: &tidemark_core::ingest::Ingestor) -> Value {
    let (pending, cached, bytes) = ingestor.heads_held();
    json!({"pending": pending, "cached": cached, "bytes": bytes})
}

/// `GET /readyz`: whether this node should get traffic. 200 `{"ready":true,...}`, or 503
/// `{"ready":false,"reasons":[...]}` with one sentence per reason: the log does not answer,
/// ingest waits to resync after a failed append, the node writes no partition yet (Kafka),
/// or the index lags the log by more than `--ready-max-lag-events`.
pub async fn readyz(axum::extract::State(app): State) -> Response {
    let max_lag = app.limits.ready_max_lag_events;
    let mut reasons = Vec::new();
    let lag = match app.node.materializer.lag().await {
        Ok(lag) => Some(lag),
        Err(e) => {
            reasons.push(format!("log: not reachable ({e})"));
            None
        }
    };
    if let Some(failure) = app
        .node
        .log
        .embedded
        .as_ref()
        .and_then(|l| l.write_failure())
    {
        reasons.push(format!("log: not writable: {}", failure.message));
    } else if app.node.ingestor.is_stale() {
        reasons.push("log: the last append failed; ingest resyncs before the next one".into());
    }
    if let Some(why) = app.node.index.failure() {
        reasons.push(format!("index: the last commit failed: {why}"));
    }
    if app.node.ingestor.owned().is_empty() {
        reasons.push("ingest: this node writes no partition yet (joining the ingest group)".into());
    }
    if let Some(lag) = lag.filter(|lag| *lag > max_lag) {
        reasons.push(format!(
            "index: {lag} events behind the log (more than --ready-max-lag-events {max_lag})"
        ));
    }
    let ready = reasons.is_empty();
    let mut body = json!({
        "ready": ready,
        "reasons": reasons,
        "index_lag": lag,
        "max_lag_events": max_lag,
    });
    // Not a reason to take the node out of traffic, but never to be missed.
    if app.auth.insecure_no_auth {
        body["warnings"] =
            json!(["--insecure-no-auth: the API is reachable beyond loopback with no token"]);
    }
    let body = Json(body);
    if ready {
        body.into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
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
