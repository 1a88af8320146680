//! One filterer's WASM filter as it runs: after the rules, each matching event goes through
//! the module, and the verdict decides whether it is kept.
//!
//! The reference (`NAME` or `NAME@VERSION`) is resolved again whenever the catalog changes,
//! between chunks of the log: a new version takes over at a clean point (every event is
//! decided by exactly one version, in log order), without a restart. A filterer whose filter
//! keeps failing is quarantined: its readers stop handing events over (nothing is skipped)
//! until another version is resolved or the subscription is replaced. A filterer whose
//! instance finds no room on the server (the filter memory budget, the instance slots)
//! waits as `capacity` and tries again: the filter did nothing wrong, so nothing is counted
//! against it and it is never quarantined for that.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tidemark_core::event::ObjectEvent;
use tidemark_plugins::{Decided, FilterInstance, FilterStats, Verdict, VersionRecord};

use super::{Decision, FilterContext, OnFilterError};

struct Current {
    version: VersionRecord,
    instance: FilterInstance,
    stats: Arc<FilterStats>,
}

/// A filter as one reader (or watcher) runs it.
pub struct Filtering {
    ctx: Arc<FilterContext>,
    current: Option<Current>,
    /// The catalog position the reference was last resolved at.
    resolved_at: Option<u64>,
    /// Counted in the status's `waiting_for_capacity` now.
    waiting_for_capacity: bool,
}

impl Filtering {
    pub fn new(ctx: Arc<FilterContext>) -> Filtering {
        Filtering {
            ctx,
            current: None,
            resolved_at: None,
            waiting_for_capacity: false,
        }
    }

    pub fn context(&self) -> &FilterContext {
        &self.ctx
    }

    /// Decide on `events` in order, as a watcher uses a filter: `Ok(keep)` per event (an
    /// event the filter fails on is kept or not as the error policy says), or `Err(reason)`
    /// when the filter is unavailable or quarantined now (the caller waits and asks again,
    /// skipping nothing).
    pub async fn keep(&mut self, events: Vec<Arc<ObjectEvent>>) -> Result<Vec<bool>, String> {
        self.prepare().await?;
        let n = events.len();
        let decisions = self.decide(events).await;
        if decisions.len() < n {
            return Err("the filter was quarantined".into());
        }
        let deliver_failed = self.ctx.on_error == OnFilterError::Deliver;
        Ok(decisions
            .into_iter()
            .map(|d| match d {
                Decision::Keep => true,
                Decision::Drop => false,
                Decision::Failed(..) => deliver_failed,
            })
            .collect())
    }

