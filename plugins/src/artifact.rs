//! Precompiled modules on disk, so a restart loads machine code instead of compiling again.
//!
//! An artifact is named by the module's SHA-256 and a key of the engine that compiled it
//! (wasmtime's compatibility hash covers its version and every setting that changes the
//! code). wasmtime refuses to load an artifact from another engine; the file name keeps one
//! from being tried at all.

#![allow(unsafe_code)]

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::{Engine, Module};

use crate::{Error, Result};

/// The engine's part of an artifact's name: 16 hex digits.
pub fn engine_key(engine: &Engine) -> String {
    // SipHash with fixed keys: the same engine gives the same key in every process of this
    // build. A different build may give another key, which only costs one recompile.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Where the artifact of module `sha256` compiled by an engine with `key` lives under `dir`.
pub fn path(dir: &Path, sha256: &str, key: &str) -> PathBuf {
    dir.join(format!("{sha256}.{key}.cwasm"))
}

/// Load machine code written by [`crate::FilterModule::artifact`].
pub(crate) fn deserialize(engine: &Engine, artifact: &[u8]) -> Result<Module> {
    // SAFETY: wasmtime runs deserialized bytes as machine code, so they must come from
    // `Module::serialize` of a compatible engine. Artifacts are only ever written by this
    // host into its own data directory (atomically, after compiling a checked module), and
    // the caller checks the SHA-256 the host recorded for the file before handing it here;
    // wasmtime itself checks the header and the engine's compatibility.
    unsafe { Module::deserialize(engine, artifact) }
        .map_err(|e| Error::Invalid(format!("the precompiled artifact cannot be loaded: {e:#}")))
}
