//! `GET /v1/config/events`: the audit trail of configuration — every change on `_config`
//! (buckets, subscriptions, filters, tokens), with who made it (the token id when access
//! control is on), from which node, and when.
//!
//! Specs are left out: they may hold webhook secrets and token hashes, and the entity's own
//! endpoint shows what it is now.

use axum::Json;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::State;
use super::error::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only this kind: `bucket`, `subscription`, `filter`, `token`, ….
    kind: Option<String>,
    /// Only this entity name (with `kind`).
    name: Option<String>,
    /// Changes after this offset (the previous page's `next_after`).
    after: Option<u64>,
    /// Page size, 1..=1000 (default 100).
    limit: Option<usize>,
}

pub async fn events(
    state: State,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "limit",
            format!("{limit} is out of range 1..=1000"),
        ));
    }
    let from = q.after.map_or(0, |a| a + 1);
    let (events, next) = state
        .node
        .catalog
        .history(from, limit, |e| {
            q.kind.as_ref().is_none_or(|k| *k == e.kind)
                && q.name.as_ref().is_none_or(|n| *n == e.name)
        })
        .await?;
    let next_after = next.and_then(|_| events.last().map(|(offset, _)| *offset));
    let events: Vec<Value> = events
        .into_iter()
        .map(|(offset, e)| {
            json!({
                "offset": offset,
                "event_id": e.event_id,
                "time": tidemark_core::time::format_us(e.event_time),
                "kind": e.kind,
                "name": e.name,
                "action": e.action,
                "actor": e.actor,
                "node": e.node,
            })
        })
        .collect();
    Ok(Json(json!({ "events": events, "next_after": next_after })))
}
