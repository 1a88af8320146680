//! `GET /v1/watch` (Server-Sent Events) and `GET /v1/watch/ws` (WebSocket): live changes of
//! the `objects` topic, filtered as a subscription's, resumable by event id. See docs/watch.md.
//!
//! # Layout
//! - `watch/cursor.rs`: resume cursors (the `id` of every event).
//! - `watch/hub.rs`: the node's one live reader of the log, shared by every watcher.
//! - `watch/pump.rs`: one watcher: history, live changes, its bounded buffer, cut-offs.
//! - `watch/ws.rs`: the WebSocket framing.
//!
//! Everything about a request is checked before the stream starts: a bad parameter is a 400
//! naming it, never an error event.

mod cursor;
mod hub;
mod pump;
mod ws;

pub use hub::Hub;
pub use ws::watch_ws;

use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use serde::Deserialize;
use tidemark_core::OBJECTS_TOPIC;
use tidemark_core::rules::{Limits, Rule, RuleSpec};
use tidemark_sinks::filtering::{
    DEFAULT_QUARANTINE_AFTER, FilterContext, Filtering, OnFilterError,
};

use super::State;
use super::error::ApiError;
use cursor::Cursor;
use pump::{Feed, Frame, Options};

/// The query of both watch endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    /// Only this bucket (absent: every bucket).
    bucket: Option<String>,
    /// Only keys starting with this.
    prefix: Option<String>,
    /// Event types, comma separated: names or families (`ObjectCreated:*`).
    events: Option<String>,
    /// `now` (default), `earliest`, or an event's id. The `Last-Event-ID` header wins.
    since: Option<String>,
    /// Idle time before a `: heartbeat` comment (SSE) or a ping (WebSocket).
    heartbeat_ms: Option<u64>,
    /// Only key, type, bucket, version id, sequence and time in each event.
    #[serde(default)]
    notify_only: bool,
    /// Rules as a subscription's `rules` (JSON).
    rules: Option<String>,
    /// A WASM filter, `NAME` or `NAME@VERSION`, as a subscription's.
    filter: Option<String>,
}

/// A watcher ready to stream: checked, subscribed, positioned.
pub(crate) async fn open(
    state: &super::AppState,
    query: WatchQuery,
    last_event_id: Option<&str>,
) -> Result<Feed, ApiError> {
    let hub = &state.watch;
    let heartbeat = match query.heartbeat_ms {
        Some(ms) if !(100..=3_600_000).contains(&ms) => {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                "heartbeat_ms",
                "must be between 100 and 3600000 (milliseconds)",
            ));
        }
        Some(ms) => Duration::from_millis(ms),
        None => Duration::from_secs(15),
    };
    let rule = rule_of(&query)?;
    let filter = match query.filter.as_deref().filter(|f| !f.is_empty()) {
        Some(reference) => Some(filter_of(state, reference)?),
        None => None,
    };
    let (field, since) = match last_event_id {
        Some(id) => ("Last-Event-ID", id.trim()),
        None => ("since", query.since.as_deref().unwrap_or("now")),
    };
    let bad = |message: String| ApiError::field(StatusCode::BAD_REQUEST, field, message);
    let parsed = match since {
        "now" | "earliest" => None,
        text => Some(Cursor::parse(text, hub.partitions).map_err(bad)?),
    };
    // Subscribe first, then read the log's end: nothing falls between history and live.
    let rx = hub.subscribe().await?;
    let mut joined = Vec::new();
    let mut starts = Vec::new();
    for p in 0..hub.partitions {
        let range = hub.log.offsets(OBJECTS_TOPIC, p).await?;
        joined.push(range.end);
        starts.push(range.start);
    }
    let from = match (since, parsed) {
        (_, Some(cursor)) => {
            for (p, at) in cursor.0.iter().enumerate() {
                if *at < starts[p] {
                    return Err(bad(format!(
                        "events before offset {} of partition {p} were removed by retention \
                         after this cursor; resume with since=earliest (or now)",
                        starts[p]
                    )));
                }
                if *at > joined[p] {
                    return Err(bad(format!(
                        "the cursor is past the end of partition {p} ({}); it is not from this \
                         server's log",
                        joined[p]
                    )));
                }
            }
            cursor
        }
        ("earliest", None) => Cursor(starts),
        _ => Cursor(joined.clone()),
    };
    let options = Options {
        rule,
        filter,
        notify_only: query.notify_only,
        heartbeat,
    };
    Ok(pump::start(hub.clone(), options, from, joined, rx))
}

