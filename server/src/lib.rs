//! The Tidemark server as a library: a node (log, index, ingest, subscriptions, filters,
//! jobs) and the fronts it serves, which the `tidemark` binary runs (`tidemark serve`) and the
//! benchmark driver starts in-process.
//!
//! # Layout
//! - `args.rs`: the settings shared by `serve` and the offline commands: data directory, log.
//! - `serve.rs`: `tidemark serve`'s settings and its run: open the node, start the listeners,
//!   stop cleanly on SIGTERM.
//! - `node/`: opening a data directory (log, registry, codec, index, materializer, ingest,
//!   delivery); `writer.rs` the one write path every front uses (routed to the node that
//!   writes a key's partition); `objects.rs` and `buckets.rs` the reads and bucket settings
//!   the fronts share.
//! - `net/`: the listeners' accept loop: TLS, header and idle timeouts, connection limits; the
//!   client that reaches other nodes.
//! - `http/`: the HTTP API (ingest, objects, content, subscriptions, filters, jobs, watch,
//!   schema registry, tokens, metrics, health).
//! - `s3/`: the S3-compatible API, on s3s, calling the node's services.

pub mod args;
pub mod http;
pub mod net;
pub mod node;
pub mod s3;
pub mod serve;
