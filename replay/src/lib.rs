//! Replay and point-in-time recovery (not built yet): index snapshots, re-delivery of a time
//! range, restore of a bucket. Today the index as of an instant is a rebuild from the log up
//! to it (`tidemark_core::rebuild::rebuild_index_until`, behind `state ls --at`,
//! `state rebuild --at` and `GET /v1/objects?at=`).
//!
//! # Layout
//! Empty: see the replay issue.
