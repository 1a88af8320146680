//! `/v1/filters`: upload WASM filter versions, list and show them, delete them (refused
//! while a subscription needs them), and test them on sample events or on the log.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tidemark_core::OBJECTS_TOPIC;
use tidemark_core::event::ObjectEvent;
use tidemark_plugins::{
    Evaluation, FilterInstance, LimitsRequest, Verdict, VersionRecord, parse_reference,
};

use super::State;
use super::auth::Caller;
use super::error::{ApiError, parse_json};

impl From<tidemark_plugins::Error> for ApiError {
    fn from(e: tidemark_plugins::Error) -> Self {
        match e {
            tidemark_plugins::Error::Invalid(message) => {
                ApiError::field(StatusCode::BAD_REQUEST, "module", message)
            }
            tidemark_plugins::Error::Core(core) => core.into(),
            other => {
                let (status, code) = super::error::status_of(other.kind());
                ApiError::new(status, code, other.to_string())
            }
        }
    }
}

fn version_json(v: &VersionRecord, used_by: Vec<String>) -> Value {
    let mut j = serde_json::to_value(v).unwrap_or_default();
    j["reference"] = v.reference().into();
    j["state"] = if v.deleted_at.is_some() {
        "deleted"
    } else {
        "live"
    }
    .into();
    j["used_by"] = used_by.into();
    j
}

/// Subscriptions naming `name`, with the version each resolves to now.
fn users(state: &State, name: &str) -> Vec<(String, Option<u32>)> {
    state
        .node
        .engine
        .subscriptions
        .list()
        .into_iter()
        .filter_map(|s| {
            let r = s.stored.spec.filter.clone()?;
            let (n, _) = parse_reference(&r).ok()?;
            (n == name).then(|| {
                let v = state.node.filters.resolve(&r).ok().map(|v| v.version);
                (s.name().to_string(), v)
            })
        })
        .collect()
}

pub async fn upload(
    state: State,
    Path(name): Path<String>,
    caller: Caller,
    query: Result<Query<LimitsRequest>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Query(limits) = query?;
    let body = body?;
    if body.is_empty() {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "body",
            "the body is empty; send the .wasm file as the raw request body",
        ));
    }
    let up = state
        .node
        .filters
        .upload(&name, body.to_vec(), limits, Some(caller.actor()))
        .await?;
    let mut j = version_json(&up.record, Vec::new());
    j["created"] = up.created.into();
    let status = if up.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(j)))
}

pub async fn list(state: State) -> Json<Value> {
    let filters: Vec<Value> = state
        .node
        .filters
        .list()
        .into_iter()
        .map(|(name, versions)| {
            let live: Vec<&VersionRecord> =
                versions.iter().filter(|v| v.deleted_at.is_none()).collect();
            let latest = live.last().copied();
            json!({
                "name": name,
                "latest": latest.map(|v| v.version),
                "versions": live.iter().map(|v| v.version).collect::<Vec<_>>(),
                "sha256": latest.map(|v| v.sha256.clone()),
                "size": latest.map(|v| v.size),
                "uploaded_at": latest.map(|v| v.uploaded_at.clone()),
                "used_by": users(&state, &name).into_iter().map(|(s, _)| s).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({ "filters": filters }))
}

pub async fn get(state: State, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let (name, pinned) = parse_reference(&name)?;
    let versions = state.node.filters.versions(name);
    if versions.iter().all(|v| v.deleted_at.is_some()) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("filter '{name}' does not exist"),
        ));
    }
    let users = users(&state, name);
    let shown: Vec<Value> = versions
        .iter()
        .filter(|v| pinned.is_none_or(|p| p == v.version))
        .map(|v| {
            let used: Vec<String> = users
                .iter()
                .filter(|(_, u)| *u == Some(v.version))
                .map(|(s, _)| s.clone())
                .collect();
            version_json(v, used)
        })
        .collect();
    let latest = versions
        .iter()
        .rev()
        .find(|v| v.deleted_at.is_none())
        .map(|v| v.version);
    Ok(Json(json!({
        "name": name,
        "latest": latest,
        "versions": shown,
        "used_by": users.into_iter().map(|(s, _)| s).collect::<Vec<_>>(),
    })))
}

