//! Request sinks: a sink sends one request (one event, or a batch) and says how it went;
//! retries, backoff, the circuit breaker and dead letters are the engine's, written once for
//! every sink of this kind (webhook, function).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::Delivery;

/// How a failed attempt should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Try again later (connection error, timeout, 408, 429, 5xx); `Retry-After` if given.
    Retry { retry_after: Option<Duration> },
    /// The endpoint refused these events (other 4xx): retrying the same request cannot help,
    /// so they go to the dead-letter queue at once.
    Reject,
    /// The endpoint is gone for good (410): the subscription is disabled.
    Gone,
}

/// A failed attempt: its treatment, the HTTP status or exit code if there was one, and what
/// happened, for status pages and logs (never secrets or payloads).
#[derive(Debug, Clone)]
pub struct SendError {
    pub failure: Failure,
    pub status: Option<i32>,
    pub message: String,
}

impl SendError {
    pub fn retry(message: impl Into<String>) -> Self {
        SendError {
            failure: Failure::Retry { retry_after: None },
            status: None,
            message: message.into(),
        }
    }
}

/// Where a subscription's events go, one request at a time.
pub trait Sink: Send + Sync {
    /// What the circuit breaker is keyed by (scheme://host:port, or the command).
    fn endpoint(&self) -> &str;

    /// Send `batch` (in log order) once. `attempt` counts from 1.
    fn send<'a>(
        &'a self,
        batch: &'a [Arc<Delivery>],
        attempt: u32,
    ) -> BoxFuture<'a, Result<(), SendError>>;
}
