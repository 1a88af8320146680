//! WASM filters: user modules that decide, per event, whether a subscription keeps it. The
//! contract is `plugins/ABI.md` (a core-module ABI, version 1).
//!
//! # Layout
//! - `engine.rs`: the one wasmtime engine (fuel, epochs, pooling allocator) and its linker.
//! - `module.rs`: checking a module against the ABI and the limits, compiling it once.
//! - `instance.rs`: an instance reused across events; evaluation with per-event budgets.
//! - `host.rs`: the `tidemark` host functions and what a store holds.
//! - `limits.rs`: memory, fuel, time, size and compile-time limits.
//!
//! Not yet: upload and versions on `_config`, precompiled artifacts on disk, attaching filters
//! to subscriptions, the SDKs (see the WASM filter issue).

mod engine;
mod error;
mod host;
mod instance;
mod limits;
mod module;

pub use engine::FilterEngine;
pub use error::{Error, Result};
pub use instance::{Evaluation, FilterInstance, Verdict};
pub use limits::Limits;
pub use module::{FilterModule, SUPPORTED_ABI};

#[cfg(test)]
mod tests;