/// `DELETE /v1/filters/NAME` (every version) or `/v1/filters/NAME@VERSION`.
pub async fn delete(
    state: State,
    Path(reference): Path<String>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let (name, version) = parse_reference(&reference)?;
    let users = state.node.engine.subscriptions.filter_users(name, version);
    if !users.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "in_use",
            format!(
                "filter '{reference}' is used by subscription(s) {}; point them at another \
                 filter or version (PUT /v1/subscriptions/NAME) or remove them first",
                users.join(", ")
            ),
        ));
    }
    let deleted = state
        .node
        .filters
        .delete(name, version, Some(caller.actor()))
        .await?;
    Ok(Json(json!({ "name": name, "deleted_versions": deleted })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    /// Sample events (the `log tail --json` form).
    #[serde(default)]
    events: Option<Vec<Value>>,
    /// Or events from the log: those appended at or after this instant (RFC 3339).
    #[serde(default)]
    since: Option<String>,
    /// At most this many events from the log (default 1,000).
    #[serde(default)]
    limit: Option<usize>,
    /// Handed to the filter's `init`.
    #[serde(default)]
    params: Option<Value>,
    /// Per-event results returned (default 100; the totals always cover every event).
    #[serde(default)]
    max_results: Option<usize>,
}

const MAX_TEST_EVENTS: usize = 100_000;

/// `POST /v1/filters/NAME[@VERSION]/test`: run the filter on sample events or on events of
/// the log, without delivering anything.
pub async fn test(
    state: State,
    Path(reference): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: TestRequest = parse_json(&body?)?;
    let version = state.node.filters.resolve(&reference)?;
    let (events, source) = match (&req.events, &req.since) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                "events",
                "give either `events` (sample events) or `since` (events from the log)",
            ));
        }
        (Some(list), None) => {
            if list.len() > MAX_TEST_EVENTS {
                return Err(ApiError::field(
                    StatusCode::BAD_REQUEST,
                    "events",
                    format!("at most {MAX_TEST_EVENTS} events per test"),
                ));
            }
            let mut events = Vec::with_capacity(list.len());
            for (i, v) in list.iter().enumerate() {
                events.push(Arc::new(ObjectEvent::from_json(
                    v,
                    &format!("events[{i}]"),
                )?));
            }
            (events, json!("sample"))
        }
        (None, Some(since)) => {
            let limit = req.limit.unwrap_or(1000);
            if limit == 0 || limit > MAX_TEST_EVENTS {
                return Err(ApiError::field(
                    StatusCode::BAD_REQUEST,
                    "limit",
                    format!("must be 1 to {MAX_TEST_EVENTS}"),
                ));
            }
            let at = tidemark_core::time::parse_rfc3339_us(since)
                .map_err(|e| ApiError::field(StatusCode::BAD_REQUEST, "since", e))?;
            (
                from_log(&state, at, limit).await?,
                json!({"log_since": since}),
            )
        }
    };
    let module = state.node.filters.module(&version).await?;
    let params = req.params.as_ref().map(|p| p.to_string());
    let evals = tokio::task::spawn_blocking(move || -> tidemark_plugins::Result<_> {
        let mut instance = FilterInstance::new(module, params.as_deref())?;
        Ok(events
            .into_iter()
            .map(|e| {
                let eval = instance.evaluate(e.clone());
                (e, eval)
            })
            .collect::<Vec<_>>())
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(|e| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            "params",
            format!("{} cannot start: {e}", version.reference()),
        )
    })?;
    Ok(Json(report(
        &version,
        source,
        &evals,
        req.max_results.unwrap_or(100),
    )))
}

