//! `/iceberg/v1/...`: an Iceberg REST catalog (the Apache Iceberg REST catalog OpenAPI spec)
//! over the server's own catalog and the tables of every Iceberg subscription, so any engine
//! finds them by pointing its REST catalog at `http://<host>:7700/iceberg`. Config,
//! namespaces, list and load tables behind the `read` scope; creating namespaces and tables
//! (in the server's catalog) and committing to a table behind `admin`, so the sinks of other
//! nodes (and other writers) can use this node as their REST catalog. OAuth2 client
//! credentials are exchanged at `/iceberg/v1/oauth/tokens`, with a Tidemark token as the
//! client secret. Anything else answers the spec's error shape.
//!
//! Multi-level namespaces are not made here (Tidemark's are one level), so a namespace path
//! parameter is one name.

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tidemark_sinks::iceberg::{IcebergSpec, rest};
use tidemark_sinks::subscription::spec::SinkSpec;

use super::State;

pub fn routes() -> Router<std::sync::Arc<super::AppState>> {
    // Other methods on these paths (create, update, drop) are unsupported operations.
    Router::new()
        .route("/iceberg/v1/config", get(config).fallback(unsupported))
        .route(
            "/iceberg/v1/oauth/tokens",
            post(oauth_token).fallback(unsupported),
        )
        .route(
            "/iceberg/v1/namespaces",
            get(namespaces).post(create_namespace).fallback(unsupported),
        )
        .route(
            "/iceberg/v1/namespaces/{namespace}",
            get(namespace).head(namespace_exists).fallback(unsupported),
        )
        .route(
            "/iceberg/v1/namespaces/{namespace}/tables",
            get(tables).post(create_table).fallback(unsupported),
        )
        .route(
            "/iceberg/v1/namespaces/{namespace}/tables/{table}",
            get(load)
                .head(table_exists)
                .post(commit)
                .fallback(unsupported),
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

/// The catalogs served: the server's own first (writes go there), then every Iceberg
/// subscription's.
fn specs(state: &State) -> Vec<IcebergSpec> {
    let subscriptions = state
        .node
        .engine
        .subscriptions
        .list()
        .into_iter()
        .filter_map(|s| match s.stored.spec.sink {
            SinkSpec::Iceberg(i) => Some(i),
            _ => None,
        });
    std::iter::once(state.node.iceberg.clone())
        .chain(subscriptions)
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
            "POST /v1/{prefix}/namespaces",
            "POST /v1/{prefix}/namespaces/{namespace}/tables",
            "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}",
            "POST /v1/oauth/tokens",
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
        Ok(Some(t)) => loaded(t),
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
        "Tidemark's Iceberg REST catalog serves config, namespaces (list, load, create), and \
         tables (list, load, create, commit); not renames, drops, views or metrics",
    )
}

fn refused(r: rest::Refused) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(status, r.kind, r.message)
}

/// A JSON request body, or the spec's 400 naming what is wrong with it.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Box<Response>> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "BadRequestException",
            format!("the {what} request is not valid: {e}"),
        ))
    })
}

fn loaded(t: rest::Served) -> Response {
    Json(json!({
        "metadata-location": t.metadata_location,
        "metadata": t.metadata,
        "config": {},
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
struct CreateNamespace {
    namespace: Vec<String>,
    #[serde(default)]
    properties: std::collections::HashMap<String, String>,
}

async fn create_namespace(state: State, bytes: axum::body::Bytes) -> Response {
    let request: CreateNamespace = match body(&bytes, "create-namespace") {
        Ok(r) => r,
        Err(e) => return *e,
    };
    // Tidemark's namespaces are one level, of the characters its sinks allow.
    let [ns] = request.namespace.as_slice() else {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequestException",
            "namespaces here have exactly one level",
        );
    };
    if ns.is_empty()
        || ns.len() > 128
        || !ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequestException",
            format!("namespace '{ns}': letters, digits, '_' and '-' only"),
        );
    }
    match rest::create_namespace(&specs(&state), ns, request.properties.clone()).await {
        Ok(()) => {
            Json(json!({"namespace": [ns], "properties": request.properties})).into_response()
        }
        Err(r) => refused(r),
    }
}

async fn create_table(state: State, Path(ns): Path<String>, bytes: axum::body::Bytes) -> Response {
    let request = match body(&bytes, "create-table") {
        Ok(r) => r,
        Err(e) => return *e,
    };
    match rest::create_table(&specs(&state), &state.node.catalog, &ns, request).await {
        Ok(t) => loaded(t),
        Err(r) => refused(r),
    }
}

async fn commit(
    state: State,
    Path((ns, table)): Path<(String, String)>,
    bytes: axum::body::Bytes,
) -> Response {
    let request = match body(&bytes, "commit-table") {
        Ok(r) => r,
        Err(e) => return *e,
    };
    match rest::commit(&specs(&state), &state.node.catalog, &ns, &table, request).await {
        Ok(t) => Json(json!({
            "metadata-location": t.metadata_location,
            "metadata": t.metadata,
        }))
        .into_response(),
        Err(r) => refused(r),
    }
}

/// The OAuth2 client-credentials exchange (the REST spec's `/v1/oauth/tokens`): the client
/// secret is a Tidemark token, and the access token answered is that token itself, so its
/// scopes and expiry apply to every call made with it.
async fn oauth_token(state: State, bytes: axum::body::Bytes) -> Response {
    let oauth_error = |status: StatusCode, kind: &str, description: String| {
        (
            status,
            Json(json!({"error": kind, "error_description": description})),
        )
            .into_response()
    };
    let form: std::collections::HashMap<String, String> =
        form_urlencoded::parse(&bytes).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only grant_type=client_credentials is supported".into(),
        );
    }
    let Some(secret) = form.get("client_secret").filter(|s| !s.is_empty()) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_secret is required: a Tidemark token".into(),
        );
    };
    if state.auth.enabled(&state)
        && let Err(why) = super::auth::grant_of(&state, secret)
    {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", why);
    }
    Json(json!({
        "access_token": secret,
        "token_type": "bearer",
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
    }))
    .into_response()
}