/// The watcher's filter, run as a subscription's (same resolution, verdicts, quarantine) with
/// nothing delivered anywhere: an event the filter fails on is skipped (a watcher is a
/// notification stream; the failure shows in the filter's metrics). Refused, naming
/// `filter`, when the reference does not resolve to an uploaded version.
fn filter_of(state: &super::AppState, reference: &str) -> Result<Filtering, ApiError> {
    let filters = state.node.filters.clone();
    filters
        .resolve(reference)
        .map_err(|e| ApiError::field(StatusCode::BAD_REQUEST, "filter", e.to_string()))?;
    Ok(Filtering::new(Arc::new(FilterContext {
        name: format!("watch:{reference}"),
        reference: reference.to_string(),
        params: None,
        on_error: OnFilterError::Skip,
        quarantine_after: DEFAULT_QUARANTINE_AFTER,
        filters,
        stats: Default::default(),
    })))
}

/// The query's bucket, prefix, event types and rules as one rule; errors name the parameter.
fn rule_of(query: &WatchQuery) -> Result<Rule, ApiError> {
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let mut spec = RuleSpec {
        buckets: nonempty(&query.bucket).into_iter().collect(),
        prefix: nonempty(&query.prefix).into_iter().collect(),
        events: query
            .events
            .iter()
            .flat_map(|e| e.split(','))
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect(),
        ..Default::default()
    };
    if let Some(events) = &query.events
        && spec.events.is_empty()
        && !events.is_empty()
    {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "events",
            "names no event type",
        ));
    }
    // Named without the `query.` prefix: the fields are the query's parameters.
    Rule::compile(&spec, "query", Limits::default()).map_err(|e| match e {
        tidemark_core::Error::Invalid { field, message } => ApiError::field(
            StatusCode::BAD_REQUEST,
            field.trim_start_matches("query."),
            message,
        ),
        other => other.into(),
    })?;
    if let Some(text) = query.rules.as_deref().filter(|r| !r.is_empty()) {
        let rules: RuleSpec = tidemark_core::error::parse_json(text.as_bytes()).map_err(|e| {
            let message = e.to_string();
            let message = message
                .strip_prefix("body: ")
                .unwrap_or(&message)
                .to_string();
            ApiError::field(StatusCode::BAD_REQUEST, "rules", message)
        })?;
        Rule::compile(&rules, "rules", Limits::default())?;
        spec.all.push(rules);
    }
    Ok(Rule::compile(&spec, "rules", Limits::default())?)
}

/// `GET /v1/watch`: Server-Sent Events.
pub async fn watch(
    state: State,
    headers: HeaderMap,
    query: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(query) = query?;
    let last = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError::field(StatusCode::BAD_REQUEST, "Last-Event-ID", "is not text")
            })
        })
        .transpose()?;
    let feed = open(&state, query, last).await?;
    let stream = futures::stream::unfold(Some(feed), |feed| async move {
        let mut feed = feed?;
        let frame = feed.next().await?;
        let last = matches!(frame, Frame::Error(_));
        Some((Ok(sse_event(frame)), (!last).then_some(feed)))
    });
    Ok(Sse::new(stream))
}

fn sse_event(frame: Frame) -> Event {
    match frame {
        Frame::Event {
            id,
            event_type,
            data,
        } => Event::default().id(id).event(event_type).data(&*data),
        Frame::Heartbeat => Event::default().comment("heartbeat"),
        Frame::Error(data) => Event::default().event("error").data(data.to_string()),
    }
}

/// The watch gauges and counters, for `/metrics`.
pub fn metrics(out: &mut String, hub: &Hub) {
    let s = &hub.stats;
    let _ = write!(
        out,
        "# HELP tidemark_watch_connections Open live watch streams (SSE and WebSocket).\n\
         # TYPE tidemark_watch_connections gauge\n\
         tidemark_watch_connections {}\n\
         # HELP tidemark_watch_disconnects_total Watchers cut off, by reason (lag: fell behind \
         --watch-max-lag-events; stalled: read nothing for a minute, or the filter stopped).\n\
         # TYPE tidemark_watch_disconnects_total counter\n\
         tidemark_watch_disconnects_total{{reason=\"lag\"}} {}\n\
         tidemark_watch_disconnects_total{{reason=\"stalled\"}} {}\n\
         # HELP tidemark_watch_tailers Log partitions read live for watchers (none while \
         nobody watches).\n\
         # TYPE tidemark_watch_tailers gauge\n\
         tidemark_watch_tailers {}\n",
        s.connections.load(Ordering::Relaxed),
        s.cut_lag.load(Ordering::Relaxed),
        s.cut_stalled.load(Ordering::Relaxed),
        hub.tailers(),
    );
}

/// Graceful shutdown must not wait on streams that never end.
pub fn close(hub: &Arc<Hub>) {
    hub.close();
}
