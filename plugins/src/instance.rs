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

use crate::batch;
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
    arm_for(store, module, 1);
}

/// The budgets of a call deciding `events` events: each event's fuel and time, together.
fn arm_for(store: &mut Store<HostState>, module: &FilterModule, events: usize) {
    if !module.engine.metered {
        return;
    }
    let limits = &module.limits;
    let _ = store.set_fuel(limits.fuel.saturating_mul(events as u64));
    let ticks = (limits.deadline.as_micros() / TICK.as_micros()).max(1) as u64;
    store.set_epoch_deadline(ticks.saturating_mul(events as u64));
}

/// How a module is called: once per event (v1), or once per batch (v2).
enum Entry {
    V1(TypedFunc<(), i32>),
    V2 {
        batch: TypedFunc<(i32, i32), i32>,
        alloc: TypedFunc<i32, i32>,
        /// The module's buffer for batches, and its size, once asked for.
        buffer: Option<(usize, usize)>,
    },
}

pub struct FilterInstance {
    module: Arc<FilterModule>,
    store: Store<HostState>,
    entry: Entry,
    params: Option<String>,
    /// The verdict bytes of the last v2 call, read back from the module (reused).
    verdicts: Vec<u8>,
    /// Its linear memory's share of the server's budget, given back when it drops.
    _memory: Reservation,
}

impl FilterInstance {
    /// Instantiate and run `init` with `params` (JSON) when the module has one.
    pub fn new(module: Arc<FilterModule>, params: Option<&str>) -> Result<FilterInstance> {
        let memory = module.engine.budget.reserve(module.limits.memory_bytes)?;
        let (store, entry) = instantiate(&module, params)?;
        Ok(FilterInstance {
            module,
            store,
            entry,
            params: params.map(str::to_string),
            verdicts: Vec::new(),
            _memory: memory,
        })
    }

    /// Decide on `event`.
    pub fn evaluate(&mut self, event: Arc<ObjectEvent>) -> Evaluation {
        match self.entry {
            Entry::V1(_) => self.evaluate_v1(event),
            Entry::V2 { .. } => self.run_batch(&[event]).pop().expect("one evaluation"),
        }
    }

    /// How many events one call decides: 1 for a v1 module, up to [`batch::MAX_EVENTS`] for
    /// a v2 module.
    pub fn batch_size(&self) -> usize {
        match self.entry {
            Entry::V1(_) => 1,
            Entry::V2 { .. } => batch::MAX_EVENTS,
        }
    }

    /// Decide on `events`, in order: one call per event for a v1 module, one call per
    /// [`batch::MAX_EVENTS`] events for a v2 module. One evaluation per event.
    pub fn evaluate_all(&mut self, events: &[Arc<ObjectEvent>]) -> Vec<Evaluation> {
        match self.entry {
            Entry::V1(_) => events.iter().map(|e| self.evaluate_v1(e.clone())).collect(),
            Entry::V2 { .. } => {
                let mut out = Vec::with_capacity(events.len());
                for chunk in events.chunks(batch::MAX_EVENTS) {
                    out.extend(self.run_batch(chunk));
                }
                out
            }
        }
    }

    /// After a trap (or running out of fuel, time or memory) the instance's state is
    /// unknown: the next call gets a fresh one.
    fn restart(&mut self) {
        if let Ok((store, entry)) = instantiate(&self.module, self.params.as_deref()) {
            self.store = store;
            self.entry = entry;
        }
    }

    fn evaluate_v1(&mut self, event: Arc<ObjectEvent>) -> Evaluation {
        let Entry::V1(filter) = &self.entry else {
            unreachable!("a v1 module");
        };
        self.store.data_mut().begin(event);
        arm(&mut self.store, &self.module);
        let started = Instant::now();
        let result = filter.call(&mut self.store, ());
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
        if cut_short(&verdict) {
            self.restart();
        }
        Evaluation {
            verdict,
            fuel,
            elapsed,
            logs,
            logs_dropped,
        }
    }

