//! `/v1/filters`: upload WASM filter versions, list and show them, delete them (refused
//! while a subscription needs them), and test them on sample events or on the log (within a
//! deadline and an event cap).

use std::sync::Arc;
use std::time::{Duration, Instant};

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
            tidemark_plugins::Error::Capacity(message) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "capacity", message)
            }
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
    // Assembling a large text takes a while: not on the runtime's threads.
    let module = tokio::task::spawn_blocking(move || binary_module(body))
        .await
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
    let subscriptions = state.node.engine.subscriptions.clone();
    let users = move |name: &str| subscriptions.version_users(name);
    let up = state
        .node
        .filters
        .upload(&name, module, limits, Some(caller.actor()), &users)
        .await?;
    let mut j = version_json(&up.record, Vec::new());
    j["created"] = up.created.into();
    // Older versions deleted to stay within --filter-max-versions.
    j["collected_versions"] = up.collected.into();
    let status = if up.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(j)))
}

/// The module's binary form: a body in the WebAssembly text format (a `.wat` file, starting
/// with `(` after blanks and comments) is assembled here, so a browser or curl can upload one
/// as the CLI does; anything else is taken as binary and checked by the filter store.
fn binary_module(body: Bytes) -> Result<Vec<u8>, ApiError> {
    if body.starts_with(b"\0asm") {
        return Ok(body.to_vec());
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return Ok(body.to_vec());
    };
    if !starts_like_wat(text) {
        return Ok(body.to_vec());
    }
    wat::parse_str(text).map_err(|e| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            "body",
            format!("the body is WebAssembly text (.wat) that does not assemble: {e}"),
        )
    })
}

/// Whether `text` begins, after blanks and `;;` / `(; ;)` comments, with `(`.
fn starts_like_wat(mut text: &str) -> bool {
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix(";;") {
            text = rest.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(rest) = text.strip_prefix("(;") {
            text = rest.split_once(";)").map_or("", |(_, after)| after);
        } else {
            return text.starts_with('(');
        }
    }
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
    /// Or the newest this many events of the log (across partitions, by append time).
    #[serde(default)]
    last: Option<usize>,
    /// Handed to the filter's `init`.
    #[serde(default)]
    params: Option<Value>,
    /// Per-event results returned (default 100; the totals always cover every event).
    #[serde(default)]
    max_results: Option<usize>,
    /// The whole test stops after this long, answering what it did (default 10 s).
    #[serde(default)]
    deadline_ms: Option<u64>,
}

/// Events one test evaluates at most; the rest of a longer sample list is not looked at.
const MAX_TEST_EVENTS: usize = 100_000;
const DEFAULT_TEST_DEADLINE: Duration = Duration::from_secs(10);
const MAX_TEST_DEADLINE_MS: u64 = 60_000;

/// Why a test ended before every event was evaluated.
#[derive(Clone, Copy)]
enum Stop {
    /// At the overall deadline (`deadline_ms`).
    Deadline,
    /// At the event cap ([`MAX_TEST_EVENTS`]).
    EventCap,
}

