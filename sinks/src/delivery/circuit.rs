//! Circuit breakers, one per endpoint and shared by every subscription on this node that sends
//! there: after N consecutive failed attempts the circuit opens and nobody sends for a while;
//! then one probe request goes out (half-open), and its outcome closes or re-opens it. While
//! the circuit is open, deliveries wait without spending attempts, so an endpoint that is down
//! for an hour costs each event a few attempts, not its whole retry budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

pub struct Circuit {
    state: Mutex<State>,
    /// Woken when a probe ends, so waiters re-check at once.
    changed: Notify,
    /// Times the circuit opened (for status and metrics).
    opened: Mutex<u64>,
}

/// Leave to send one request. Dropping it without reporting counts as neither outcome but
/// frees a half-open probe slot.
pub struct Permit<'a> {
    circuit: &'a Circuit,
    probe: bool,
    reported: bool,
}

impl Permit<'_> {
    pub fn success(mut self) {
        self.reported = true;
        self.circuit.set(State::Closed { failures: 0 });
    }

    pub fn failure(mut self, threshold: u32, open_for: Duration) {
        self.reported = true;
        let mut s = self.circuit.state.lock().unwrap();
        let open = match *s {
            State::Closed { failures } if failures + 1 < threshold && !self.probe => {
                *s = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            before => {
                *s = State::Open {
                    until: Instant::now() + open_for,
                };
                !matches!(before, State::Open { .. })
            }
        };
        drop(s);
        if open {
            *self.circuit.opened.lock().unwrap() += 1;
        }
        self.circuit.changed.notify_waiters();
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            self.circuit.set(State::HalfOpen { probing: false });
        }
    }
}

impl Circuit {
    fn new() -> Circuit {
        Circuit {
            state: Mutex::new(State::Closed { failures: 0 }),
            changed: Notify::new(),
            opened: Mutex::new(0),
        }
    }

    fn set(&self, state: State) {
        *self.state.lock().unwrap() = state;
        self.changed.notify_waiters();
    }

    /// Wait until a request may be sent.
    pub async fn permit(&self) -> Permit<'_> {
        loop {
            let notified = self.changed.notified();
            let wait_until = {
                let mut s = self.state.lock().unwrap();
                match *s {
                    State::Closed { .. } => {
                        return Permit {
                            circuit: self,
                            probe: false,
                            reported: false,
                        };
                    }
                    State::Open { until } if Instant::now() >= until => {
                        *s = State::HalfOpen { probing: true };
                        return Permit {
                            circuit: self,
                            probe: true,
                            reported: false,
                        };
                    }
                    State::HalfOpen { probing: false } => {
                        *s = State::HalfOpen { probing: true };
                        return Permit {
                            circuit: self,
                            probe: true,
                            reported: false,
                        };
                    }
                    State::Open { until } => Some(until),
                    State::HalfOpen { probing: true } => None,
                }
            };
            match wait_until {
                Some(until) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => {}
                        _ = notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// `closed`, `open` or `half-open`.
    pub fn state_name(&self) -> &'static str {
        match *self.state.lock().unwrap() {
            State::Closed { .. } => "closed",
            State::Open { until } if Instant::now() < until => "open",
            State::Open { .. } | State::HalfOpen { .. } => "half-open",
        }
    }

    pub fn times_opened(&self) -> u64 {
        *self.opened.lock().unwrap()
    }
}

/// The node's circuits, by endpoint.
#[derive(Default)]
pub struct Circuits {
    map: Mutex<HashMap<String, Arc<Circuit>>>,
}

impl Circuits {
    pub fn get(&self, endpoint: &str) -> Arc<Circuit> {
        self.map
            .lock()
            .unwrap()
            .entry(endpoint.to_string())
            .or_insert_with(|| Arc::new(Circuit::new()))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_then_probes_once() {
        let c = Circuit::new();
        for _ in 0..3 {
            c.permit().await.failure(3, Duration::from_secs(10));
        }
        assert_eq!(c.state_name(), "open");
        assert_eq!(c.times_opened(), 1);
        let t0 = Instant::now();
        let probe = c.permit().await;
        assert!(Instant::now() - t0 >= Duration::from_secs(10));
        assert_eq!(c.state_name(), "half-open");
        // A second caller waits for the probe's outcome.
        let second = tokio::time::timeout(Duration::from_secs(1), c.permit()).await;
        assert!(second.is_err());
        probe.success();
        assert_eq!(c.state_name(), "closed");
        c.permit().await.success();
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens() {
        let c = Circuit::new();
        c.permit().await.failure(1, Duration::from_secs(5));
        let probe = c.permit().await;
        probe.failure(1, Duration::from_secs(5));
        assert_eq!(c.state_name(), "open");
        assert_eq!(c.times_opened(), 2);
    }
}