    /// Decide on `events` (at most [`FilterInstance::batch_size`]) in one call where the
    /// module allows: when every event got keep or drop, the verdict bytes and the call's
    /// cost as they are, with nothing built per event; otherwise (a v1 module, an error
    /// for some event) one evaluation per event.
    pub fn decide(&mut self, events: &[Arc<ObjectEvent>]) -> Decided<'_> {
        if matches!(self.entry, Entry::V1(_)) || events.len() > batch::MAX_EVENTS {
            return Decided::Each(self.evaluate_all(events));
        }
        let call = match self.call_batch(events) {
            Ok(call) => call,
            // No buffer for the batch: each event gets the error.
            Err(e) => return Decided::Each(events.iter().map(|_| failed(again(&e))).collect()),
        };
        let n = events.len();
        if matches!(call.result, Ok(count) if count == n as i32)
            && self.verdicts.len() == n
            // Every byte keep (1) or drop (0): their OR is then at most 1 (a loop without an
            // early exit, so it runs a word at a time).
            && self.verdicts.iter().fold(0, |all, b| all | b) <= 1
        {
            return Decided::Verdicts {
                verdicts: &self.verdicts,
                fuel: call.fuel,
                elapsed: call.elapsed,
                logs: call.logs,
                logs_dropped: call.logs_dropped,
            };
        }
        Decided::Each(self.settle(events, call))
    }

    /// One v2 call for `events` (at most [`batch::MAX_EVENTS`]), one evaluation each.
    fn run_batch(&mut self, events: &[Arc<ObjectEvent>]) -> Vec<Evaluation> {
        self.decide(events).into_evaluations()
    }

    /// The evaluations of a call that did not decide every event. When the call was stopped
    /// (a trap, no fuel or time left, memory refused), the verdicts it wrote for a leading run
    /// of events stand; after a wrong answer (not `count`) none does. The others are decided
    /// one per call, so only the event at fault gets the error.
    fn settle(&mut self, events: &[Arc<ObjectEvent>], call: BatchCall) -> Vec<Evaluation> {
        let n = events.len();
        let BatchCall {
            result,
            fuel,
            elapsed,
            logs,
            logs_dropped,
        } = call;
        let mut logs = Some(logs);
        let bytes = &self.verdicts;
        let (whole, decided) = match result {
            Ok(count) if count == n as i32 && bytes.len() == n => (None, n),
            // A wrong answer: none of its verdicts is trusted.
            Ok(count) => (Some(Error::BadVerdict(count)), 0),
            // Stopped mid-way: the leading verdicts written before the failure stand.
            Err(e) => (Some(e), bytes.iter().take_while(|b| written(**b)).count()),
        };
        let mut out: Vec<Evaluation> = Vec::with_capacity(n);
        let share = (fuel / n as u64, elapsed / n as u32);
        push_shared(
            &bytes[..decided],
            share,
            (&mut logs, logs_dropped),
            &mut out,
        );
        let Some(why) = whole else {
            return out;
        };
        if stops(&why) {
            self.restart();
        }
        if n == 1 {
            return vec![Evaluation {
                verdict: Err(why),
                fuel,
                elapsed,
                logs: logs.unwrap_or_default(),
                logs_dropped,
            }];
        }
        for event in &events[decided..] {
            let mut one = self.run_batch(std::slice::from_ref(event));
            out.push(one.pop().expect("one evaluation"));
        }
        out
    }

    /// Lay `events` out straight in the module's buffer (asking for a larger one when
    /// needed), call `filter_batch`, and copy its verdict bytes to `self.verdicts`.
    fn call_batch(&mut self, events: &[Arc<ObjectEvent>]) -> Result<BatchCall> {
        let Entry::V2 {
            batch,
            alloc,
            buffer,
        } = &mut self.entry
        else {
            unreachable!("a v2 module");
        };
        let n = events.len();
        let fields = self.module.fields;
        let memory = self
            .store
            .data()
            .memory
            .ok_or_else(|| Error::Trap("the module has no memory".into()))?;
        // Laid out in the buffer the module gave before when it has room (linear memory
        // never shrinks, so a buffer checked when it was given still fits); else the module
        // is asked for one of the size needed.
        let mut laid = buffer.and_then(|(ptr, cap)| {
            let out = &mut memory.data_mut(&mut self.store)[ptr..ptr + cap];
            batch::write(events, fields, out).map(|(v, len)| (ptr, v, len))
        });
        if laid.is_none() {
            let len = batch::size(events, fields);
            arm(&mut self.store, &self.module);
            let asked = alloc
                .call(&mut self.store, len as i32)
                .map_err(|e| classify(&e, self.store.data().memory_denied, &self.module.limits))?;
            let ptr = asked as u32 as usize;
            if ptr
                .checked_add(len)
                .is_none_or(|end| end > memory.data_size(&self.store))
            {
                return Err(Error::Trap(format!(
                    "tidemark_alloc({len}) returned {asked}, outside the module's memory"
                )));
            }
            *buffer = Some((ptr, len));
            let out = &mut memory.data_mut(&mut self.store)[ptr..ptr + len];
            laid = batch::write(events, fields, out).map(|(v, len)| (ptr, v, len));
        }
        let (ptr, verdicts_at, len) = laid.expect("a batch fits the size it was measured at");
        let data = self.store.data_mut();
        data.log_cap = crate::host::LOG_LINES * n;
        data.memory_denied = false;
        arm_for(&mut self.store, &self.module, n);
        let started = Instant::now();
        let result = batch.call(&mut self.store, (ptr as i32, len as i32));
        let elapsed = started.elapsed();
        let budget = self.module.limits.fuel.saturating_mul(n as u64);
        let fuel = match self.store.get_fuel() {
            Ok(left) => budget.saturating_sub(left),
            Err(_) => 0,
        };
        let result =
            result.map_err(|e| classify(&e, self.store.data().memory_denied, &self.module.limits));
        self.verdicts.clear();
        let at = ptr + verdicts_at;
        if let Some(v) = memory.data(&self.store).get(at..at + n) {
            self.verdicts.extend_from_slice(v);
        }
        let data = self.store.data_mut();
        Ok(BatchCall {
            result,
            fuel,
            elapsed,
            logs: std::mem::take(&mut data.logs),
            logs_dropped: std::mem::take(&mut data.logs_dropped),
        })
    }
}

