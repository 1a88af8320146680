//! Admitting a filtered subscription against the server's filter memory budget
//! (`serve --filter-memory-budget-bytes`) when it is created or replaced: it runs one filter
//! instance per partition of `objects`, each reserving its version's `memory_bytes`, and
//! the subscriptions already there hold theirs. A node on Kafka runs only the partitions it
//! is given, but any node may be given all of them, so every node is counted as if it were.
//!
//! Admission is about subscriptions; at run time every instance (live watchers, replays and
//! filter tests too) reserves its memory from the same budget, and one that finds no room
//! waits as "capacity" (`plugins/src/budget.rs`) instead of failing its filter.

use tidemark_core::OBJECTS_TOPIC;
use tidemark_plugins::VersionRecord;
use tidemark_plugins::budget::bytes_text;

use super::Subscriptions;
use super::spec::SubscriptionSpec;
use crate::{Error, Result};

/// What subscriptions other than `except` need from the budget now, and how many they are.
fn held(subs: &Subscriptions, except: &str, partitions: usize) -> (usize, usize) {
    let mut total = 0usize;
    let mut count = 0;
    for s in subs.list() {
        if s.name() == except || s.stored.disabled.is_some() {
            continue;
        }
        let Some(reference) = &s.stored.spec.filter else {
            continue;
        };
        // A filter that does not resolve runs no instance until it does.
        if let Ok(v) = subs.filters.resolve(reference) {
            total = total.saturating_add(v.limits.memory_bytes.saturating_mul(partitions));
            count += 1;
        }
    }
    (total, count)
}

/// Refuse `spec` (whose filter resolves to `version`) when its instances would not fit in
/// the budget next to the other subscriptions', naming the field, the budget, what is held
/// and what it needs.
pub(super) fn admit(
    subs: &Subscriptions,
    spec: &SubscriptionSpec,
    version: &VersionRecord,
) -> Result<()> {
    let budget = subs.filters.engine.budget.limit();
    let partitions = subs.log.partitions(OBJECTS_TOPIC)? as usize;
    let per_instance = version.limits.memory_bytes;
    let needs = per_instance.saturating_mul(partitions);
    let (held, count) = held(subs, &spec.name, partitions);
    if held.saturating_add(needs) <= budget {
        return Ok(());
    }
    Err(Error::OverBudget {
        field: "filter".into(),
        message: format!(
            "{} needs {} of filter memory ({} per instance, one instance per partition of \
             {partitions}), but the server's filter memory budget is {} \
             (--filter-memory-budget-bytes) and {} subscription(s) hold {} of it ({} free); \
             upload the filter with a smaller memory_bytes, remove a filtered subscription, \
             or raise the budget",
            version.reference(),
            bytes_text(needs),
            bytes_text(per_instance),
            bytes_text(budget),
            count,
            bytes_text(held),
            bytes_text(budget.saturating_sub(held)),
        ),
    })
}
