//! A subscription's WASM filter, borrowed by a live watcher (`GET /v1/watch?filter=`): the
//! same resolution, instantiation, verdicts and quarantine as a subscription's reader, with
//! nothing delivered anywhere and no dead letters (an event the filter fails on is skipped:
//! a watcher is a notification stream, and the failure is counted in the filter's metrics).

use std::sync::Arc;

use tidemark_core::event::ObjectEvent;
use tidemark_core::rules::{Limits, Rule, RuleSpec};

use super::filtering::{Decision, Filtering};
use super::{Engine, RunCtx};
use crate::sink::{Delivery, SendError, Sink};
use crate::subscription::spec::SubscriptionSpec;
use crate::{Error, Result};

/// Never called: a watcher's context only feeds its filter.
struct NoSink;

impl Sink for NoSink {
    fn endpoint(&self) -> &str {
        "watch:"
    }

    fn send<'a>(
        &'a self,
        _batch: &'a [Arc<Delivery>],
        _attempt: u32,
    ) -> futures::future::BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async { Err(SendError::retry("a watcher has no sink")) })
    }
}

/// One watcher's filter.
pub struct WatchFilter {
    ctx: Arc<RunCtx>,
    filtering: Filtering,
}

impl WatchFilter {
    /// Decide on `events` in order: `Ok(keep)` per event, or `Err(reason)` when the filter is
    /// unavailable or quarantined now (the caller waits and asks again, skipping nothing).
    pub async fn keep(
        &mut self,
        events: Vec<Arc<ObjectEvent>>,
    ) -> std::result::Result<Vec<bool>, String> {
        self.filtering.prepare(&self.ctx).await?;
        let n = events.len();
        let decisions = self.filtering.decide(&self.ctx, events).await;
        if decisions.len() < n {
            return Err("the filter was quarantined".into());
        }
        Ok(decisions
            .into_iter()
            .map(|d| matches!(d, Decision::Keep))
            .collect())
    }
}

impl Engine {
    /// A filter for a watcher, `reference` being `NAME` or `NAME@VERSION`; refused (naming
    /// the field `filter`) when it does not resolve to an uploaded version.
    pub fn watch_filter(&self, reference: &str) -> Result<WatchFilter> {
        let filters = self.subscriptions.filters().clone();
        filters
            .resolve(reference)
            .map_err(|e| Error::invalid("filter", e.to_string()))?;
        let spec: SubscriptionSpec = serde_json::from_value(serde_json::json!({
            "name": "watch",
            "filter": reference,
            "on_filter_error": "skip",
            "sink": {"type": "webhook", "url": "http://watch.invalid/"},
        }))
        .map_err(|e| Error::invalid("filter", e.to_string()))?;
        let ctx = Arc::new(RunCtx {
            name: format!("watch:{reference}"),
            consumer: String::new(),
            spec,
            start_offsets: Default::default(),
            rule: Rule::compile(&RuleSpec::default(), "rules", Limits::default())?,
            sink: Arc::new(NoSink),
            circuit: super::Circuits::default().get("watch:"),
            stats: Default::default(),
            dead_letters: self.dead_letters.clone(),
            log: self.log.clone(),
            codec: self.codec.clone(),
            filters,
            lake: None,
            replay: None,
        });
        let filtering = Filtering::new(&ctx).expect("the spec names a filter");
        Ok(WatchFilter { ctx, filtering })
    }
}
