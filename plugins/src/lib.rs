//! WASM filters: user modules that decide, per event, whether a subscription keeps it. The
//! contract is `plugins/ABI.md` (a core-module ABI: version 1, one call per event; version 2,
//! one call per batch).
//!
//! # Layout
//! - `engine.rs`: the one wasmtime engine (fuel, epochs, pooling allocator) and its linker.
//! - `module.rs`: checking a module against the ABI and the limits, compiling it once.
//! - `compile.rs`: compiling in a child process under address-space and CPU limits, killed at
//!   the compile deadline (what a server does; tests compile in process).
//! - `budget.rs`: the server-wide budget of instance memory; no room is `Error::Capacity`.
//! - `instance.rs`: an instance reused across events; evaluation with per-event budgets.
//! - `host.rs`: the `tidemark` host functions and what a store holds.
//! - `batch.rs`: ABI v2's batch layout in the module's memory.
//! - `limits.rs`: memory, fuel, time, size and compile-time limits per module; what all
//!   filters together may use on a server.
//! - `store.rs`: versions on `_config`, module bytes, the compiled-module caches.
//! - `version_cap.rs`: which versions an upload past the version cap collects.
//! - `artifact.rs`: precompiled machine code on disk (the crate's one `unsafe`).
//! - `stats.rs`: counters and histograms per filter version.

mod artifact;
mod batch;
pub mod budget;
pub mod compile;
mod engine;
mod error;
mod host;
mod instance;
mod limits;
mod module;
pub mod stats;
pub mod store;
mod version_cap;

pub use compile::Compiler;
pub use engine::FilterEngine;
pub use error::{Error, Result};
pub use instance::{Decided, Evaluation, FilterInstance, Verdict};
pub use limits::{Limits, ServerLimits};
pub use module::{FilterModule, SUPPORTED_ABI};
pub use stats::FilterStats;
pub use store::{Filters, LimitsRequest, Users, VersionRecord, parse_reference};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_v2;