/// What one `filter_batch` call gave, beside its verdict bytes.
struct BatchCall {
    result: Result<i32>,
    fuel: u64,
    elapsed: Duration,
    logs: Vec<String>,
    logs_dropped: u32,
}

/// What [`FilterInstance::decide`] found.
pub enum Decided<'a> {
    /// Every event decided in one call: one byte each (1 keep, 0 drop), with the call's
    /// fuel, time and log lines for all of them.
    Verdicts {
        verdicts: &'a [u8],
        fuel: u64,
        elapsed: Duration,
        logs: Vec<String>,
        logs_dropped: u32,
    },
    /// One evaluation per event, in order.
    Each(Vec<Evaluation>),
}

impl Decided<'_> {
    /// One evaluation per event; the call's cost is shared evenly and its log lines go with
    /// the first event.
    pub fn into_evaluations(self) -> Vec<Evaluation> {
        let Decided::Verdicts {
            verdicts,
            fuel,
            elapsed,
            logs,
            logs_dropped,
        } = self
        else {
            let Decided::Each(each) = self else {
                unreachable!()
            };
            return each;
        };
        let n = verdicts.len().max(1);
        let mut out = Vec::with_capacity(n);
        let share = (fuel / n as u64, elapsed / n as u32);
        push_shared(verdicts, share, (&mut Some(logs), logs_dropped), &mut out);
        out
    }
}

/// An evaluation per verdict byte, each with `share` of the call's fuel and time; the
/// call's log lines (taken from `logs`) and how many it dropped go with the first.
fn push_shared(
    verdicts: &[u8],
    (fuel, elapsed): (u64, Duration),
    (logs, logs_dropped): (&mut Option<Vec<String>>, u32),
    out: &mut Vec<Evaluation>,
) {
    let first = out.len();
    out.extend(verdicts.iter().map(|b| Evaluation {
        verdict: decode(*b),
        fuel,
        elapsed,
        logs: logs.take().unwrap_or_default(),
        logs_dropped: 0,
    }));
    if let Some(e) = out.get_mut(first) {
        e.logs_dropped = logs_dropped;
    }
}

/// Whether the module wrote this verdict byte (keep, drop or an error code).
fn written(b: u8) -> bool {
    (b as i8) <= 1
}

/// A verdict byte: `1` keep, `0` drop, negative a module error code; anything else (and
/// [`batch::UNDECIDED`]) is a bad verdict.
fn decode(b: u8) -> Result<Verdict> {
    match b as i8 {
        1 => Ok(Verdict::Keep),
        0 => Ok(Verdict::Drop),
        code if code < 0 => Err(Error::Module(code as i32)),
        code => Err(Error::BadVerdict(code as i32)),
    }
}

fn failed(e: Error) -> Evaluation {
    Evaluation {
        verdict: Err(e),
        fuel: 0,
        elapsed: Duration::ZERO,
        logs: Vec::new(),
        logs_dropped: 0,
    }
}

/// Whether the module was stopped mid-way (its state unknown), not answering.
fn cut_short(verdict: &Result<Verdict>) -> bool {
    verdict.as_ref().err().is_some_and(stops)
}

fn stops(e: &Error) -> bool {
    matches!(
        e,
        Error::Trap(_) | Error::OutOfFuel(_) | Error::Timeout(_) | Error::MemoryLimit(_)
    )
}

/// The same evaluation error again, for each event of a batch it failed.
fn again(e: &Error) -> Error {
    match e {
        Error::OutOfFuel(f) => Error::OutOfFuel(*f),
        Error::Timeout(ms) => Error::Timeout(*ms),
        Error::MemoryLimit(b) => Error::MemoryLimit(*b),
        Error::Module(c) => Error::Module(*c),
        Error::BadVerdict(c) => Error::BadVerdict(*c),
        Error::Init(c) => Error::Init(*c),
        Error::Capacity(m) => Error::Capacity(m.clone()),
        other => Error::Trap(
            other
                .to_string()
                .trim_start_matches("the filter trapped: ")
                .to_string(),
        ),
    }
}

fn instantiate(module: &FilterModule, params: Option<&str>) -> Result<(Store<HostState>, Entry)> {
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
    let func_error = |e: wasmtime::Error| Error::Trap(format!("{e:#}"));
    let entry = match module.abi_version {
        2 => Entry::V2 {
            batch: instance
                .get_typed_func::<(i32, i32), i32>(&mut store, "filter_batch")
                .map_err(func_error)?,
            alloc: instance
                .get_typed_func::<i32, i32>(&mut store, "tidemark_alloc")
                .map_err(func_error)?,
            buffer: None,
        },
        _ => Entry::V1(
            instance
                .get_typed_func::<(), i32>(&mut store, "filter")
                .map_err(func_error)?,
        ),
    };
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
    Ok((store, entry))
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
