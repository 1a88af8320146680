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
use tidemark_core::Error;
use tidemark_core::catalog::{Action, Entry};
use tidemark_core::event::EventType;
use tidemark_core::ingest::RequestContext;

use super::AppState;
use super::State;
use super::error::{ApiError, parse_json};
use super::mutations::request_context;

pub const KIND: &str = "bucket";

/// `bucket`'s spec, `None` when there is no such bucket.
pub fn spec(app: &AppState, bucket: &str) -> Option<Value> {
    let entry = app.node.catalog.get(KIND, bucket)?;
    Some(serde_json::from_str(&entry.spec).unwrap_or_else(|_| json!({})))
}

/// Whether reads of `bucket` append `ObjectAccessed:*` events (off unless turned on).
pub fn access_events(app: &AppState, bucket: &str) -> bool {
    spec(app, bucket).is_some_and(|s| s["access_events"].as_bool() == Some(true))
}

/// Change `bucket`'s spec with `edit`, which says whether it changed anything; a change is
/// saved on the catalog and announced as `BucketConfig:Changed`. Returns whether it changed.
pub async fn update_spec(
    app: &AppState,
    bucket: &str,
    ctx: &RequestContext,
    edit: impl FnOnce(&mut Value) -> bool,
) -> Result<bool, Error> {
    let entry = app
        .node
        .catalog
        .get(KIND, bucket)
        .ok_or_else(|| Error::NotFound(format!("bucket '{bucket}' does not exist")))?;
    // Keep whatever else the spec holds; only what `edit` touches changes.
    let mut spec: Value = serde_json::from_str(&entry.spec).map_err(|e| {
        Error::Corrupt(format!(
            "bucket '{bucket}' has a spec that is not JSON: {e}"
        ))
    })?;
    if !edit(&mut spec) {
        return Ok(false);
    }
    app.node
        .catalog
        .change(
            KIND,
            bucket,
            Action::Update,
            Some(spec.to_string()),
            ctx.requester.clone(),
        )
        .await?;
    app.node
        .ingestor
        .append_bucket_event(bucket, EventType::BucketConfigChanged, ctx)
        .await?;
    Ok(true)
}

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
        update_spec(&app, &bucket, &ctx, |spec| {
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
