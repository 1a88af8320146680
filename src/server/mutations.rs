//! `POST /v1/mutations`: validate a batch, append its events durably, answer per mutation.

use axum::Json;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use serde_json::Value;
use tidemark_core::Error;
use tidemark_core::ingest::{Accepted, BatchLimits, RequestContext, parse_batch};
use uuid::Uuid;

use super::State;
use super::error::ApiError;
use super::forward::{self, FORWARDED};

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
    // A forwarded request is applied here or refused per mutation, never forwarded again.
    let results = match &app.node.routes {
        Some(routes) if !headers.contains_key(FORWARDED) => {
            forward::route(&app, routes, mutations, &ctx).await?
        }
        _ => {
            let outcomes = app.node.ingestor.apply(mutations, &ctx).await?;
            outcomes.iter().map(Outcome::from).collect()
        }
    };
    // Nothing could be written at all: say so with the status, as a failed append does.
    if let Some(first) = results.iter().find_map(Outcome::unavailable)
        && results.iter().all(|r| r.unavailable().is_some())
    {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            first,
        ));
    }
    Ok(Json(Response { results }))
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
        interface: tidemark_core::ingest::Interface::Http,
    }
}

#[derive(Serialize)]
pub struct Response {
    results: Vec<Outcome>,
}

/// One entry of `results`: `{"event_id", "partition", "offset"}` or `{"error": {...}}`.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Outcome {
    Accepted {
        event_id: Uuid,
        partition: u32,
        offset: u64,
    },
    Refused {
        error: Value,
    },
    /// The result the owning node gave for a forwarded mutation.
    Raw(Value),
}

impl Outcome {
    /// The message, if this mutation was refused because nothing could write it now.
    fn unavailable(&self) -> Option<String> {
        let error = match self {
            Outcome::Refused { error } => error,
            Outcome::Raw(v) => &v["error"],
            Outcome::Accepted { .. } => return None,
        };
        (error["code"] == "unavailable")
            .then(|| error["message"].as_str().unwrap_or_default().to_string())
    }
}

impl From<&tidemark_core::Result<Accepted>> for Outcome {
    fn from(o: &tidemark_core::Result<Accepted>) -> Outcome {
        match o {
            Ok(a) => Outcome::Accepted {
                event_id: a.event_id,
                partition: a.position.partition,
                offset: a.position.offset,
            },
            Err(e) => Outcome::Refused {
                error: ApiError::item(e),
            },
        }
    }
}
