//! Declarative routing rules: which events a subscription (or a watcher) gets.
//!
//! # Layout
//! - `spec.rs`: the JSON form, as users write it.
//! - `compile.rs`: validation into a [`Rule`], with errors naming the field, and limits.
//! - `eval.rs`: matching a rule against an event.
//!
//! Conditions of one rule all have to hold; the values listed for one condition are
//! alternatives (`"prefix": ["a/", "b/"]` is "a/ or b/"). `all`, `any` and `not` nest rules.
//! Attribute conditions (size, content type, metadata, tags) look at the object after the
//! event, or before it when the event removed it, so a rule about `team=ml` objects also
//! sees their deletion.

mod compile;
mod eval;
mod spec;

pub use compile::{Limits, Rule};
pub use spec::RuleSpec;

#[cfg(test)]
mod tests;
