//! A module instantiated for one subscription and reused for every event it filters (never
//! one instance per event). Each evaluation gets a fresh fuel budget and epoch deadline; a
//! trap leaves the instance's state unknown, so the next event gets a fresh instance. An
//! instance holds its share of the server's filter memory budget (`budget.rs`) while it
//! exists; without room (or a free slot of the pooling allocator) it is not made, and the
//! error is `Capacity`, not the filter's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tidemark_core::event::ObjectEvent;
use wasmtime::{Store, Trap, TypedFunc};

use crate::budget::Reservation;
use crate::engine::TICK;
use crate::host::HostState;
use crate::limits::Limits;
use crate::module::FilterModule;
use crate::{Error, Result};

/// What a filter decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Drop,
}

/// One evaluation: the verdict or why there is none, and what it cost.
#[derive(Debug)]
pub struct Evaluation {
    pub verdict: Result<Verdict>,
    pub fuel: u64,
    pub elapsed: Duration,
    pub logs: Vec<String>,
    /// Log lines beyond the per-event cap.
    pub logs_dropped: u32,
}

pub(crate) fn new_store(module: &FilterModule) -> Store<HostState> {
    let limits = &module.limits;
    let mut store = Store::new(
        &module.engine.engine,
        HostState::new(limits.memory_bytes, limits.table_elements),
    );
    store.limiter(|s| s as &mut dyn wasmtime::ResourceLimiter);
    store
}

/// Set the per-call budgets: fuel, and a deadline in epoch ticks.
pub(crate) fn arm(store: &mut Store<HostState>, module: &FilterModule) {
    if !module.engine.metered {
        return;
    }
    let limits = &module.limits;
    let _ = store.set_fuel(limits.fuel);
    let ticks = (limits.deadline.as_micros() / TICK.as_micros()).max(1) as u64;
    store.set_epoch_deadline(ticks);
}

pub struct FilterInstance {
    module: Arc<FilterModule>,
    store: Store<HostState>,
    filter: TypedFunc<(), i32>,
    params: Option<String>,
    /// Its linear memory's share of the server's budget, given back when it drops.
    _memory: Reservation,
}

impl FilterInstance {
    /// Instantiate and run `init` with `params` (JSON) when the module has one.
    pub fn new(module: Arc<FilterModule>, params: Option<&str>) -> Result<FilterInstance> {
        let memory = module.engine.budget.reserve(module.limits.memory_bytes)?;
        let (store, filter) = instantiate(&module, params)?;
        Ok(FilterInstance {
            module,
            store,
            filter,
            params: params.map(str::to_string),
            _memory: memory,
        })
    }

    /// Decide on `event`.
    pub fn evaluate(&mut self, event: Arc<ObjectEvent>) -> Evaluation {
        self.store.data_mut().begin(event);
        arm(&mut self.store, &self.module);
        let started = Instant::now();
        let result = self.filter.call(&mut self.store, ());
        let elapsed = started.elapsed();
        let fuel = match self.store.get_fuel() {
            Ok(left) => self.module.limits.fuel.saturating_sub(left),
            Err(_) => 0,
        };
        let verdict = match result {
            Ok(1) => Ok(Verdict::Keep),
            Ok(0) => Ok(Verdict::Drop),
            Ok(code) if code < 0 => Err(Error::Module(code)),
            Ok(code) => Err(Error::BadVerdict(code)),
            Err(e) => Err(classify(
                &e,
                self.store.data().memory_denied,
                &self.module.limits,
            )),
        };
        let data = self.store.data_mut();
        let logs = std::mem::take(&mut data.logs);
        let logs_dropped = std::mem::take(&mut data.logs_dropped);
        data.event = None;
        if matches!(
            verdict,
            Err(Error::Trap(_) | Error::OutOfFuel(_) | Error::Timeout(_) | Error::MemoryLimit(_))
        ) {
            // Whatever the module was doing is cut short: start the next event afresh.
            if let Ok((store, filter)) = instantiate(&self.module, self.params.as_deref()) {
                self.store = store;
                self.filter = filter;
            }
        }
        Evaluation {
            verdict,
            fuel,
            elapsed,
            logs,
            logs_dropped,
        }
    }
}

fn instantiate(
    module: &FilterModule,
    params: Option<&str>,
) -> Result<(Store<HostState>, TypedFunc<(), i32>)> {
    let mut store = new_store(module);
    // A start section runs under the same limits as an event.
    arm(&mut store, module);
    let instance = module.pre.instantiate(&mut store).map_err(|e| {
        match classify(&e, store.data().memory_denied, &module.limits) {
            capacity @ Error::Capacity(_) => capacity,
            why => Error::Trap(format!("cannot instantiate the filter: {why}")),
        }
    })?;
    let memory = instance.get_memory(&mut store, "memory");
    store.data_mut().memory = memory;
    let filter = instance
        .get_typed_func::<(), i32>(&mut store, "filter")
        .map_err(|e| Error::Trap(format!("{e:#}")))?;
    if module.has_init {
        let params = params.unwrap_or("{}").as_bytes();
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "tidemark_alloc")
            .map_err(|e| Error::Trap(format!("{e:#}")))?;
        let init = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, "init")
            .map_err(|e| Error::Trap(format!("{e:#}")))?;
        arm(&mut store, module);
        let limits = module.limits;
        let fail = |e: wasmtime::Error, s: &Store<HostState>| {
            classify(&e, s.data().memory_denied, &limits)
        };
        let len = params.len() as i32;
        let ptr = alloc.call(&mut store, len).map_err(|e| fail(e, &store))?;
        let written =
            memory.is_some_and(|m| m.write(&mut store, ptr as u32 as usize, params).is_ok());
        if !written {
            return Err(Error::Init(crate::host::OUT_OF_RANGE));
        }
        arm(&mut store, module);
        match init
            .call(&mut store, (ptr, len))
            .map_err(|e| fail(e, &store))?
        {
            0 => {}
            code => return Err(Error::Init(code)),
        }
    }
    Ok((store, filter))
}

/// A wasmtime error as one of the ABI's error kinds (or as no room on the server).
pub(crate) fn classify(e: &wasmtime::Error, memory_denied: bool, limits: &Limits) -> Error {
    if let Some(full) = e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        return Error::Capacity(format!(
            "every filter instance slot is in use ({full}; --filter-instances); it starts \
             when others stop"
        ));
    }
    if memory_denied {
        return Error::MemoryLimit(limits.memory_bytes);
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Error::OutOfFuel(limits.fuel),
        Some(Trap::Interrupt) => Error::Timeout(limits.deadline.as_millis() as u64),
        Some(trap) => Error::Trap(trap.to_string()),
        None => Error::Trap(format!("{e:#}")),
    }
}
