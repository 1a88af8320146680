//! The webhook sink: HTTP POST of events to a user's endpoint.
//!
//! # Layout
//! - `format.rs`: request bodies (S3 records, CloudEvents binary/structured/batch, Avro).
//! - `signature.rs`: Standard Webhooks signing secrets and signatures.
//! - `sink.rs`: sending one request and classifying the answer.

pub mod format;
pub mod signature;
pub mod sink;
