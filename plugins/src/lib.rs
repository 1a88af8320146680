//! WASM filter plugins (not built yet): the filter ABI, the wasmtime host with its sandbox
//! limits, and filter versions. Until this lands, subscriptions cannot reference filters.
//!
//! # Layout
//! Empty: see the WASM filter issue.
