//! What the workers of one run of a subscription share (its live delivery, a replay, a
//! redrive), and building it from the catalog's subscription.

use std::collections::BTreeMap;
use std::sync::Arc;

use tidemark_core::codec::EventCodec;
use tidemark_core::log::Log;
use tidemark_core::rules::Rule;

use super::Engine;
use super::circuit::Circuit;
use super::dead_letters::DeadLetters;
use super::replay::ReplayMark;
use crate::Result;
use crate::filtering::{FilterContext, OnFilterError};
use crate::sink::{LiveObjects, Sink, SinkKind, StreamSink};
use crate::stats::{FilterStatus, Stats};
use crate::subscription::Subscription;
use crate::subscription::spec::SubscriptionSpec;

/// Everything the workers of one running subscription share.
pub(crate) struct RunCtx {
    pub name: String,
    /// The log consumer whose committed offsets are the subscription's position.
    pub consumer: String,
    pub spec: SubscriptionSpec,
    pub start_offsets: BTreeMap<u32, u64>,
    pub rule: Rule,
    /// The WASM filter, when the subscription names one.
    pub filter: Option<Arc<FilterContext>>,
    /// What consumes the partitions' matches.
    pub target: Target,
    pub stats: Arc<Stats>,
    pub dead_letters: Arc<DeadLetters>,
    pub log: Arc<dyn Log>,
    pub codec: Arc<EventCodec>,
    /// Set when this run re-delivers a range for a replay job (its position is not kept).
    pub replay: Option<Arc<ReplayMark>>,
    /// This node's index, for stream sinks that start a state table from it.
    pub objects: Option<Arc<dyn LiveObjects>>,
}

/// The sink of a run, as the engine drives it.
pub(crate) enum Target {
    /// Delivered event by event (or batch), with retries, a circuit and dead letters.
    Request(Requests),
    /// Handed each partition's stream; commits positions itself.
    Stream(Arc<dyn StreamSink>),
}

impl Target {
    pub fn endpoint(&self) -> &str {
        match self {
            Target::Request(to) => to.sink.endpoint(),
            Target::Stream(s) => s.endpoint(),
        }
    }
}

/// A request sink and the circuit breaker of its endpoint.
#[derive(Clone)]
pub(crate) struct Requests {
    pub sink: Arc<dyn Sink>,
    pub circuit: Arc<Circuit>,
}

impl Engine {
    /// The run of `sub`: its sink built now (secrets resolved), for its live delivery, or for
    /// `replay` (with counters of its own, so the subscription's status stays the live one).
    pub(crate) fn context(
        &self,
        sub: &Subscription,
        replay: Option<Arc<ReplayMark>>,
    ) -> Result<RunCtx> {
        let replay_id = replay.as_ref().map(|r| r.id.as_str());
        let sink = self
            .kinds
            .build(&sub.stored.spec.sink, sub.name(), replay_id)?;
        Ok(self.context_with(sub, sink, replay))
    }

    /// The run of `sub` with `sink` (built by [`Engine::context`], or a test's own).
    pub(crate) fn context_with(
        &self,
        sub: &Subscription,
        sink: SinkKind,
        replay: Option<Arc<ReplayMark>>,
    ) -> RunCtx {
        let target = match sink {
            SinkKind::Request(sink) => Target::Request(Requests {
                circuit: self.circuits.get(sink.endpoint()),
                sink,
            }),
            SinkKind::Stream(s) => Target::Stream(s),
        };
        let spec = &sub.stored.spec;
        let stats = match replay {
            Some(_) => Arc::new(Stats::default()),
            None => self.stats_of(sub),
        };
        // A (re)started run starts its filter afresh: replacing a subscription lifts a
        // quarantine.
        *stats.filter.lock().unwrap() = FilterStatus {
            reference: spec.filter.clone().unwrap_or_default(),
            state: "starting",
            ..Default::default()
        };
        let filter = spec.filter.as_ref().map(|reference| {
            Arc::new(FilterContext {
                name: sub.name().to_string(),
                reference: reference.clone(),
                params: spec.filter_params.as_ref().map(|p| p.to_string()),
                on_error: OnFilterError::parse(&spec.on_filter_error),
                quarantine_after: spec.filter_quarantine_after,
                filters: self.subscriptions.filters().clone(),
                stats: stats.clone(),
            })
        });
        RunCtx {
            name: sub.name().to_string(),
            consumer: sub.consumer(),
            spec: spec.clone(),
            start_offsets: sub.stored.start_offsets.clone(),
            rule: sub.rule.clone(),
            filter,
            target,
            stats,
            dead_letters: self.dead_letters.clone(),
            log: self.log.clone(),
            codec: self.codec.clone(),
            replay,
            objects: self.objects.clone(),
        }
    }
}
