//! WASM filters: user modules that decide, per event, whether a subscription keeps it. The
//! contract is `plugins/ABI.md` (a core-module ABI, version 1).
//!
//! # Layout
//! - `engine.rs`: the one wasmtime engine (fuel, epochs, pooling allocator) and its linker.
//! - `module.rs`: checking a module against the ABI and the limits, compiling it once.
//! - `instance.rs`: an instance reused across events; evaluation with per-event budgets.
//! - `host.rs`: the `tidemark` host functions and what a store holds.
//! - `limits.rs`: memory, fuel, time, size and compile-time limits.
//! - `store.rs`: versions on `_config`, module bytes, the compiled-module caches.
//! - `artifact.rs`: precompiled machine code on disk (the crate's one `unsafe`).
//! - `stats.rs`: counters and histograms per filter version.

mod artifact;
mod engine;
mod error;
mod host;
mod instance;
mod limits;
mod module;
pub mod stats;
pub mod store;

pub use engine::FilterEngine;
pub use error::{Error, Result};
pub use instance::{Evaluation, FilterInstance, Verdict};
pub use limits::Limits;
pub use module::{FilterModule, SUPPORTED_ABI};
pub use stats::FilterStats;
pub use store::{Filters, LimitsRequest, VersionRecord, parse_reference};

#[cfg(test)]
mod tests;
