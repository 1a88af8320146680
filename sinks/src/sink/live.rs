//! The objects live now, as this node's index holds them: a stream sink that keeps a state
//! table (the Iceberg inventory) starts it from here instead of from the whole log, which
//! retention may have trimmed. The server implements [`LiveObjects`] over its index.

use futures::future::BoxFuture;
use tidemark_core::event::Head;
use tidemark_core::log::Position;
use tokio::sync::mpsc;

use crate::Result;

/// A live object: its log key (`bucket/key`), head (its state is set) and the position of
/// the event that made it.
pub type LiveObject = (String, Head, Position);

pub trait LiveObjects: Send + Sync {
    /// Wait until the index has applied `partition` up to `at_least`, then send every live
    /// object of `partition` in key order, in chunks, to `out`, from one consistent view of
    /// the index (stopping early when `out` is closed). Returns the next offset of
    /// `partition` that view has not applied: the objects are the state just before it.
    fn scan(
        &self,
        partition: u32,
        at_least: u64,
        out: mpsc::Sender<Vec<LiveObject>>,
    ) -> BoxFuture<'_, Result<u64>>;
}