    /// Make sure the version the reference names now is instantiated. `Err` says why no
    /// event may be filtered now (the reader waits and asks again).
    pub async fn prepare(&mut self) -> Result<(), String> {
        let ctx = self.ctx.clone();
        let ctx = ctx.as_ref();
        let at = ctx.filters.catalog_position();
        if self.resolved_at == Some(at) && self.current.is_some() {
            return self.check_quarantine(ctx);
        }
        let version = match ctx.filters.resolve(&ctx.reference) {
            Ok(v) => v,
            Err(e) => return Err(self.unavailable(ctx, e.to_string())),
        };
        self.resolved_at = Some(at);
        if self.current.as_ref().map(|c| &c.version) == Some(&version) {
            return self.check_quarantine(ctx);
        }
        if quarantined(ctx) == Some(version.version) {
            return Err("quarantined".into());
        }
        let module = match ctx.filters.module(&version).await {
            Ok(m) => m,
            Err(e) => {
                self.current = None;
                return Err(self.unavailable(ctx, format!("{}: {e}", version.reference())));
            }
        };
        // The old version's instance goes first: its memory counts against the budget.
        self.current = None;
        let params = ctx.params.clone();
        let made =
            tokio::task::spawn_blocking(move || FilterInstance::new(module, params.as_deref()))
                .await
                .map_err(|e| e.to_string())?;
        let stats = ctx.filters.stats(&version.name, version.version);
        match made {
            Ok(instance) => {
                tracing::info!(
                    subscription = ctx.name,
                    filter = version.reference(),
                    "filtering with this version"
                );
                self.set_waiting_for_capacity(false);
                let mut status = ctx.stats.filter.lock().unwrap();
                status.version = Some(version.version);
                if status.quarantined != Some(version.version) {
                    status.quarantined = None;
                    status.consecutive_errors = 0;
                    // While another partition waits for room, the state says so.
                    if status.waiting_for_capacity == 0 {
                        status.state = "active";
                        status.reason = None;
                    }
                }
                drop(status);
                self.current = Some(Current {
                    version,
                    instance,
                    stats,
                });
                self.check_quarantine(ctx)
            }
            Err(e @ tidemark_plugins::Error::Capacity(_)) => {
                self.current = None;
                Err(self.no_room(ctx, &version, e.to_string()))
            }
            Err(e) => {
                // Parameters the module refuses: no event could be filtered with it.
                stats.error(e.label());
                self.current = None;
                ctx.stats.filter.lock().unwrap().version = Some(version.version);
                let reason = format!("{} cannot start: {e}", version.reference());
                quarantine(ctx, version.version, e.label(), reason.clone());
                Err(reason)
            }
        }
    }

    fn check_quarantine(&self, ctx: &FilterContext) -> Result<(), String> {
        let version = self.current.as_ref().map(|c| c.version.version);
        match quarantined(ctx) {
            Some(q) if Some(q) == version => Err("quarantined".into()),
            _ => Ok(()),
        }
    }

    /// No room for an instance now: wait as `capacity`, counting nothing against the filter.
    fn no_room(&mut self, ctx: &FilterContext, version: &VersionRecord, why: String) -> String {
        self.set_waiting_for_capacity(true);
        let reason = format!(
            "{} waits for room on the server: {why}",
            version.reference()
        );
        let mut status = ctx.stats.filter.lock().unwrap();
        status.version = Some(version.version);
        if status.state != "capacity" {
            tracing::warn!(subscription = ctx.name, "{reason}; delivery waits");
        }
        if status.quarantined != Some(version.version) {
            status.state = "capacity";
            status.reason = Some(reason.clone());
        }
        reason
    }

    fn set_waiting_for_capacity(&mut self, waiting: bool) {
        if self.waiting_for_capacity == waiting {
            return;
        }
        self.waiting_for_capacity = waiting;
        let mut status = self.ctx.stats.filter.lock().unwrap();
        if waiting {
            status.waiting_for_capacity += 1;
        } else {
            status.waiting_for_capacity = status.waiting_for_capacity.saturating_sub(1);
        }
    }

    fn unavailable(&self, ctx: &FilterContext, reason: String) -> String {
        let mut status = ctx.stats.filter.lock().unwrap();
        if status.reason.as_deref() != Some(reason.as_str()) {
            tracing::error!(
                subscription = ctx.name,
                "the filter is unavailable: {reason}; delivery waits"
            );
        }
        status.state = "unavailable";
        status.reason = Some(reason.clone());
        reason
    }

