//! The webhook sink: HTTP POST of events to a user's endpoint.
//!
//! # Layout
//! - `format.rs`: request bodies (CloudEvents binary/structured/batch, Avro; S3 records from
//!   `s3.rs`).
//! - `signature.rs`: Standard Webhooks signing secrets and signatures.
//! - `sink.rs`: sending one request and classifying the answer.

pub mod format;
mod s3;
pub mod signature;
pub mod sink;
