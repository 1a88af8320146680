//! WASM filtering with only what it needs: a [`FilterContext`] (who filters, with which
//! reference, parameters, error policy and quarantine threshold, the filter store, where to
//! count). A subscription's partition readers, its replays and a live watcher (`GET
//! /v1/watch?filter=`) each build one and run a [`Filtering`] over it.
//!
//! # Layout
//! - `state.rs`: [`Filtering`]: the version in use (resolved again when the catalog
//!   changes), verdicts, counts, quarantine.

mod state;

pub use state::{Filtering, RETRY};

use std::sync::Arc;

use tidemark_plugins::Filters;

use crate::stats::Stats;

/// Failures in a row that quarantine a version, unless a subscription says otherwise.
pub const DEFAULT_QUARANTINE_AFTER: u32 = 20;

/// What filtering needs, and nothing else.
pub struct FilterContext {
    /// Who filters: a subscription's name, or `watch:REFERENCE`. Logs name it.
    pub name: String,
    /// `NAME` (its latest version, followed as new ones are uploaded) or `NAME@VERSION`.
    pub reference: String,
    /// Handed to the module's `init` (JSON text).
    pub params: Option<String>,
    /// What becomes of an event the filter fails on.
    pub on_error: OnFilterError,
    /// Failures in a row after which the version is quarantined for this filterer.
    pub quarantine_after: u32,
    /// The filter store: versions, compiled modules, per-version statistics.
    pub filters: Arc<Filters>,
    /// Where verdicts and the filter's state are counted (status, metrics).
    pub stats: Arc<Stats>,
}

/// `on_filter_error`: what becomes of an event the filter failed on (trap, timeout, memory
/// limit, error code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFilterError {
    /// Into the dead-letter queue (a subscription's default).
    DeadLetter,
    /// Passed over (counted).
    Skip,
    /// Kept, as if the filter had kept it.
    Deliver,
}

impl OnFilterError {
    /// From a subscription's `on_filter_error`, checked when it was created.
    pub fn parse(text: &str) -> OnFilterError {
        match text {
            "skip" => OnFilterError::Skip,
            "deliver" => OnFilterError::Deliver,
            _ => OnFilterError::DeadLetter,
        }
    }
}

/// What the filter decided about one event.
pub enum Decision {
    Keep,
    Drop,
    /// The filter failed on it: the kind (`trap`, `timeout`, ...) and the message.
    Failed(&'static str, String),
}
