//! The seam between the delivery engine and the places events go. A sink is one of two kinds:
//!
//! - a request sink ([`Sink`]: webhook, function) sends one request at a time and says how it
//!   went; the engine retries, breaks circuits and dead-letters for it;
//! - a stream sink ([`StreamSink`]: the Parquet lake) consumes one partition's ordered stream
//!   of matching events and commits the subscription's position itself, once what is before
//!   it is durably written.
//!
//! Each kind's folder builds its sink from its spec (`webhook::build`, `function::build`,
//! `lake::build`) with a [`BuildCtx`]; the engine only sees a [`SinkKind`].
//!
//! # Layout
//! - `request.rs`: [`Sink`], [`SendError`], [`Failure`].
//! - `stream.rs`: [`StreamSink`] and the [`Feed`] it reads a partition from.
//! - `live.rs`: [`LiveObjects`], the index's live objects, for a state table's start.
//!
//! This module names nothing above it (kinds, subscriptions, the engine): the engine's side of
//! a feed is behind a trait it implements.

mod live;
mod request;
mod stream;

pub use live::{LiveObject, LiveObjects};

pub use request::{Failure, SendError, Sink};
pub(crate) use stream::Source;
pub use stream::{Batch, Feed, LiveScan, StreamSink};

use std::sync::Arc;

use bytes::Bytes;
use tidemark_core::catalog::Catalog;
use tidemark_core::codec::EventCodec;
use tidemark_core::event::ObjectEvent;

use crate::client::{HttpClient, Outbound};

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

/// A built sink, of one kind or the other.
#[derive(Clone)]
pub enum SinkKind {
    Request(Arc<dyn Sink>),
    Stream(Arc<dyn StreamSink>),
}

impl SinkKind {
    /// What status and logs name the destination by.
    pub fn endpoint(&self) -> &str {
        match self {
            SinkKind::Request(s) => s.endpoint(),
            SinkKind::Stream(s) => s.endpoint(),
        }
    }
}

/// What a sink kind is built with: the node's services, and whom the sink is for.
pub struct BuildCtx<'a> {
    /// The subscription's name (payloads, invocation records and logs carry it).
    pub subscription: &'a str,
    /// Where secret references (`secret:`, `env:`, `file:`) are resolved.
    pub catalog: &'a Catalog,
    /// The node's outbound HTTP client, with its address guard.
    pub client: &'a HttpClient,
    /// The same guard and TLS roots, for sinks that open their own connections.
    pub outbound: &'a Outbound,
    /// The log's codec: the writer schema of a record by its id.
    pub codec: &'a Arc<EventCodec>,
    /// CloudEvents `source` base of this node's payloads.
    pub source: &'a str,
    /// The replay job the sink re-delivers for, if any (receivers can tell re-deliveries).
    pub replay: Option<&'a str>,
}
