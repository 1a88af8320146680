//! `/iceberg/v1/...`: a read-only Iceberg REST catalog (the Apache Iceberg REST catalog
//! OpenAPI spec) over the tables of every Iceberg subscription, so any engine finds them by
//! pointing its REST catalog at `http://<host>:7700/iceberg`. Config, namespaces, and list
//! and load tables; anything else answers the spec's error shape. Behind the `read` scope.
//!
//! Multi-level namespaces are not made here (Tidemark's are one level), so a namespace path
//! parameter is one name.

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tidemark_sinks::iceberg::{IcebergSpec, rest};
use tidemark_sinks::subscription::spec::SinkSpec;

use super::State;

pub fn routes() -> Router<std::sync::Arc<super::AppState>> {
    // Other methods on these paths (create, update, drop) are unsupported operations.
    Router::new()
        .route("/iceberg/v1/config", get(config).fallback(unsupported))
        .route(
            "/iceberg/v1/namespaces",
            get(namespaces).fallback(unsupported),
        )
        .route(
            "/iceberg/v1/namespaces/{namespace}",
            get(namespace).head(namespace_exists).fallback(unsupported),
        )
        .route(
            "/iceberg/v1/namespaces/{namespace}/tables",
            get(tables).fallback(unsupported),
        )
        .route(
            "/iceberg/v1/namespaces/{namespace}/tables/{table}",
            get(load).head(table_exists).fallback(unsupported),
        )
        .route("/iceberg/{*rest}", axum::routing::any(unsupported))
}

/// The Iceberg REST error body.
fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = json!({"error": {
        "message": message.into(),
        "type": kind,
        "code": status.as_u16(),
    }});
    (status, Json(body)).into_response()
}

fn failed(e: tidemark_sinks::Error) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailableException",
        e.to_string(),
    )
}

fn no_namespace(ns: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NoSuchNamespaceException",
        format!("namespace '{ns}' does not exist"),
    )
}

fn specs(state: &State) -> Vec<IcebergSpec> {
    state
        .node
        .engine
        .subscriptions
        .list()
        .into_iter()
        .filter_map(|s| match s.stored.spec.sink {
            SinkSpec::Iceberg(i) => Some(i),
            _ => None,
        })
        .collect()
}

async fn config() -> Json<serde_json::Value> {
    Json(json!({
        "defaults": {},
        "overrides": {},
        "endpoints": [
            "GET /v1/{prefix}/namespaces",
            "GET /v1/{prefix}/namespaces/{namespace}",
            "HEAD /v1/{prefix}/namespaces/{namespace}",
            "GET /v1/{prefix}/namespaces/{namespace}/tables",
            "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}",
            "HEAD /v1/{prefix}/namespaces/{namespace}/tables/{table}",
        ],
    }))
}

async fn namespaces(state: State) -> Response {
    match rest::namespaces(&specs(&state), &state.node.catalog).await {
        Ok(names) => {
            let list: Vec<Vec<String>> = names.into_iter().map(|n| vec![n]).collect();
            Json(json!({ "namespaces": list })).into_response()
        }
        Err(e) => failed(e),
    }
}

async fn namespace(state: State, Path(ns): Path<String>) -> Response {
    match rest::tables(&specs(&state), &state.node.catalog, &ns).await {
        Ok(Some(_)) => Json(json!({"namespace": [ns], "properties": {}})).into_response(),
        Ok(None) => no_namespace(&ns),
        Err(e) => failed(e),
    }
}

async fn namespace_exists(state: State, Path(ns): Path<String>) -> StatusCode {
    match rest::tables(&specs(&state), &state.node.catalog, &ns).await {
        Ok(Some(_)) => StatusCode::NO_CONTENT,
        Ok(None) => StatusCode::NOT_FOUND,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn tables(state: State, Path(ns): Path<String>) -> Response {
    match rest::tables(&specs(&state), &state.node.catalog, &ns).await {
        Ok(Some(names)) => {
            let ids: Vec<_> = names
                .into_iter()
                .map(|name| json!({"namespace": [&ns], "name": name}))
                .collect();
            Json(json!({ "identifiers": ids })).into_response()
        }
        Ok(None) => no_namespace(&ns),
        Err(e) => failed(e),
    }
}

async fn load(state: State, Path((ns, table)): Path<(String, String)>) -> Response {
    match rest::load(&specs(&state), &state.node.catalog, &ns, &table).await {
        Ok(Some(t)) => Json(json!({
            "metadata-location": t.metadata_location,
            "metadata": t.metadata,
            "config": {},
        }))
        .into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "NoSuchTableException",
            format!("table '{ns}.{table}' does not exist"),
        ),
        Err(e) => failed(e),
    }
}

async fn table_exists(state: State, Path((ns, table)): Path<(String, String)>) -> StatusCode {
    match rest::load(&specs(&state), &state.node.catalog, &ns, &table).await {
        Ok(Some(_)) => StatusCode::NO_CONTENT,
        Ok(None) => StatusCode::NOT_FOUND,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn unsupported() -> Response {
    error(
        StatusCode::NOT_ACCEPTABLE,
        "UnsupportedOperationException",
        "Tidemark's Iceberg REST catalog is read-only: config, namespaces, list and load tables",
    )
}