/// `POST /v1/filters/NAME[@VERSION]/test`: run the filter on sample events or on events of
/// the log, without delivering anything. Bounded: at most [`MAX_TEST_EVENTS`] events and the
/// deadline; a test stopped by either answers what it did so far and says where it stopped.
pub async fn test(
    state: State,
    Path(reference): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let req: TestRequest = parse_json(&body?)?;
    let deadline_ms = match req.deadline_ms {
        None => DEFAULT_TEST_DEADLINE.as_millis() as u64,
        Some(ms @ 1..=MAX_TEST_DEADLINE_MS) => ms,
        Some(_) => {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                "deadline_ms",
                format!("must be 1 to {MAX_TEST_DEADLINE_MS}"),
            ));
        }
    };
    let deadline = started + Duration::from_millis(deadline_ms);
    let version = state.node.filters.resolve(&reference)?;
    let (events, source, given, mut stop) = match (&req.events, &req.since, req.last) {
        (Some(list), None, None) => {
            let taken = list.len().min(MAX_TEST_EVENTS);
            let mut events = Vec::with_capacity(taken);
            for (i, v) in list.iter().take(taken).enumerate() {
                events.push(Arc::new(ObjectEvent::from_json(
                    v,
                    &format!("events[{i}]"),
                )?));
            }
            let stop = (list.len() > taken).then_some(Stop::EventCap);
            (events, json!("sample"), list.len(), stop)
        }
        (None, Some(since), None) => {
            let limit = test_limit("limit", req.limit.unwrap_or(1000))?;
            let at = tidemark_core::time::parse_rfc3339_us(since)
                .map_err(|e| ApiError::field(StatusCode::BAD_REQUEST, "since", e))?;
            let (events, cut) = from_log(&state, LogWindow::Since(at), limit, deadline).await?;
            let n = events.len();
            let source = json!({"log_since": since});
            (events, source, n, cut.then_some(Stop::Deadline))
        }
        (None, None, Some(last)) => {
            let limit = test_limit("last", last)?;
            let (events, cut) = from_log(&state, LogWindow::Last, limit, deadline).await?;
            let n = events.len();
            let source = json!({"log_last": last});
            (events, source, n, cut.then_some(Stop::Deadline))
        }
        _ => {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                "events",
                "give one of `events` (sample events), `since` (events from the log from an \
                 instant) or `last` (the newest events of the log)",
            ));
        }
    };
    let module = state.node.filters.module(&version).await?;
    let params = req.params.as_ref().map(|p| p.to_string());
    let max_results = req.max_results.unwrap_or(100);
    let tally = tokio::task::spawn_blocking(move || -> tidemark_plugins::Result<Tally> {
        let mut instance = FilterInstance::new(module, params.as_deref())?;
        let mut tally = Tally::new(max_results);
        // Each call is bounded by the version's own deadline (per event, a v2 batch by its
        // events'); the test by its own, checked between calls.
        for chunk in events.chunks(instance.batch_size()) {
            if Instant::now() >= deadline {
                break;
            }
            for (event, eval) in chunk.iter().zip(instance.evaluate_all(chunk)) {
                tally.add(event, eval);
            }
        }
        Ok(tally)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(|e| match e {
        tidemark_plugins::Error::Capacity(_) => e.into(),
        e => ApiError::field(
            StatusCode::BAD_REQUEST,
            "params",
            format!("{} cannot start: {e}", version.reference()),
        ),
    })?;
    let evaluated = tally.fuel.len();
    if evaluated < given.min(MAX_TEST_EVENTS) {
        stop = Some(Stop::Deadline);
    }
    let mut answer = tally.report(&version, source);
    answer["given"] = given.into();
    answer["complete"] = stop.is_none().into();
    answer["stopped"] = match stop {
        None => Value::Null,
        Some(Stop::Deadline) => json!({
            "reason": "deadline",
            "message": format!(
                "stopped at the test's deadline of {deadline_ms} ms after evaluating \
                 {evaluated} of {given} events; the totals cover those (ask for a longer \
                 deadline_ms, at most {MAX_TEST_DEADLINE_MS}, or fewer events)"
            ),
        }),
        Some(Stop::EventCap) => json!({
            "reason": "event_cap",
            "message": format!(
                "stopped at the cap of {MAX_TEST_EVENTS} events per test after evaluating \
                 {evaluated} of {given}; the totals cover those"
            ),
        }),
    };
    Ok(Json(answer))
}

/// How many log events a test reads: 1 to [`MAX_TEST_EVENTS`].
fn test_limit(field: &str, n: usize) -> Result<usize, ApiError> {
    if n == 0 || n > MAX_TEST_EVENTS {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            field,
            format!("must be 1 to {MAX_TEST_EVENTS}"),
        ));
    }
    Ok(n)
}

/// Which events of the log a test reads.
#[derive(Clone, Copy)]
enum LogWindow {
    /// The first ones appended at or after this instant (µs).
    Since(i64),
    /// The newest ones.
    Last,
}

/// Up to `limit` events of `window`, oldest first across partitions (by append time, then
/// event id); true when reading stopped at `deadline`.
async fn from_log(
    state: &State,
    window: LogWindow,
    limit: usize,
    deadline: Instant,
) -> Result<(Vec<Arc<ObjectEvent>>, bool), ApiError> {
    let log = &state.node.log.log;
    let codec = state.node.codec();
    let mut all = Vec::new();
    let mut cut = false;
    'partitions: for p in 0..log.partitions(OBJECTS_TOPIC)? {
        let range = log.offsets(OBJECTS_TOPIC, p).await?;
        let end = range.end;
        // The newest `limit` of each partition hold the newest `limit` of all of them.
        let mut next = match window {
            LogWindow::Since(at) => log.offset_for_time(OBJECTS_TOPIC, p, at).await?,
            LogWindow::Last => end.saturating_sub(limit as u64).max(range.start),
        };
        let mut taken = 0;
        while next < end && taken < limit {
            if Instant::now() >= deadline {
                cut = true;
                break 'partitions;
            }
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
        // What no later partition can displace is kept, no more: at most twice `limit`
        // events are held, whatever the number of partitions.
        keep_window(&mut all, window, limit);
    }
    keep_window(&mut all, window, limit);
    Ok((all.into_iter().map(|(.., e)| e).collect(), cut))
}

