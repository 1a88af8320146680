//! The HTTP API of `tidemark serve`.
//!
//! # Layout
//! - `mutations.rs`: `POST /v1/mutations`.
//! - `ingest_s3.rs`: `POST /v1/ingest/s3-events` (S3 / MinIO event notifications).
//! - `buckets.rs`: `/v1/buckets/...` (list, settings S3 has no call for: access events).
//! - `sync.rs`: `/v1/sync/...` (reconcile a directory into a bucket: job, cancel).
//! - `objects.rs`: `GET /v1/objects`, `GET /v1/objects/{bucket}/{key}`.
//! - `content.rs`: `PUT`/`GET /v1/content/{bucket}/{key}` (object bytes), blob GC.
//! - `restores.rs`: `/v1/restores/...` (restore a bucket to an instant: plan, job, cancel).
//! - `registry.rs`: the Confluent-compatible schema registry paths.
//! - `rules.rs`: `POST /v1/rules/test`.
//! - `status.rs`: `/healthz`, `GET /v1/log`.
//! - `subscriptions.rs`: `/v1/subscriptions/...` (status, dead letters, redrive, invocations).
//! - `filters.rs`: `/v1/filters/...` (upload, versions, delete, test).
//! - `replays.rs`: `/v1/replays/...` (re-delivery jobs).
//! - `metrics.rs`: `/metrics` (Prometheus text).
//! - `error.rs`: how errors become responses.

pub(crate) mod buckets;
pub(crate) mod content;
pub(crate) mod error;
mod filters;
mod forward;
mod ingest_s3;
mod jobs;
mod metrics;
pub(crate) mod mutations;
pub(crate) mod objects;
mod registry;
mod replays;
mod restores;
mod rules;
mod status;
mod subscriptions;
mod sync;

pub use forward::{HttpClient, client as http_client};
pub use objects::object_json;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::node::Node;

/// Request limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_batch: usize,
    /// Largest object body `PUT /v1/content` stores.
    pub max_object_bytes: u64,
}

pub struct AppState {
    pub node: Node,
    pub limits: Limits,
    /// HTTP client for mutations forwarded to the node that writes their partition.
    pub forwarder: forward::HttpClient,
}

pub type State = axum::extract::State<Arc<AppState>>;

pub fn router(state: Arc<AppState>) -> Router {
    // A module may be as large as the server's maximum module size.
    let max_module = state.node.filters.engine.maxima.module_bytes;
    Router::new()
        .route("/healthz", get(status::healthz))
        .route("/v1/log", get(status::log))
        .route("/v1/mutations", post(mutations::post))
        .route("/v1/ingest/s3-events", post(ingest_s3::post))
        .route("/v1/sync", post(sync::create).get(sync::list))
        .route("/v1/sync/{id}", get(sync::get))
        .route("/v1/sync/{id}/cancel", post(sync::cancel))
        .route("/v1/objects", get(objects::list))
        .route("/v1/objects/{bucket}/{*key}", get(objects::get))
        // Streamed and capped by --max-object-bytes, not by the JSON body limit.
        .route(
            "/v1/content/{bucket}/{*key}",
            get(content::get)
                .put(content::put)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/admin/blobs/gc", post(content::gc))
        .route("/v1/restores", post(restores::create).get(restores::list))
        .route("/v1/restores/{id}", get(restores::get))
        .route("/v1/restores/{id}/cancel", post(restores::cancel))
        .route("/v1/rules/test", post(rules::test))
        .route(
            "/v1/subscriptions",
            post(subscriptions::create).get(subscriptions::list),
        )
        .route(
            "/v1/subscriptions/{name}",
            get(subscriptions::get)
                .put(subscriptions::replace)
                .delete(subscriptions::delete),
        )
        .route(
            "/v1/subscriptions/{name}/status",
            get(subscriptions::status),
        )
        .route(
            "/v1/subscriptions/{name}/dead-letters",
            get(subscriptions::dead_letters),
        )
        .route(
            "/v1/subscriptions/{name}/dead-letters/redrive",
            post(subscriptions::redrive),
        )
        .route(
            "/v1/subscriptions/{name}/invocations",
            get(subscriptions::invocations),
        )
        .route("/v1/filters", get(filters::list))
        .route(
            "/v1/filters/{name}",
            post(filters::upload)
                .get(filters::get)
                .delete(filters::delete)
                .layer(DefaultBodyLimit::max(max_module + 1)),
        )
        .route("/v1/filters/{name}/test", post(filters::test))
        .route("/v1/replays", post(replays::create).get(replays::list))
        .route("/v1/replays/{id}", get(replays::get))
        .route("/v1/replays/{id}/cancel", post(replays::cancel))
        .route("/metrics", get(metrics::metrics))
        .merge(registry::routes())
        .merge(buckets::routes())
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .with_state(state)
}

/// The state both front ends (this HTTP API and the S3 API) serve from.
pub fn app_state(node: Node, limits: Limits) -> Arc<AppState> {
    Arc::new(AppState {
        node,
        limits,
        forwarder: forward::client(),
    })
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = router(state);
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
