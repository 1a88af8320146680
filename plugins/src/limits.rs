//! What one filter module may use. Every limit has a server-wide default and maximum; a module
//! version may ask for less or (up to the maximum) more.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory, bytes.
    pub memory_bytes: usize,
    /// Fuel per event (roughly one unit per WebAssembly instruction).
    pub fuel: u64,
    /// Wall-clock time per event (and per `init`).
    pub deadline: Duration,
    /// Size of the module file.
    pub module_bytes: usize,
    /// Time to compile the module at upload.
    pub compile: Duration,
    /// Tables, and elements per table.
    pub tables: usize,
    pub table_elements: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 16 << 20,
            fuel: 10_000_000,
            deadline: Duration::from_millis(10),
            module_bytes: 10 << 20,
            compile: Duration::from_secs(10),
            tables: 4,
            table_elements: 10_000,
        }
    }
}

impl Limits {
    /// The largest limits the server allows any module (the pooling allocator reserves
    /// memory slots of this size).
    pub fn maxima() -> Self {
        Limits {
            memory_bytes: 256 << 20,
            fuel: 1_000_000_000,
            deadline: Duration::from_secs(1),
            module_bytes: 64 << 20,
            compile: Duration::from_secs(60),
            tables: 16,
            table_elements: 1_000_000,
        }
    }
}

/// What all filters together may use on one server, and how it compiles modules
/// (`tidemark serve --filter-memory-budget-bytes`, `--filter-max-versions`,
/// `--filter-compile-memory-bytes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Linear memory every instance together may reserve (each reserves its version's
    /// `memory_bytes`): subscriptions are admitted against it, and an instance past it waits.
    pub memory_budget_bytes: usize,
    /// Live versions kept per filter: an upload past it collects the oldest nobody uses.
    pub max_versions: u32,
    /// Where modules are compiled.
    pub compiler: crate::compile::Compiler,
}

impl ServerLimits {
    /// 1 GiB: 64 instances at the default 16 MiB (16 filtered subscriptions on 4 partitions),
    /// a small part of an ordinary 8-24 GiB node.
    pub const DEFAULT_MEMORY_BUDGET: usize = 1 << 30;
    /// Enough to roll back a few uploads; bounds what a filter's versions hold.
    pub const DEFAULT_MAX_VERSIONS: u32 = 10;
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            memory_budget_bytes: Self::DEFAULT_MEMORY_BUDGET,
            max_versions: Self::DEFAULT_MAX_VERSIONS,
            compiler: crate::compile::Compiler::InProcess,
        }
    }
}