/// Up to `limit` events appended at or after `at`, oldest first across partitions.
async fn from_log(state: &State, at: i64, limit: usize) -> Result<Vec<Arc<ObjectEvent>>, ApiError> {
    let log = &state.node.log.log;
    let codec = state.node.codec();
    let mut all = Vec::new();
    for p in 0..log.partitions(OBJECTS_TOPIC)? {
        let end = log.offsets(OBJECTS_TOPIC, p).await?.end;
        let mut next = log.offset_for_time(OBJECTS_TOPIC, p, at).await?;
        let mut taken = 0;
        while next < end && taken < limit {
            let records = log
                .read(
                    OBJECTS_TOPIC,
                    p,
                    next,
                    (limit - taken).min(1000),
                    Duration::ZERO,
                )
                .await?;
            let Some(last) = records.last().map(|r| r.offset) else {
                break;
            };
            for r in records {
                // An undecodable record is not an event to test on; the log tools show it.
                if let Ok(e) = codec.decode(&r.value) {
                    all.push((r.timestamp, p, r.offset, Arc::new(e)));
                    taken += 1;
                }
            }
            next = last + 1;
        }
    }
    all.sort_by_key(|(t, p, o, _)| (*t, *p, *o));
    Ok(all.into_iter().take(limit).map(|(.., e)| e).collect())
}

fn report(
    version: &VersionRecord,
    source: Value,
    evals: &[(Arc<ObjectEvent>, Evaluation)],
    max_results: usize,
) -> Value {
    let (mut kept, mut dropped, mut errors) = (0u64, 0u64, 0u64);
    let mut by_kind = std::collections::BTreeMap::<&str, u64>::new();
    let mut fuel: Vec<u64> = Vec::with_capacity(evals.len());
    let mut micros: Vec<f64> = Vec::with_capacity(evals.len());
    let mut results = Vec::new();
    let round = |x: f64| (x * 10.0).round() / 10.0;
    for (i, (event, eval)) in evals.iter().enumerate() {
        let (verdict, kind, message) = match &eval.verdict {
            Ok(Verdict::Keep) => {
                kept += 1;
                ("keep", None, None)
            }
            Ok(Verdict::Drop) => {
                dropped += 1;
                ("drop", None, None)
            }
            Err(e) => {
                errors += 1;
                *by_kind.entry(e.label()).or_default() += 1;
                ("error", Some(e.label()), Some(e.to_string()))
            }
        };
        fuel.push(eval.fuel);
        micros.push(eval.elapsed.as_secs_f64() * 1e6);
        if results.len() < max_results {
            results.push(json!({
                "index": i,
                "event_id": event.event_id.to_string(),
                "event_type": event.event_type.as_str(),
                "bucket": event.bucket,
                "key": event.key,
                "verdict": verdict,
                "error_kind": kind,
                "error": message,
                "fuel": eval.fuel,
                "time_us": round(eval.elapsed.as_secs_f64() * 1e6),
                "logs": eval.logs,
                "logs_dropped": eval.logs_dropped,
            }));
        }
    }
    fuel.sort_unstable();
    micros.sort_by(f64::total_cmp);
    let n = evals.len();
    let pick = |q: f64| ((n as f64 - 1.0) * q).round() as usize;
    let time = (n > 0).then(|| {
        json!({"median": round(micros[pick(0.5)]), "p99": round(micros[pick(0.99)]),
               "max": round(micros[n - 1])})
    });
    let fuel_stat = (n > 0)
        .then(|| json!({"median": fuel[pick(0.5)], "p99": fuel[pick(0.99)], "max": fuel[n - 1]}));
    json!({
        "filter": version.name,
        "version": version.version,
        "source": source,
        "evaluated": n,
        "kept": kept,
        "dropped": dropped,
        "errors": errors,
        "errors_by_kind": by_kind,
        "match_rate": if n == 0 { 0.0 } else { kept as f64 / n as f64 },
        "fuel": fuel_stat,
        "time_us": time,
        "results": results,
        "results_truncated": n > results.len(),
    })
}
