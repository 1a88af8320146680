//! One wasmtime `Engine` per process, configured once for every filter: fuel metering and
//! epoch interruption for the per-event budgets, a bounded stack, and the pooling allocator so
//! instantiating is cheap. A background thread advances the epoch every millisecond, which is
//! what a filter's wall-clock deadline is counted in.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, Linker, PoolingAllocationConfig};

use crate::budget::MemoryBudget;
use crate::host::{self, HostState};
use crate::limits::Limits;
use crate::{Error, Result};

/// The epoch advances this often; deadlines are whole ticks.
pub const TICK: Duration = Duration::from_millis(1);

pub struct FilterEngine {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    /// The most any module may ask for.
    pub maxima: Limits,
    /// Fuel and deadlines are enforced (always, except in the benchmark that measures them).
    pub metered: bool,
    /// Linear memory every instance of this engine together may reserve.
    pub budget: Arc<MemoryBudget>,
    ticking: Arc<AtomicBool>,
}

impl FilterEngine {
    /// `slots`: how many filter instances may exist at once (pooling allocator slots).
    pub fn new(maxima: Limits, slots: u32) -> Result<Arc<FilterEngine>> {
        Self::build(maxima, slots, true)
    }

    /// An engine without fuel metering or deadlines: only for measuring what they cost.
    pub fn unmetered(maxima: Limits, slots: u32) -> Result<Arc<FilterEngine>> {
        Self::build(maxima, slots, false)
    }

    /// The key precompiled artifacts of this engine are filed under.
    pub fn artifact_key(&self) -> String {
        crate::artifact::engine_key(&self.engine)
    }

    fn build(maxima: Limits, slots: u32, metered: bool) -> Result<Arc<FilterEngine>> {
        let mut config = code_config(metered);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(slots)
            .total_memories(slots)
            .total_tables(slots)
            .max_memory_size(maxima.memory_bytes)
            .table_elements(maxima.table_elements)
            .max_tables_per_module(maxima.tables as u32);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)
            .map_err(|e| Error::Invalid(format!("cannot start the WebAssembly engine: {e:#}")))?;
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker)
            .map_err(|e| Error::Invalid(format!("cannot register the host functions: {e:#}")))?;
        let ticking = Arc::new(AtomicBool::new(true));
        {
            let (engine, ticking) = (engine.weak(), ticking.clone());
            std::thread::Builder::new()
                .name("tidemark-wasm-epoch".into())
                .spawn(move || {
                    while ticking.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        match engine.upgrade() {
                            Some(e) => e.increment_epoch(),
                            None => return,
                        }
                    }
                })
                .map_err(|e| Error::Invalid(format!("cannot start the epoch thread: {e}")))?;
        }
        Ok(Arc::new(FilterEngine {
            engine,
            linker,
            maxima,
            metered,
            budget: MemoryBudget::unlimited(),
            ticking,
        }))
    }
}

/// Every setting that shapes the machine code, and nothing else: the compile child
/// (`compile.rs`) builds its engine from this alone, so its artifacts load into the server's
/// engine (the pooling allocator only decides where instances live, not the code).
pub(crate) fn code_config(metered: bool) -> Config {
    let mut config = Config::new();
    config
        .consume_fuel(metered)
        .epoch_interruption(metered)
        .max_wasm_stack(512 << 10);
    config
}

impl Drop for FilterEngine {
    fn drop(&mut self) {
        self.ticking.store(false, Ordering::Relaxed);
    }
}
