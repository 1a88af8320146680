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

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tidemark_core::catalog::Catalog;
use tidemark_core::codec::view::{self, EventView};
use tidemark_core::codec::{EventCodec, object_event, wire};
use tidemark_core::event::ObjectEvent;

use crate::client::{HttpClient, Outbound};

/// One event on its way to a sink.
#[derive(Debug)]
pub struct Delivery {
    pub partition: u32,
    pub offset: u64,
    /// The log key (`bucket/key`): deliveries of one key never overlap.
    pub key: Bytes,
    /// The record as read from the log (Confluent wire format).
    pub wire: Bytes,
    /// The decoded event, shared with the WASM filter that looked at it; for a record only
    /// viewed so far ([`Delivery::viewed`]), decoded on first use.
    event: OnceLock<Arc<ObjectEvent>>,
}

impl Delivery {
    pub fn new(
        partition: u32,
        offset: u64,
        key: Bytes,
        event: Arc<ObjectEvent>,
        wire: Bytes,
    ) -> Self {
        Delivery {
            partition,
            offset,
            key,
            wire,
            event: OnceLock::from(event),
        }
    }

    /// A record of the codec's current schema, not decoded, for a sink that copies fields
    /// ([`StreamSink::reads_views`]): it reads the record through [`Delivery::view`], which
    /// checks it. The reader may have checked only its leading fields (its rules test no
    /// others), so a damaged record reaches the sink, which dead-letters it
    /// ([`Feed::dead_letter`]).
    pub(crate) fn undecoded(partition: u32, offset: u64, key: Bytes, wire: Bytes) -> Self {
        Delivery {
            partition,
            offset,
            key,
            wire,
            event: OnceLock::new(),
        }
    }

    /// The event, decoded.
    pub fn event(&self) -> &Arc<ObjectEvent> {
        self.event.get_or_init(|| {
            // Only sinks that read views get `undecoded` records, and they read them through
            // `view`, which decodes in full only what the decoder takes.
            let payload = &self.wire[wire::HEADER_LEN..];
            Arc::new(object_event::decode(payload).expect("an undecoded record is only viewed"))
        })
    }

    /// The event as a borrowed view, read from the record when it was not decoded (one read
    /// that checks it all; a record laid out in a way a view does not take is decoded in
    /// full). An error names what is wrong with a damaged record.
    pub fn view(&self) -> tidemark_core::Result<EventView<'_>> {
        if self.event.get().is_none() {
            let payload = &self.wire[wire::HEADER_LEN..];
            if let Some(v) = view::read(payload)? {
                return Ok(v);
            }
            let event = object_event::decode(payload)?;
            return Ok(EventView::of(self.event.get_or_init(|| Arc::new(event))));
        }
        Ok(EventView::of(self.event()))
    }
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
