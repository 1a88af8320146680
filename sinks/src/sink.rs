//! The seam between the delivery engine and the places events go. A sink sends one request
//! (one event, or a batch) and says how it went; retries, backoff, the circuit breaker and
//! dead letters are the engine's, written once for every sink.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tidemark_core::event::ObjectEvent;

use crate::webhook::format::Item;

/// One event on its way to a sink.
#[derive(Debug)]
pub struct Delivery {
    pub partition: u32,
    pub offset: u64,
    /// The log key (`bucket/key`): deliveries of one key never overlap.
    pub key: Bytes,
    /// Shared with the WASM filter that looked at it.
    pub event: Arc<ObjectEvent>,
    /// The record as read from the log (Confluent wire format).
    pub wire: Bytes,
}

impl Delivery {
    pub fn item(&self) -> Item<'_> {
        Item {
            event: &self.event,
            wire: &self.wire,
            partition: self.partition,
            offset: self.offset,
        }
    }
}

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

/// Where a subscription's events go.
pub trait Sink: Send + Sync {
    /// What the circuit breaker is keyed by (scheme://host:port, or the command).
    fn endpoint(&self) -> &str;

    /// Send `batch` (in log order) once. `attempt` counts from 1.
    fn send<'a>(
        &'a self,
        batch: &'a [std::sync::Arc<Delivery>],
        attempt: u32,
    ) -> BoxFuture<'a, Result<(), SendError>>;
}
