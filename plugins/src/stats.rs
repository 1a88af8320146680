//! What each filter version did on this node: evaluations, verdicts, errors by kind, and
//! histograms of fuel and time per evaluation (`/metrics`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{Evaluation, Verdict};

/// Upper bounds of the fuel histogram buckets (units).
pub const FUEL_BUCKETS: [f64; 6] = [100.0, 1e3, 1e4, 1e5, 1e6, 1e7];
/// Upper bounds of the time histogram buckets (seconds).
pub const TIME_BUCKETS: [f64; 7] = [1e-6, 5e-6, 2.5e-5, 1e-4, 1e-3, 1e-2, 1e-1];

/// The error kinds of [`crate::Error::kind`] an evaluation can end in.
pub const ERROR_KINDS: [&str; 7] = [
    "trap", "fuel", "timeout", "memory", "module", "verdict", "init",
];

/// Counts per bucket (not cumulative; the last is +Inf) and the sum.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    pub counts: Vec<u64>,
    pub sum: f64,
}

/// A histogram kept in atomics: recording takes no lock.
struct Buckets<const N: usize> {
    counts: [AtomicU64; N],
    /// Sum in the unit's smallest integer part (fuel units, nanoseconds).
    sum: AtomicU64,
}

impl<const N: usize> Default for Buckets<N> {
    fn default() -> Self {
        Buckets {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> Buckets<N> {
    fn observe(&self, bounds: &[f64], value: f64, raw: u64) {
        self.observe_n(bounds, value, raw, 1);
    }

    /// `count` observations of the same value.
    fn observe_n(&self, bounds: &[f64], value: f64, raw: u64, count: u64) {
        let i = bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(bounds.len());
        self.counts[i].fetch_add(count, Ordering::Relaxed);
        self.sum.fetch_add(raw * count, Ordering::Relaxed);
    }

    fn snapshot(&self, scale: f64) -> Histogram {
        Histogram {
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum.load(Ordering::Relaxed) as f64 * scale,
        }
    }
}

#[derive(Default)]
pub struct FilterStats {
    pub evaluations: AtomicU64,
    pub kept: AtomicU64,
    pub dropped: AtomicU64,
    /// By [`ERROR_KINDS`] index.
    errors: [AtomicU64; ERROR_KINDS.len()],
    fuel: Buckets<{ FUEL_BUCKETS.len() + 1 }>,
    time: Buckets<{ TIME_BUCKETS.len() + 1 }>,
}

impl FilterStats {
    pub fn record(&self, e: &Evaluation) {
        self.evaluations.fetch_add(1, Ordering::Relaxed);
        match &e.verdict {
            Ok(Verdict::Keep) => self.kept.fetch_add(1, Ordering::Relaxed),
            Ok(Verdict::Drop) => self.dropped.fetch_add(1, Ordering::Relaxed),
            Err(err) => self.error(err.label()),
        };
        self.fuel.observe(&FUEL_BUCKETS, e.fuel as f64, e.fuel);
        let nanos = e.elapsed.as_nanos() as u64;
        self.time
            .observe(&TIME_BUCKETS, e.elapsed.as_secs_f64(), nanos);
    }

    /// Count a call that decided every event of a batch (`Decided::Verdicts`), as
    /// [`FilterStats::record`] would count its evaluations one by one: each event's fuel and
    /// time are the call's, shared evenly.
    pub fn record_verdicts(&self, verdicts: &[u8], fuel: u64, elapsed: Duration) {
        let n = verdicts.len() as u64;
        if n == 0 {
            return;
        }
        let kept = verdicts.iter().filter(|b| **b == 1).count() as u64;
        self.evaluations.fetch_add(n, Ordering::Relaxed);
        self.kept.fetch_add(kept, Ordering::Relaxed);
        self.dropped.fetch_add(n - kept, Ordering::Relaxed);
        let fuel = fuel / n;
        self.fuel.observe_n(&FUEL_BUCKETS, fuel as f64, fuel, n);
        let elapsed = elapsed / n as u32;
        let nanos = elapsed.as_nanos() as u64;
        self.time
            .observe_n(&TIME_BUCKETS, elapsed.as_secs_f64(), nanos, n);
    }

    /// Count an error of `kind` (also those outside an evaluation, such as a failed init).
    pub fn error(&self, kind: &str) -> u64 {
        let i = ERROR_KINDS.iter().position(|k| *k == kind).unwrap_or(0);
        self.errors[i].fetch_add(1, Ordering::Relaxed)
    }

    /// Errors by kind, every kind listed.
    pub fn errors(&self) -> Vec<(&'static str, u64)> {
        ERROR_KINDS
            .iter()
            .zip(&self.errors)
            .map(|(k, n)| (*k, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Fuel (units) and time (seconds) histograms.
    pub fn histograms(&self) -> (Histogram, Histogram) {
        (self.fuel.snapshot(1.0), self.time.snapshot(1e-9))
    }
}
