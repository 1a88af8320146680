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
//! - `status.rs`: `/healthz`, `/readyz`, `GET /v1/log`.
//! - `subscriptions.rs`: `/v1/subscriptions/...` (status, dead letters, redrive, invocations),
//!   and `GET /v1/functions` (the process functions subscriptions may name).
//! - `filters.rs`: `/v1/filters/...` (upload, versions, delete, test).
//! - `replays.rs`: `/v1/replays/...` (re-delivery jobs).
//! - `metrics.rs`: `/metrics` (Prometheus text).
//! - `watch.rs`: `GET /v1/watch` (SSE) and `/v1/watch/ws` (WebSocket): live changes.
//! - `error.rs`: how errors become responses.
//! - `auth.rs`: bearer tokens, scopes and rate limits in front of every route.
//! - `tokens.rs`: `/v1/tokens/...` (create, list, revoke API tokens).
//! - `audit.rs`: `GET /v1/config/events` (who changed which configuration, when).
//! - `iceberg.rs`: `/iceberg/v1/...`, a read-only Iceberg REST catalog of the Iceberg sinks'
//!   tables.
//! - `console/`: the web console under `/ui` (embedded pages, sign-in with a session cookie).

mod audit;
pub mod auth;
pub(crate) mod buckets;
pub(crate) mod console;
pub(crate) mod content;
pub(crate) mod error;
mod filters;
mod iceberg;
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
mod tokens;
pub(crate) mod watch;

pub use crate::net::client::{HttpClient, client as http_client, client_trusting};
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
    /// `/readyz` reports not ready while the index lags the log by more events than this.
    pub ready_max_lag_events: u64,
    /// Events a live watcher may fall behind before it is cut off (`--watch-max-lag-events`).
    pub watch_max_lag_events: u64,
}

pub struct AppState {
    pub node: Node,
    pub limits: Limits,
    /// Where every front writes mutations (routed to the node that writes their partition).
    pub writer: Arc<crate::node::writer::NodeWriter>,
    /// Bearer tokens: off until one is configured.
    pub auth: auth::Auth,
    /// The live log reader every watcher shares (`/v1/watch`).
    pub watch: Arc<watch::Hub>,
    /// Each listener's connection counters (`http`, `s3`), for `/metrics`.
    pub listeners: Vec<(&'static str, Arc<crate::net::Counters>)>,
    /// The web console's signed-in browsers (`/ui`).
    pub sessions: console::Sessions,
}

pub type State = axum::extract::State<Arc<AppState>>;

pub fn router(state: Arc<AppState>) -> Router {
    // A module may be as large as the server's maximum module size.
    let max_module = state.node.filters.engine.maxima.module_bytes;
    let auth = axum::middleware::from_fn_with_state(state.clone(), auth::require);
    Router::new()
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
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
        .route("/v1/functions", get(subscriptions::functions))
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
        .route("/v1/watch", get(watch::watch))
        .route("/v1/watch/ws", get(watch::watch_ws))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/tokens", post(tokens::create).get(tokens::list))
        .route("/v1/tokens/{id}", get(tokens::get).delete(tokens::revoke))
        .route("/v1/config/events", get(audit::events))
        .merge(registry::routes())
        .merge(buckets::routes())
        .merge(iceberg::routes())
        .merge(console::routes())
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .with_state(state)
        // Last, so that it is in front of every route, whoever added it.
        .layer(auth)
}

/// The state both front ends (this HTTP API and the S3 API) serve from.
/// `auth`: access control (`serve --admin-token-file`, `--token-rate-per-sec`).
/// `listeners`: each listener's connection counters. `writer`: the node's writer.
pub fn app_state(
    node: Node,
    limits: Limits,
    auth: auth::Auth,
    listeners: Vec<(&'static str, Arc<crate::net::Counters>)>,
    writer: Arc<crate::node::writer::NodeWriter>,
) -> Arc<AppState> {
    let watch = watch::Hub::new(
        node.log.log.clone(),
        node.codec(),
        limits.watch_max_lag_events,
    );
    let state = Arc::new(AppState {
        node,
        limits,
        writer,
        auth,
        watch,
        listeners,
        sessions: console::Sessions::default(),
    });
    // Jobs whose node is gone are resumed here; cancels reach the jobs this node runs.
    jobs::supervise(&state);
    state
}

/// Serve the HTTP API on `listener` until `stop` turns true; live watchers are closed then,
/// and requests in progress finish.
pub async fn serve(
    listener: crate::net::Listener,
    state: Arc<AppState>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let watchers = state.watch.clone();
    let mut stopping = stop.clone();
    tokio::spawn(async move {
        let _ = stopping.wait_for(|s| *s).await;
        watch::close(&watchers);
    });
    let app = router(state);
    let per_connection = move |peer: std::net::SocketAddr| {
        let app = app.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            tower_service::Service::call(&mut app.clone(), req.map(axum::body::Body::new))
        })
    };
    crate::net::serve(listener, per_connection, stop).await
}
