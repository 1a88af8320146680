//! Replay and point-in-time recovery (not built yet): state as of T, re-delivery of a time
//! range, restore of a bucket. Today `tidemark state rebuild` rebuilds the current index from
//! the log (in `tidemark-core`).
//!
//! # Layout
//! Empty: see the replay issue.
