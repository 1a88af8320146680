//! `POST /v1/mutations`: validate a batch, append its events durably, answer per mutation.

use axum::Json;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use serde_json::Value;
use tidemark_core::Error;
use tidemark_core::ingest::writer::result_to_json;
use tidemark_core::ingest::{Accepted, BatchLimits, RequestContext, Writer, parse_batch};

use super::State;
use super::error::ApiError;
use crate::node::writer::FORWARDED;

pub async fn post(
    axum::extract::State(app): State,
    headers: HeaderMap,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    caller: super::auth::Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Response>, ApiError> {
    let body = body?;
    let limits = BatchLimits {
        max_mutations: app.limits.max_batch,
    };
    let mutations = parse_batch(&body, limits).map_err(|e| {
        let mut api = ApiError::from(&e);
        if matches!(&e, Error::Invalid { field, message } if field == "mutations" && message.contains("exceed the limit")) {
            api.status = StatusCode::PAYLOAD_TOO_LARGE;
        }
        api
    })?;
    // A token limited to some buckets gets the whole batch refused for one outside them.
    for m in &mutations {
        caller.check_bucket(&m.bucket)?;
    }
    let ctx = request_context(&headers, peer);
    let results = write(&app, &headers, mutations, &ctx).await?;
    // Nothing could be written at all: say so with the status, as a failed append does.
    if let Some(Err(first)) = results.first()
        && results
            .iter()
            .all(|r| matches!(r, Err(e) if e.kind() == tidemark_core::ErrorKind::Unavailable && !matches!(e, Error::NotOwner(_))))
    {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            first.to_string(),
        ));
    }
    Ok(Json(Response {
        results: results.iter().map(result_to_json).collect(),
    }))
}

/// Write through the node's writer, each mutation on the node that writes its partition; a
/// request another node forwarded here is applied here (or refused per mutation as
/// `not_owner`), never forwarded again.
pub async fn write(
    app: &super::AppState,
    headers: &HeaderMap,
    mutations: Vec<tidemark_core::ingest::Mutation>,
    ctx: &RequestContext,
) -> Result<Vec<tidemark_core::Result<Accepted>>, ApiError> {
    Ok(if headers.contains_key(FORWARDED) {
        app.node.ingestor.apply(mutations, ctx).await?
    } else {
        app.writer.write(mutations, ctx).await?
    })
}

/// Who is asking, from the request's headers (and the peer when no proxy says otherwise).
pub fn request_context(headers: &HeaderMap, peer: std::net::SocketAddr) -> RequestContext {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    RequestContext {
        requester: header("x-tidemark-requester"),
        source_ip: header("x-forwarded-for")
            .and_then(|v| v.split(',').next().map(|s| s.trim().to_string()))
            .or_else(|| Some(peer.ip().to_string())),
        request_id: header("x-request-id"),
        user_agent: header("user-agent"),
        interface: tidemark_core::ingest::Interface::Http,
    }
}

#[derive(Serialize)]
pub struct Response {
    /// Per mutation: `{"event_id", "partition", "offset"}` or `{"error": {...}}`.
    results: Vec<Value>,
}
