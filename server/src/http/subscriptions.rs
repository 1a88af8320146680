//! `/v1/subscriptions`: create, list, show, replace and remove subscriptions; their status,
//! dead letters (list, redrive) and function invocations.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::State;
use super::auth::Caller;
use super::error::{ApiError, parse_json};

impl From<tidemark_sinks::Error> for ApiError {
    fn from(e: tidemark_sinks::Error) -> Self {
        match e {
            tidemark_sinks::Error::Invalid { field, message } => {
                ApiError::field(StatusCode::BAD_REQUEST, &field, message)
            }
            // More than the server has room for: a conflict with what is there, field named.
            tidemark_sinks::Error::OverBudget { field, message } => ApiError {
                status: StatusCode::CONFLICT,
                code: "over_budget",
                message,
                field: Some(field),
            },
            tidemark_sinks::Error::Core(core) => core.into(),
            other => {
                let (status, code) = super::error::status_of(other.kind());
                ApiError::new(status, code, other.to_string())
            }
        }
    }
}

pub async fn create(
    state: State,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let spec = tidemark_sinks::subscription::parse(&body?)?;
    let sub = state
        .node
        .engine
        .subscriptions
        .create(spec, Some(caller.actor()))
        .await?;
    Ok((StatusCode::CREATED, Json(sub.to_json())))
}

pub async fn replace(
    state: State,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let spec = tidemark_sinks::subscription::parse(&body?)?;
    if spec.name != name {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "name",
            format!(
                "the body names '{}' but the path names '{name}'; a subscription cannot be renamed",
                spec.name
            ),
        ));
    }
    let sub = state
        .node
        .engine
        .subscriptions
        .replace(spec, Some(caller.actor()))
        .await?;
    Ok(Json(sub.to_json()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Subscriptions named after this one (the previous page's `next_after`).
    after: Option<String>,
    /// At most this many (1 to [`MAX_PAGE`]); every one when absent.
    limit: Option<usize>,
    /// Each one's status (what `GET .../status` answers) inline, under `status`.
    #[serde(default)]
    status: bool,
}

const MAX_PAGE: usize = 1000;

/// `GET /v1/subscriptions[?after=&limit=&status=true]`: by name, a page at a time when asked;
/// `next_after` names the last one of a page that has more after it.
pub async fn list(
    state: State,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query?;
    if let Some(limit) = q.limit
        && !(1..=MAX_PAGE).contains(&limit)
    {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "limit",
            format!("must be 1 to {MAX_PAGE}"),
        ));
    }
    let mut subs = state.node.engine.subscriptions.list();
    subs.sort_by(|a, b| a.name().cmp(b.name()));
    if let Some(after) = q.after.as_deref() {
        subs.retain(|s| s.name() > after);
    }
    let more = q.limit.is_some_and(|limit| subs.len() > limit);
    if let Some(limit) = q.limit {
        subs.truncate(limit);
    }
    let next_after = if more {
        subs.last().map(|s| s.name().to_string())
    } else {
        None
    };
    let mut page = Vec::with_capacity(subs.len());
    for sub in &subs {
        let mut j = sub.to_json();
        if q.status {
            // One deleted since the listing answers why instead of failing the page.
            j["status"] = match state.node.engine.status(sub.name()).await {
                Ok(status) => status,
                Err(e) => {
                    let e = ApiError::from(e);
                    json!({ "error": { "code": e.code, "message": e.message } })
                }
            };
        }
        page.push(j);
    }
    Ok(Json(
        json!({ "subscriptions": page, "next_after": next_after }),
    ))
}

pub async fn get(state: State, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.node.engine.subscriptions.get(&name)?.to_json()))
}

pub async fn delete(
    state: State,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .node
        .engine
        .delete(&name, Some(caller.actor()))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn status(state: State, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.node.engine.status(&name).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// Letters after this id (the previous page's `next_after`).
    after: Option<Uuid>,
    /// Page size, 1..=1000 (default 100).
    limit: Option<usize>,
}

/// A page of dead letters, oldest first; `count` is the whole queue.
pub async fn dead_letters(
    state: State,
    Path(name): Path<String>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(page) = page?;
    let limit = page.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "limit",
            format!("{limit} is out of range 1..=1000"),
        ));
    }
    let engine = &state.node.engine;
    engine.subscriptions.get(&name)?;
    let letters = engine.dead_letters.page(&name, page.after, limit);
    let next_after = if letters.len() == limit {
        letters.last().map(|l| l.id)
    } else {
        None
    };
    let letters: Vec<Value> = letters
        .iter()
        .map(|l| serde_json::to_value(l.summary()).unwrap_or_default())
        .collect();
    Ok(Json(json!({
        "count": engine.dead_letters.count(&name),
        "dead_letters": letters,
        "next_after": next_after,
    })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RedriveRequest {
    /// Dead letters to redrive; all of them when absent.
    #[serde(default)]
    ids: Option<Vec<Uuid>>,
}

pub async fn redrive(
    state: State,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body?;
    let req: RedriveRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RedriveRequest::default()
    } else {
        parse_json(&body)?
    };
    let taken = state.node.engine.redrive(&name, req.ids).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "redriving": taken.len(), "ids": taken })),
    ))
}

pub async fn invocations(state: State, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.node.engine.invocations(&name)?))
}

/// `GET /v1/functions`: the process functions the operator declared, for sink.function
/// (names and programs; arguments are not shown, they may hold secrets).
pub async fn functions(state: State) -> Json<Value> {
    Json(state.node.engine.subscriptions.functions().to_json())
}
