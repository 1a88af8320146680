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
