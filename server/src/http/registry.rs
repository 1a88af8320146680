//! The schema registry's REST API, with Confluent's paths, JSON shapes, error codes and
//! content type, so Confluent clients (schema_registry_converter, confluent-kafka, Kafka
//! Connect converters) work against it.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tidemark_core::Error;
use tidemark_core::registry::{VersionRef, codes};

use super::{AppState, State};
use crate::node::Registry;
use tidemark_core::registry::SchemaRegistry;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(version))
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(version_schema),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/versions", get(schema_versions))
        .route("/schemas/types", get(types))
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility),
        )
        .route("/config", get(config))
}

/// A registry response: Confluent's content type on success and error.
struct Reply(StatusCode, Value);

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut resp = (self.0, self.1.to_string()).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        resp
    }
}

fn ok(v: Value) -> Result<Reply, Reply> {
    Ok(Reply(StatusCode::OK, v))
}

/// Confluent's error body; the HTTP status is the code's first three digits.
fn fail(code: u32, message: impl Into<String>) -> Reply {
    let status = if code >= 10_000 { code / 100 } else { code };
    let status = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Reply(
        status,
        json!({"error_code": code, "message": message.into()}),
    )
}

impl From<Error> for Reply {
    fn from(e: Error) -> Reply {
        match e {
            Error::Registry { code, message } => fail(code, message),
            other => fail(50001, format!("Error in the backend data store: {other}")),
        }
    }
}

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

fn parse_body(body: &[u8]) -> Result<String, Reply> {
    let b: SchemaBody = serde_json::from_slice(body)
        .map_err(|e| fail(codes::INVALID_SCHEMA, format!("Invalid request body: {e}")))?;
    if let Some(t) = b.schema_type.filter(|t| t != "AVRO") {
        return Err(fail(
            codes::INVALID_SCHEMA,
            format!(
                "Invalid schema: schemaType {t} is not supported; this registry stores AVRO schemas"
            ),
        ));
    }
    if !b.references.is_empty() {
        return Err(fail(
            codes::INVALID_SCHEMA,
            "Invalid schema: schema references are not supported",
        ));
    }
    Ok(b.schema)
}

/// The built-in registry; with an external one configured, an error that names it.
fn builtin(app: &AppState) -> Result<&SchemaRegistry, Reply> {
    match &app.node.registry {
        Registry::BuiltIn(r) => Ok(r),
        Registry::External(r) => Err(fail(
            40401,
            format!(
                "this node registers its schemas in the external registry at {}; ask it",
                r.url()
            ),
        )),
    }
}

fn parse_id(id: &str) -> Result<u32, Reply> {
    id.parse()
        .map_err(|_| fail(codes::SCHEMA_NOT_FOUND, format!("Schema {id} not found")))
}

async fn subjects(axum::extract::State(app): State) -> Result<Reply, Reply> {
    ok(json!(builtin(&app)?.subjects()))
}

async fn versions(
    axum::extract::State(app): State,
    Path(subject): Path<String>,
) -> Result<Reply, Reply> {
    ok(json!(builtin(&app)?.versions(&subject)?))
}

async fn version(
    axum::extract::State(app): State,
    Path((subject, v)): Path<(String, String)>,
) -> Result<Reply, Reply> {
    let sv = builtin(&app)?.version(&subject, VersionRef::parse(&v)?)?;
    ok(json!({"subject": sv.subject, "version": sv.version, "id": sv.id, "schema": sv.schema}))
}

async fn version_schema(
    axum::extract::State(app): State,
    Path((subject, v)): Path<(String, String)>,
) -> Result<Reply, Reply> {
    let sv = builtin(&app)?.version(&subject, VersionRef::parse(&v)?)?;
    let schema: Value = serde_json::from_str(&sv.schema).expect("stored schemas are JSON");
    ok(schema)
}

async fn register(
    axum::extract::State(app): State,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Reply, Reply> {
    let schema = parse_body(&body)?;
    let id = builtin(&app)?.register(&subject, &schema).await?;
    ok(json!({ "id": id }))
}

async fn lookup(
    axum::extract::State(app): State,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Reply, Reply> {
    let schema = parse_body(&body)?;
    let sv = builtin(&app)?.lookup(&subject, &schema)?;
    ok(json!({"subject": sv.subject, "version": sv.version, "id": sv.id, "schema": sv.schema}))
}

async fn schema_by_id(
    axum::extract::State(app): State,
    Path(id): Path<String>,
) -> Result<Reply, Reply> {
    let text = builtin(&app)?.schema_text(parse_id(&id)?)?;
    ok(json!({ "schema": text }))
}

async fn schema_versions(
    axum::extract::State(app): State,
    Path(id): Path<String>,
) -> Result<Reply, Reply> {
    let uses = builtin(&app)?.subject_versions_of(parse_id(&id)?)?;
    ok(uses
        .into_iter()
        .map(|(subject, version)| json!({"subject": subject, "version": version}))
        .collect())
}

async fn types() -> Result<Reply, Reply> {
    ok(json!(["AVRO"]))
}

async fn compatibility(
    axum::extract::State(app): State,
    Path((subject, v)): Path<(String, String)>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    body: Bytes,
) -> Result<Reply, Reply> {
    let schema = parse_body(&body)?;
    let (is_compatible, messages) =
        builtin(&app)?.check_compatibility(&subject, VersionRef::parse(&v)?, &schema)?;
    let verbose = query.is_some_and(|q| q.split('&').any(|kv| kv == "verbose=true"));
    if verbose {
        ok(json!({"is_compatible": is_compatible, "messages": messages}))
    } else {
        ok(json!({ "is_compatible": is_compatible }))
    }
}

async fn config() -> Result<Reply, Reply> {
    ok(json!({"compatibilityLevel": "BACKWARD"}))
}
