//! `/v1/buckets`: the buckets the S3 endpoint created, and the settings S3 has no call for
//! (`access_events`: append `ObjectAccessed:Get` / `Head` for reads of the bucket).
//!
//! A bucket is a catalog entity of kind `bucket`; its settings are fields of the entity's
//! spec, next to `versioning`. Every change is a catalog event naming who made it, and a
//! `BucketConfig:Changed` event on the objects log for subscribers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tidemark_core::catalog::Entry;

use super::AppState;
use super::State;
use super::error::{ApiError, parse_json};
use super::mutations::request_context;

pub use crate::node::buckets::KIND;

fn bucket_json(e: &Entry) -> Value {
    let spec: Value = serde_json::from_str(&e.spec).unwrap_or_else(|_| json!({}));
    json!({
        "name": e.name,
        "created_at": tidemark_core::time::format_us(e.created_at),
        "versioning": spec["versioning"].as_str().unwrap_or("Unversioned"),
        "access_events": spec["access_events"].as_bool().unwrap_or(false),
    })
}

/// `GET /v1/buckets`
pub async fn list(axum::extract::State(app): State) -> Json<Value> {
    let buckets: Vec<Value> = app
        .node
        .catalog
        .list(KIND)
        .iter()
        .map(bucket_json)
        .collect();
    Json(json!({ "buckets": buckets }))
}

fn find(app: &AppState, bucket: &str) -> Result<Entry, ApiError> {
    app.node.catalog.get(KIND, bucket).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("bucket '{bucket}' does not exist; create it through the S3 endpoint"),
        )
    })
}

/// `GET /v1/buckets/{bucket}`
pub async fn get(
    axum::extract::State(app): State,
    Path(bucket): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(bucket_json(&find(&app, &bucket)?)))
}

/// `PATCH /v1/buckets/{bucket}`, as sent: only the settings S3 has no call for.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    access_events: Option<bool>,
}

/// `PATCH /v1/buckets/{bucket}`: change settings; answers the bucket as it is after.
pub async fn patch(
    axum::extract::State(app): State,
    Path(bucket): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    caller: super::auth::Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    find(&app, &bucket)?;
    let settings: Settings = parse_json(&body?)?;
    let mut ctx = request_context(&headers, peer);
    // With access control the token is who changed the bucket, whatever a header says.
    if let Some(grant) = &caller.grant {
        ctx.requester = Some(grant.id.clone());
    }
    if let Some(on) = settings.access_events {
        app.node
            .update_bucket_spec(&bucket, &ctx, |spec| {
                let changed = spec["access_events"].as_bool().unwrap_or(false) != on;
                spec["access_events"] = on.into();
                changed
            })
            .await?;
    }
    Ok(Json(bucket_json(&find(&app, &bucket)?)))
}

/// Route paths, for the router.
pub fn routes() -> axum::Router<Arc<AppState>> {
    use axum::routing::get as get_route;
    axum::Router::new()
        .route("/v1/buckets", get_route(list))
        .route("/v1/buckets/{bucket}", get_route(get).patch(patch))
}