/// Sort `events` in log order and keep the `limit` the window asks for: the first ones
/// since an instant, or the newest.
fn keep_window(
    events: &mut Vec<(i64, u32, u64, Arc<ObjectEvent>)>,
    window: LogWindow,
    limit: usize,
) {
    // Events appended together share a time; their ids (UUIDv7, from one clock per node)
    // keep the order they were written in across partitions.
    events.sort_by_key(|(t, p, o, e)| (*t, e.event_id, *p, *o));
    match window {
        LogWindow::Since(_) => events.truncate(limit),
        LogWindow::Last => {
            let extra = events.len().saturating_sub(limit);
            events.drain(..extra);
        }
    }
}

/// A test's results as they come: the first `max_results` in full, counts for all, and each
/// event's fuel and time for the percentiles (16 bytes an event: no event's logs are kept
/// past the shown results).
struct Tally {
    max_results: usize,
    kept: u64,
    dropped: u64,
    errors: u64,
    by_kind: std::collections::BTreeMap<&'static str, u64>,
    fuel: Vec<u64>,
    micros: Vec<f64>,
    results: Vec<Value>,
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl Tally {
    fn new(max_results: usize) -> Tally {
        Tally {
            max_results,
            kept: 0,
            dropped: 0,
            errors: 0,
            by_kind: Default::default(),
            fuel: Vec::new(),
            micros: Vec::new(),
            results: Vec::new(),
        }
    }

    fn add(&mut self, event: &ObjectEvent, eval: Evaluation) {
        let i = self.fuel.len();
        let (verdict, kind, message) = match &eval.verdict {
            Ok(Verdict::Keep) => {
                self.kept += 1;
                ("keep", None, None)
            }
            Ok(Verdict::Drop) => {
                self.dropped += 1;
                ("drop", None, None)
            }
            Err(e) => {
                self.errors += 1;
                *self.by_kind.entry(e.label()).or_default() += 1;
                ("error", Some(e.label()), Some(e.to_string()))
            }
        };
        let us = eval.elapsed.as_secs_f64() * 1e6;
        self.fuel.push(eval.fuel);
        self.micros.push(us);
        if self.results.len() < self.max_results {
            self.results.push(json!({
                "index": i,
                "event_id": event.event_id.to_string(),
                "event_type": event.event_type.as_str(),
                "bucket": event.bucket,
                "key": event.key,
                "verdict": verdict,
                "error_kind": kind,
                "error": message,
                "fuel": eval.fuel,
                "time_us": round(us),
                "logs": eval.logs,
                "logs_dropped": eval.logs_dropped,
            }));
        }
    }

    fn report(mut self, version: &VersionRecord, source: Value) -> Value {
        self.fuel.sort_unstable();
        self.micros.sort_by(f64::total_cmp);
        let n = self.fuel.len();
        let pick = |q: f64| ((n as f64 - 1.0) * q).round() as usize;
        let time = (n > 0).then(|| {
            json!({"median": round(self.micros[pick(0.5)]), "p99": round(self.micros[pick(0.99)]),
                   "max": round(self.micros[n - 1])})
        });
        let fuel = (n > 0).then(|| {
            json!({"median": self.fuel[pick(0.5)], "p99": self.fuel[pick(0.99)],
                   "max": self.fuel[n - 1]})
        });
        json!({
            "filter": version.name,
            "version": version.version,
            "source": source,
            "evaluated": n,
            "kept": self.kept,
            "dropped": self.dropped,
            "errors": self.errors,
            "errors_by_kind": self.by_kind,
            "match_rate": if n == 0 { 0.0 } else { self.kept as f64 / n as f64 },
            "fuel": fuel,
            "time_us": time,
            "results_truncated": n > self.results.len(),
            "results": self.results,
        })
    }
}
