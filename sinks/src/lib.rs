//! Sinks (not built yet): webhook, function and Parquet lake delivery of subscription events.
//!
//! # Layout
//! Empty: see the delivery and Parquet lake issues.
