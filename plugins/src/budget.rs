//! The server-wide budget of filter memory: every instance reserves the linear memory its
//! version may grow to (`memory_bytes`) for as long as it exists, and an instance that would
//! take the total past the budget is refused as [`Error::Capacity`] — the server is full, the
//! filter did nothing wrong — so whoever asked waits and tries again.
//!
//! Invariant: `reserved` is the sum of the live [`Reservation`]s, so it never exceeds the
//! limit (a reservation is taken before the instance is made and given back when it drops).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{Error, Result};

#[derive(Debug)]
pub struct MemoryBudget {
    /// Bytes all instances together may reserve; `usize::MAX`: no budget.
    limit: AtomicUsize,
    /// Bytes reserved by live instances.
    reserved: AtomicUsize,
    /// Live instances holding a reservation (what error messages and metrics show).
    instances: AtomicUsize,
}

/// Memory held for one instance; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl MemoryBudget {
    pub fn unlimited() -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit: AtomicUsize::new(usize::MAX),
            reserved: AtomicUsize::new(0),
            instances: AtomicUsize::new(0),
        })
    }

    pub fn set_limit(&self, bytes: usize) {
        self.limit.store(bytes, Ordering::Relaxed);
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    pub fn reserved(&self) -> usize {
        self.reserved.load(Ordering::Relaxed)
    }

    pub fn instances(&self) -> usize {
        self.instances.load(Ordering::Relaxed)
    }

    /// Hold `bytes` for one instance, or say why there is no room.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Result<Reservation> {
        let limit = self.limit();
        let taken = self
            .reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|total| *total <= limit)
            });
        match taken {
            Ok(_) => {
                self.instances.fetch_add(1, Ordering::Relaxed);
                Ok(Reservation {
                    budget: self.clone(),
                    bytes,
                })
            }
            Err(held) => Err(Error::Capacity(format!(
                "the server's filter memory budget is in use: this instance needs {} of linear \
                 memory, {} of the budget of {} is held by {} instance(s) \
                 (--filter-memory-budget-bytes); it starts when others stop",
                bytes_text(bytes),
                bytes_text(held),
                bytes_text(limit),
                self.instances()
            ))),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.reserved.fetch_sub(self.bytes, Ordering::AcqRel);
        self.budget.instances.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `16 MiB (16777216 bytes)`: people read the unit, scripts the number.
pub fn bytes_text(bytes: usize) -> String {
    const MIB: usize = 1 << 20;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB ({bytes} bytes)", bytes / MIB)
    } else if bytes >= MIB {
        format!("{:.1} MiB ({bytes} bytes)", bytes as f64 / MIB as f64)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_within_the_limit_and_are_given_back() {
        let budget = MemoryBudget::unlimited();
        budget.set_limit(100);
        let a = budget.reserve(60).unwrap();
        let err = budget.reserve(50).unwrap_err();
        assert!(matches!(err, Error::Capacity(_)), "{err}");
        assert!(
            err.to_string()
                .contains("60 bytes of the budget of 100 bytes"),
            "{err}"
        );
        let b = budget.reserve(40).unwrap();
        assert_eq!((budget.reserved(), budget.instances()), (100, 2));
        drop(a);
        assert_eq!((budget.reserved(), budget.instances()), (40, 1));
        let _c = budget.reserve(60).unwrap();
        drop(b);
        assert_eq!(budget.reserved(), 60);
    }

    #[test]
    fn sizes_are_shown_in_mib_and_bytes() {
        assert_eq!(bytes_text(16 << 20), "16 MiB (16777216 bytes)");
        assert_eq!(bytes_text(3 << 19), "1.5 MiB (1572864 bytes)");
        assert_eq!(bytes_text(65536), "65536 bytes");
    }
}