    /// Decide on `events` in order, on a blocking thread (a module may run up to its
    /// deadline). Stops after the event that quarantines the filter: the decisions returned
    /// may be fewer than the events.
    pub async fn decide(&mut self, events: Vec<Arc<ObjectEvent>>) -> Vec<Decision> {
        let Some(mut current) = self.current.take() else {
            return Vec::new();
        };
        let ctx2 = self.ctx.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut decisions = Vec::with_capacity(events.len());
            // A v1 module is called per event, a v2 module per batch of these.
            'calls: for chunk in events.chunks(current.instance.batch_size()) {
                // Another partition's reader may have quarantined this version meanwhile.
                if quarantined(&ctx2) == Some(current.version.version) {
                    break;
                }
                let evals = match current.instance.decide(chunk) {
                    Decided::Verdicts {
                        verdicts,
                        fuel,
                        elapsed,
                        ..
                    } => {
                        // The common case: counted per call, nothing built per event.
                        current.stats.record_verdicts(verdicts, fuel, elapsed);
                        record_verdicts(&ctx2, verdicts);
                        decisions.extend(verdicts.iter().map(|b| match b {
                            1 => Decision::Keep,
                            _ => Decision::Drop,
                        }));
                        continue;
                    }
                    Decided::Each(evals) => evals,
                };
                for eval in evals {
                    current.stats.record(&eval);
                    let (decision, failed) = match eval.verdict {
                        Ok(Verdict::Keep) => (Decision::Keep, false),
                        Ok(Verdict::Drop) => (Decision::Drop, false),
                        Err(e) => (Decision::Failed(e.label(), e.to_string()), true),
                    };
                    let stop = record(&ctx2, &current.version, &decision, failed);
                    decisions.push(decision);
                    if stop {
                        break 'calls;
                    }
                }
            }
            (current, decisions)
        })
        .await;
        match joined {
            Ok((current, decisions)) => {
                self.current = Some(current);
                decisions
            }
            Err(e) => {
                tracing::error!(subscription = self.ctx.name, "filter thread failed: {e}");
                Vec::new()
            }
        }
    }
}

impl Drop for Filtering {
    fn drop(&mut self) {
        self.set_waiting_for_capacity(false);
    }
}

/// Count a call's keep (1) and drop (0) verdicts in the filterer's status: no error, so the
/// run of consecutive errors ends.
fn record_verdicts(ctx: &FilterContext, verdicts: &[u8]) {
    let dropped = verdicts.iter().filter(|b| **b == 0).count() as u64;
    ctx.stats.filtered_out.fetch_add(dropped, Ordering::Relaxed);
    ctx.stats.filter.lock().unwrap().consecutive_errors = 0;
}

/// Count a decision in the filterer's status; true when it quarantines the filter.
fn record(ctx: &FilterContext, version: &VersionRecord, decision: &Decision, failed: bool) -> bool {
    match decision {
        Decision::Drop => {
            ctx.stats.filtered_out.fetch_add(1, Ordering::Relaxed);
        }
        Decision::Failed(..) => {
            ctx.stats.filter_failed.fetch_add(1, Ordering::Relaxed);
        }
        Decision::Keep => {}
    }
    let mut status = ctx.stats.filter.lock().unwrap();
    if !failed {
        status.consecutive_errors = 0;
        return false;
    }
    let Decision::Failed(kind, message) = decision else {
        return false;
    };
    *status.errors.entry(kind).or_default() += 1;
    status.consecutive_errors += 1;
    let limit = ctx.quarantine_after;
    if status.consecutive_errors < limit {
        return false;
    }
    drop(status);
    quarantine(
        ctx,
        version.version,
        kind,
        format!(
            "{} failed on {limit} events in a row (last: {message}); delivery waits for \
             another version or a replaced subscription",
            version.reference()
        ),
    );
    true
}

fn quarantined(ctx: &FilterContext) -> Option<u32> {
    ctx.stats.filter.lock().unwrap().quarantined
}

fn quarantine(ctx: &FilterContext, version: u32, kind: &'static str, reason: String) {
    tracing::error!(
        subscription = ctx.name,
        kind,
        "filter quarantined: {reason}"
    );
    let mut status = ctx.stats.filter.lock().unwrap();
    if kind == "init" {
        *status.errors.entry(kind).or_default() += 1;
    }
    status.state = "quarantined";
    status.reason = Some(reason);
    status.quarantined = Some(version);
}

/// How long a reader waits before asking a paused filter again.
pub const RETRY: Duration = Duration::from_millis(250);
