//! The object index over HTTP. Reads wait (briefly) until the index has applied everything the
//! log had when the request arrived, so a client reads its own acknowledged writes.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tidemark_core::blocking::blocking;
use tidemark_core::index::Listed;
use tidemark_replay::state::{AsOf, Clock, index_at};

use super::State;
use super::error::ApiError;
use crate::node::objects::Consistency;

const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    bucket: Option<String>,
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
    after: Option<String>,
    #[serde(default)]
    consistency: Consistency,
    /// The objects as they were at this instant (RFC 3339, `-2h`, `14:00`, `now`).
    at: Option<String>,
    /// The clock of `at`: `append` (log append time, the default) or `event` (event_time).
    time: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetQuery {
    #[serde(default)]
    history: bool,
    #[serde(default)]
    consistency: Consistency,
}

fn with_lag(body: Value, lag: u64) -> Response {
    let mut resp = Json(body).into_response();
    resp.headers_mut()
        .insert("x-tidemark-index-lag", HeaderValue::from(lag));
    resp
}

pub fn object_json(o: &Listed) -> Value {
    let mut v = o.state.to_json();
    v["bucket"] = o.bucket.clone().into();
    v["key"] = o.key.clone().into();
    v
}

pub async fn list(
    axum::extract::State(app): State,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "limit",
            format!("must be 1..={MAX_LIMIT}, got {limit}"),
        ));
    }
    if let Some(b) = &q.bucket {
        tidemark_core::ingest::validate_bucket(b)
            .map_err(|m| ApiError::field(StatusCode::BAD_REQUEST, "bucket", m))?;
    } else if !q.prefix.is_empty() {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "prefix",
            "needs a bucket",
        ));
    }
    let clock = match (&q.time, &q.at) {
        (Some(_), None) => {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                "time",
                "needs at (the instant it is the clock of)",
            ));
        }
        (Some(t), Some(_)) => Clock::parse("time", t)?,
        (None, _) => Clock::Append,
    };
    // As of an instant: an index built for this request, from this node's newest snapshot
    // before it plus the events after that.
    let (index, lag, as_of, _scratch) = match &q.at {
        Some(at) => {
            let want = AsOf {
                at: tidemark_core::time::parse_past_us(at)
                    .map_err(|e| ApiError::field(StatusCode::BAD_REQUEST, "at", e))?,
                clock,
                snapshots: Some(app.node.snapshot_dir.clone()),
                history: false,
            };
            let scratch = tempfile::tempdir().map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?;
            let path = scratch.path().join("objects.redb");
            let report = index_at(
                app.node.log.log.clone(),
                app.node.codec(),
                &path,
                &want,
                |_, _| {},
            )
            .await?;
            let index =
                std::sync::Arc::new(tidemark_core::index::ObjectIndex::open_read_only(&path)?);
            (index, 0, Some(report.to_json()), Some(scratch))
        }
        None => (
            app.node.index.clone(),
            app.node.catch_up(q.consistency).await?,
            None,
            None,
        ),
    };
    let (bucket, prefix, after) = (q.bucket.clone(), q.prefix.clone(), q.after.clone());
    let objects =
        blocking(move || index.list(bucket.as_deref(), &prefix, after.as_deref(), limit)).await?;
    let next_after = (objects.len() == limit).then(|| {
        let last = objects.last().expect("non-empty page");
        if q.bucket.is_some() {
            last.key.clone()
        } else {
            format!("{}/{}", last.bucket, last.key)
        }
    });
    let mut body = json!({
        "objects": objects.iter().map(object_json).collect::<Vec<_>>(),
        "next_after": next_after,
    });
    if let Some(as_of) = as_of {
        // How the state was built: the snapshot loaded (if any) and the events replayed.
        body["as_of"] = as_of;
    }
    Ok(with_lag(body, lag))
}

pub async fn get(
    axum::extract::State(app): State,
    Path((bucket, key)): Path<(String, String)>,
    query: Result<Query<GetQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let lag = app.node.catch_up(q.consistency).await?;
    let index = app.node.index.clone();
    let (b, k) = (bucket.clone(), key.clone());
    let (head, history) = blocking(move || {
        let head = index.get(&b, &k)?;
        let history = if q.history {
            Some(index.history(&b, &k)?)
        } else {
            None
        };
        Ok((head, history))
    })
    .await?;
    let not_found = |msg: String| ApiError::new(StatusCode::NOT_FOUND, "not_found", msg);
    let Some(head) = head else {
        return Err(not_found(format!("object {bucket}/{key} does not exist")));
    };
    if head.state.is_none() && history.is_none() {
        return Err(not_found(format!(
            "object {bucket}/{key} does not exist (deleted at sequence {}; add ?history=true to see its history)",
            head.sequence
        )));
    }
    let mut body = json!({
        "bucket": bucket,
        "key": key,
        "sequence": head.sequence,
        "event_id": head.event_id.to_string(),
        "exists": head.state.is_some(),
        "state": head.state.as_ref().map(|s| s.to_json()),
    });
    if let Some(history) = history {
        body["history"] = history
            .iter()
            .map(|h| h.to_json())
            .collect::<Vec<_>>()
            .into();
    }
    Ok(with_lag(body, lag))
}
