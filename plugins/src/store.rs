//! Filter versions, event-sourced on `_config` through the catalog, and their compiled code.
//!
//! Catalog kinds:
//! - `filter_version`, named `NAME@0000000003`: one uploaded version (hash, size, limits, who
//!   and when). Created once; a deletion marks it deleted instead of removing it, so a
//!   version number is never given to other code.
//! - `filter_module`, named by the module's SHA-256: its size. The bytes are a blob of the
//!   content store (`--content-store`), stored once however many versions share them; every
//!   node sharing that store compiles from there, and blob GC keeps the modules of live
//!   versions ([`Filters::live_modules`]). Catalogs written before kept the bytes in
//!   `filter_module_chunk` entries (`SHA/0000`, base64); those are still read.
//!
//! Compiled code is cached in memory by module hash and on disk as precompiled artifacts
//! (`artifact.rs`), so a restart loads machine code instead of compiling again. Compiling
//! happens where the server's [`crate::Compiler`] says (a child process on a server), one
//! module at a time. A filter keeps at most `max_versions` live versions
//! (`version_cap.rs`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tidemark_core::blobs::BlobStore;
use tidemark_core::catalog::{Action, Catalog, Entry};

use crate::compile::Compiler;
use crate::stats::FilterStats;
pub use crate::version_cap::Users;
use crate::{Error, FilterEngine, FilterModule, Limits, Result, ServerLimits};

pub const VERSION_KIND: &str = "filter_version";
pub const MODULE_KIND: &str = "filter_module";
/// Module bytes as catalogs before the content store kept them (read, never written).
pub const CHUNK_KIND: &str = "filter_module_chunk";

/// A version's limits as stored and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsSpec {
    pub memory_bytes: usize,
    pub fuel: u64,
    pub timeout_ms: u64,
    pub module_bytes: usize,
    pub compile_ms: u64,
    pub tables: usize,
    pub table_elements: usize,
}

impl From<Limits> for LimitsSpec {
    fn from(l: Limits) -> Self {
        LimitsSpec {
            memory_bytes: l.memory_bytes,
            fuel: l.fuel,
            timeout_ms: l.deadline.as_millis() as u64,
            module_bytes: l.module_bytes,
            compile_ms: l.compile.as_millis() as u64,
            tables: l.tables,
            table_elements: l.table_elements,
        }
    }
}

impl From<LimitsSpec> for Limits {
    fn from(l: LimitsSpec) -> Self {
        Limits {
            memory_bytes: l.memory_bytes,
            fuel: l.fuel,
            deadline: Duration::from_millis(l.timeout_ms),
            module_bytes: l.module_bytes,
            compile: Duration::from_millis(l.compile_ms),
            tables: l.tables,
            table_elements: l.table_elements,
        }
    }
}

/// Limits an upload asks for; the rest are the server's defaults.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    pub memory_bytes: Option<usize>,
    pub fuel: Option<u64>,
    pub timeout_ms: Option<u64>,
}

/// One uploaded version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub name: String,
    pub version: u32,
    pub sha256: String,
    pub size: usize,
    pub abi_version: i32,
    pub has_init: bool,
    pub limits: LimitsSpec,
    pub uploaded_at: String,
    pub uploaded_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
}

impl VersionRecord {
    pub fn reference(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// A subscription's `filter`: `NAME` (the latest version) or `NAME@VERSION`.
pub fn parse_reference(reference: &str) -> Result<(&str, Option<u32>)> {
    let (name, version) = match reference.split_once('@') {
        None => (reference, None),
        Some((name, v)) => {
            let v: u32 = v.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
                Error::Invalid(format!(
                    "'{reference}' is not NAME or NAME@VERSION (VERSION a number from 1)"
                ))
            })?;
            (name, Some(v))
        }
    };
    check_name(name)?;
    Ok((name, version))
}

pub fn check_name(name: &str) -> Result<()> {
    tidemark_core::catalog::check_entity_name("filter", name).map_err(Error::Invalid)
}

fn entry_name(name: &str, version: u32) -> String {
    format!("{name}@{version:010}")
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> String {
    tidemark_core::time::format_us(tidemark_core::time::now_us())
}

#[derive(Serialize, Deserialize)]
struct ModuleManifest {
    size: usize,
    /// Chunks in the catalog (older catalogs); 0: the bytes are a blob of the content store.
    #[serde(default, skip_serializing_if = "is_zero")]
    chunks: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Serialize, Deserialize)]
struct Chunk {
    data: String,
}

/// The result of an upload.
pub struct Uploaded {
    pub record: VersionRecord,
    /// False when the latest version already had these bytes and limits (nothing stored).
    pub created: bool,
    /// Older versions deleted to stay within the version cap.
    pub collected: Vec<u32>,
}

pub struct Filters {
    catalog: Arc<Catalog>,
    /// Where module bytes are (the content store every node sharing it reads).
    blobs: Arc<dyn BlobStore>,
    pub engine: Arc<FilterEngine>,
    /// Where precompiled artifacts are kept; `None` keeps them in memory only.
    artifacts: Option<PathBuf>,
    defaults: Limits,
    /// Compiled modules by hash (under the limits of whichever version loaded them first).
    compiled: Mutex<HashMap<String, Arc<FilterModule>>>,
    /// Modules compiled from WebAssembly, and loaded from a precompiled artifact.
    pub compilations: AtomicU64,
    pub artifact_loads: AtomicU64,
    stats: Mutex<BTreeMap<(String, u32), Arc<FilterStats>>>,
    /// One upload at a time on this node (version numbers are still decided by the log).
    uploading: tokio::sync::Mutex<()>,
    /// Where modules are compiled, and how many versions a filter keeps.
    server: ServerLimits,
    /// One compilation at a time: each may take a compile's whole memory limit.
    compiling: tokio::sync::Semaphore,
}

impl Filters {
    pub fn new(
        catalog: Arc<Catalog>,
        blobs: Arc<dyn BlobStore>,
        engine: Arc<FilterEngine>,
        artifacts: Option<PathBuf>,
        defaults: Limits,
    ) -> Filters {
        Filters {
            catalog,
            blobs,
            engine,
            artifacts,
            defaults,
            compiled: Default::default(),
            compilations: AtomicU64::new(0),
            artifact_loads: AtomicU64::new(0),
            stats: Default::default(),
            uploading: Default::default(),
            server: ServerLimits::default(),
            compiling: tokio::sync::Semaphore::new(1),
        }
        .with_server_limits(ServerLimits::default())
    }

    /// What all filters together may use on this server, and where modules compile.
    pub fn with_server_limits(mut self, server: ServerLimits) -> Filters {
        self.engine.budget.set_limit(server.memory_budget_bytes);
        self.server = server;
        self
    }

    pub fn server_limits(&self) -> &ServerLimits {
        &self.server
    }

    /// Check and compile `bytes` under `limits` where this server compiles: in a child
    /// process, bounded in time and memory, or on a blocking thread. Returns the module and,
    /// from a child, the artifact it made (saved as it is).
    async fn compile(
        &self,
        bytes: &[u8],
        limits: Limits,
    ) -> Result<(Arc<FilterModule>, Option<Vec<u8>>)> {
        let engine = self.engine.clone();
        let joined = |e: tokio::task::JoinError| Error::Invalid(format!("compiling failed: {e}"));
        let _one = self.compiling.acquire().await.expect("never closed");
        let (module, artifact) = match &self.server.compiler {
            Compiler::InProcess => {
                let bytes = bytes.to_vec();
                let m = tokio::task::spawn_blocking(move || {
                    FilterModule::compile(&engine, &bytes, limits)
                })
                .await
                .map_err(joined)??;
                (m, None)
            }
            Compiler::Child {
                program,
                memory_bytes,
            } => {
                FilterModule::precheck(&engine, bytes, &limits)?;
                let artifact = crate::compile::in_child(
                    program,
                    *memory_bytes,
                    engine.metered,
                    bytes,
                    limits.compile,
                )
                .await?;
                let size = bytes.len();
                tokio::task::spawn_blocking(move || {
                    FilterModule::from_artifact(&engine, &artifact, limits, size)
                        .map(|m| (m, Some(artifact)))
                })
                .await
                .map_err(joined)??
            }
        };
        self.compilations.fetch_add(1, Ordering::Relaxed);
        Ok((Arc::new(module), artifact))
    }

    fn limits(&self, req: LimitsRequest) -> Limits {
        let mut l = self.defaults;
        if let Some(m) = req.memory_bytes {
            l.memory_bytes = m;
        }
        if let Some(f) = req.fuel {
            l.fuel = f;
        }
        if let Some(t) = req.timeout_ms {
            l.deadline = Duration::from_millis(t);
        }
        l
    }

    /// Check, compile and store `bytes` as the next version of `name`. `users` says who needs
    /// which version of `name` now: past the version cap, the oldest versions nobody uses are
    /// deleted once the new one is stored, and the upload is refused when too few can go.
    pub async fn upload(
        &self,
        name: &str,
        bytes: Vec<u8>,
        req: LimitsRequest,
        actor: Option<String>,
        users: &(dyn Fn(&str) -> Users + Send + Sync),
    ) -> Result<Uploaded> {
        check_name(name)?;
        let limits = self.limits(req);
        if limits.fuel == 0 || limits.deadline.is_zero() || limits.memory_bytes < 65536 {
            return Err(Error::Invalid(
                "limits: fuel and timeout_ms must be positive, memory_bytes at least 65536 \
                 (one WebAssembly page)"
                    .into(),
            ));
        }
        let sha = sha256_hex(&bytes);
        let _one = self.uploading.lock().await;
        let versions = self.versions(name);
        // The same bytes and limits as the latest version: that version, nothing compiled.
        if let Some(latest) = versions.iter().rev().find(|v| v.deleted_at.is_none())
            && latest.sha256 == sha
            && Limits::from(latest.limits) == limits
        {
            return Ok(Uploaded {
                record: latest.clone(),
                created: false,
                collected: Vec::new(),
            });
        }
        let (module, artifact) = self.compile(&bytes, limits).await?;
        // Decided after compiling, under the upload lock: who uses what is as fresh as it gets.
        let live: Vec<&VersionRecord> =
            versions.iter().filter(|v| v.deleted_at.is_none()).collect();
        let collect =
            crate::version_cap::to_collect(name, &live, &users(name), self.server.max_versions)?;
        self.save_artifact(&sha, &module, artifact).await;
        self.compiled
            .lock()
            .unwrap()
            .entry(sha.clone())
            .or_insert_with(|| module.clone());
        self.store_module(&sha, &bytes, actor.clone()).await?;
        let mut next = versions.last().map_or(1, |v| v.version + 1);
        // Another node may take the same number first; the log decides, the loser moves on.
        for _ in 0..8 {
            let record = VersionRecord {
                name: name.to_string(),
                version: next,
                sha256: sha.clone(),
                size: bytes.len(),
                abi_version: module.abi_version,
                has_init: module.has_init,
                limits: limits.into(),
                uploaded_at: now(),
                uploaded_by: actor.clone(),
                deleted_at: None,
            };
            let spec = serde_json::to_string(&record).expect("serializable");
            match self
                .catalog
                .change(
                    VERSION_KIND,
                    &entry_name(name, next),
                    Action::Create,
                    Some(spec),
                    actor.clone(),
                )
                .await
            {
                Ok(_) => {
                    if !collect.is_empty() {
                        self.mark_deleted(name, &collect, actor.clone()).await?;
                        self.collect_garbage(actor).await?;
                        tracing::info!(
                            filter = name,
                            versions = ?collect,
                            "deleted unused versions past --filter-max-versions {}",
                            self.server.max_versions
                        );
                    }
                    return Ok(Uploaded {
                        record,
                        created: true,
                        collected: collect,
                    });
                }
                Err(tidemark_core::Error::Conflict(_)) => next += 1,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Conflict(format!(
            "filter '{name}': other uploads kept taking the next version number; try again"
        )))
    }

    /// The bytes go to the content store, also when they are there already (that refreshes
    /// the blob for a GC running meanwhile); then the catalog records the module.
    async fn store_module(&self, sha: &str, bytes: &[u8], actor: Option<String>) -> Result<()> {
        let body = futures::stream::iter([Ok(bytes::Bytes::copy_from_slice(bytes))]);
        let stored = self.blobs.put(Box::pin(body), bytes.len() as u64).await?;
        debug_assert_eq!(stored.sha256, sha);
        if self.catalog.get(MODULE_KIND, sha).is_some() {
            return Ok(());
        }
        let manifest = serde_json::to_string(&ModuleManifest {
            size: bytes.len(),
            chunks: 0,
        })
        .expect("serializable");
        create_once(&self.catalog, MODULE_KIND, sha, manifest, actor).await
    }

    /// The module's bytes from the content store (or an older catalog's chunks), checked
    /// against their hash.
    async fn module_bytes(&self, sha: &str) -> Result<Vec<u8>> {
        let missing = || Error::NotFound(format!("the module {sha} is not in the catalog"));
        let manifest: ModuleManifest =
            parse(&self.catalog.get(MODULE_KIND, sha).ok_or_else(missing)?)?;
        let bytes = match self.blobs.read(sha, None).await? {
            Some(blob) => {
                use futures::TryStreamExt;
                let chunks: Vec<bytes::Bytes> = blob.body.try_collect().await.map_err(|e| {
                    Error::Core(tidemark_core::Error::Unavailable(format!(
                        "reading module {sha} from the content store: {e}"
                    )))
                })?;
                chunks.concat()
            }
            None if manifest.chunks > 0 => self.chunked_bytes(sha, &manifest)?,
            None => {
                return Err(Error::NotFound(format!(
                    "the bytes of filter module {sha} are not in this node's content store:                      the module was uploaded through a node with another content store; give                      every node of a cluster the same --content-store (s3://bucket/prefix or                      a directory they share), then upload the filter again"
                )));
            }
        };
        if sha256_hex(&bytes) != sha {
            return Err(corrupt(format!(
                "module {sha}: the stored bytes do not match their hash"
            )));
        }
        Ok(bytes)
    }

    /// The module's bytes from an older catalog, which kept them in chunks.
    fn chunked_bytes(&self, sha: &str, manifest: &ModuleManifest) -> Result<Vec<u8>> {
        let missing = || Error::NotFound(format!("the module {sha} is not in the catalog"));
        let mut bytes = Vec::with_capacity(manifest.size);
        for i in 0..manifest.chunks {
            let chunk: Chunk = parse(
                &self
                    .catalog
                    .get(CHUNK_KIND, &format!("{sha}/{i:04}"))
                    .ok_or_else(missing)?,
            )?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(chunk.data)
                .map_err(|e| corrupt(format!("module {sha} chunk {i}: {e}")))?;
            bytes.extend_from_slice(&data);
        }
        Ok(bytes)
    }

    /// Changes whenever the catalog may have changed: a reference needs resolving again only
    /// then.
    pub fn catalog_position(&self) -> u64 {
        self.catalog.applied()
    }

    /// Every version of `name`, deleted ones included, oldest first.
    pub fn versions(&self, name: &str) -> Vec<VersionRecord> {
        self.catalog
            .list_prefix(VERSION_KIND, &format!("{name}@"), None, usize::MAX)
            .iter()
            .filter_map(|e| parse(e).ok())
            .collect()
    }

    /// Every filter with at least one live version, by name, with all its versions.
    pub fn list(&self) -> Vec<(String, Vec<VersionRecord>)> {
        let mut by_name: BTreeMap<String, Vec<VersionRecord>> = BTreeMap::new();
        for e in self.catalog.list(VERSION_KIND) {
            if let Ok(v) = parse::<VersionRecord>(&e) {
                by_name.entry(v.name.clone()).or_default().push(v);
            }
        }
        by_name
            .into_iter()
            .filter(|(_, v)| v.iter().any(|v| v.deleted_at.is_none()))
            .collect()
    }

    /// The live version a reference names.
    pub fn resolve(&self, reference: &str) -> Result<VersionRecord> {
        let (name, version) = parse_reference(reference)?;
        let versions = self.versions(name);
        let live = |v: &&VersionRecord| v.deleted_at.is_none();
        match version {
            None => versions.iter().rev().find(live).cloned().ok_or_else(|| {
                Error::NotFound(format!("filter '{name}' does not exist; upload it first"))
            }),
            Some(n) => match versions.iter().find(|v| v.version == n) {
                Some(v) if v.deleted_at.is_none() => Ok(v.clone()),
                Some(_) => Err(Error::NotFound(format!(
                    "version {n} of filter '{name}' was deleted"
                ))),
                None => Err(Error::NotFound(format!(
                    "filter '{name}' has no version {n}{}",
                    match versions.iter().rev().find(live) {
                        Some(v) => format!(" (the latest is {})", v.version),
                        None => String::new(),
                    }
                ))),
            },
        }
    }

    /// The compiled module of a version, under its limits: from memory, else from its
    /// precompiled artifact, else compiled from the catalog's bytes (and the artifact saved).
    pub async fn module(&self, v: &VersionRecord) -> Result<Arc<FilterModule>> {
        let limits = Limits::from(v.limits);
        let cached = self.compiled.lock().unwrap().get(&v.sha256).cloned();
        let module = match cached {
            Some(m) => m,
            None => {
                let m = self.load(v).await?;
                self.compiled
                    .lock()
                    .unwrap()
                    .entry(v.sha256.clone())
                    .or_insert(m)
                    .clone()
            }
        };
        if module.limits == limits {
            return Ok(module);
        }
        Ok(Arc::new(module.with_limits(limits)?))
    }

    async fn load(&self, v: &VersionRecord) -> Result<Arc<FilterModule>> {
        let limits = Limits::from(v.limits);
        if let Some(path) = self.artifact_path(&v.sha256) {
            let engine = self.engine.clone();
            let size = v.size;
            let loaded = tokio::task::spawn_blocking(move || -> Result<FilterModule> {
                let file = std::fs::read(&path).map_err(|e| {
                    Error::NotFound(format!("no artifact at {}: {e}", path.display()))
                })?;
                let (digest, artifact) = file
                    .split_at_checked(64)
                    .ok_or_else(|| Error::Invalid(format!("{} is truncated", path.display())))?;
                if digest != sha256_hex(artifact).as_bytes() {
                    return Err(Error::Invalid(format!(
                        "{} does not match its recorded hash",
                        path.display()
                    )));
                }
                FilterModule::from_artifact(&engine, artifact, limits, size)
            })
            .await
            .map_err(|e| Error::Invalid(e.to_string()))?;
            match loaded {
                Ok(m) => {
                    self.artifact_loads.fetch_add(1, Ordering::Relaxed);
                    return Ok(Arc::new(m));
                }
                Err(Error::NotFound(_)) => {}
                Err(e) => tracing::warn!(filter = v.reference(), "recompiling: {e}"),
            }
        }
        let bytes = self.module_bytes(&v.sha256).await?;
        let (module, artifact) = self.compile(&bytes, limits).await?;
        self.save_artifact(&v.sha256, &module, artifact).await;
        Ok(module)
    }

    fn artifact_path(&self, sha: &str) -> Option<PathBuf> {
        let dir = self.artifacts.as_ref()?;
        Some(crate::artifact::path(dir, sha, &self.engine.artifact_key()))
    }

    /// Keep the machine code for the next start: the artifact's SHA-256 (hex), then the
    /// artifact (`artifact`, or the module's serialized), written atomically. A failure only
    /// costs a compile later.
    async fn save_artifact(
        &self,
        sha: &str,
        module: &Arc<FilterModule>,
        artifact: Option<Vec<u8>>,
    ) {
        let Some(path) = self.artifact_path(sha) else {
            return;
        };
        if path.exists() {
            return;
        }
        let module = module.clone();
        let saved = tokio::task::spawn_blocking(move || -> std::result::Result<(), String> {
            let artifact = match artifact {
                Some(a) => a,
                None => module.artifact().map_err(|e| e.to_string())?,
            };
            let dir = path.parent().expect("artifact path has a directory");
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            let mut file = sha256_hex(&artifact).into_bytes();
            file.extend_from_slice(&artifact);
            let name = path.file_name().expect("artifact file name");
            tidemark_core::log::embedded::write_atomically(dir, &name.to_string_lossy(), &file)
                .map_err(|e| e.to_string())
        })
        .await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("saving a precompiled filter artifact: {e}"),
            Err(e) => tracing::warn!("saving a precompiled filter artifact: {e}"),
        }
    }

    /// Mark `name` (every live version) or one version deleted. Whether a subscription uses
    /// it is the caller's to check. Modules no live version uses any more are removed.
    pub async fn delete(
        &self,
        name: &str,
        version: Option<u32>,
        actor: Option<String>,
    ) -> Result<Vec<u32>> {
        check_name(name)?;
        let versions = self.versions(name);
        let doomed: Vec<&VersionRecord> = versions
            .iter()
            .filter(|v| v.deleted_at.is_none() && version.is_none_or(|n| v.version == n))
            .collect();
        if doomed.is_empty() {
            return Err(match version {
                None => Error::NotFound(format!("filter '{name}' does not exist")),
                Some(n) => Error::NotFound(format!("filter '{name}' has no live version {n}")),
            });
        }
        let deleted: Vec<u32> = doomed.iter().map(|v| v.version).collect();
        self.mark_deleted(name, &deleted, actor.clone()).await?;
        self.collect_garbage(actor).await?;
        Ok(deleted)
    }

    /// Mark these live versions of `name` deleted (their numbers are never given again).
    async fn mark_deleted(&self, name: &str, doomed: &[u32], actor: Option<String>) -> Result<()> {
        for v in self.versions(name) {
            if v.deleted_at.is_some() || !doomed.contains(&v.version) {
                continue;
            }
            let mut record = v.clone();
            record.deleted_at = Some(now());
            let spec = serde_json::to_string(&record).expect("serializable");
            self.catalog
                .change(
                    VERSION_KIND,
                    &entry_name(name, v.version),
                    Action::Update,
                    Some(spec),
                    actor.clone(),
                )
                .await?;
        }
        Ok(())
    }

    /// The modules live versions use: blob GC keeps them (the catalog, not the log, refers
    /// to them).
    pub fn live_modules(&self) -> std::collections::HashSet<String> {
        self.catalog
            .list(VERSION_KIND)
            .iter()
            .filter_map(|e| parse::<VersionRecord>(e).ok())
            .filter(|v| v.deleted_at.is_none())
            .map(|v| v.sha256)
            .collect()
    }

    /// Remove the records of modules no live version references (their blobs go with the
    /// next blob GC).
    async fn collect_garbage(&self, actor: Option<String>) -> Result<()> {
        let live = self.live_modules();
        for module in self.catalog.list(MODULE_KIND) {
            if live.contains(&module.name) {
                continue;
            }
            let sha = module.name;
            self.catalog
                .change(MODULE_KIND, &sha, Action::Delete, None, actor.clone())
                .await?;
            for chunk in self
                .catalog
                .list_prefix(CHUNK_KIND, &format!("{sha}/"), None, usize::MAX)
            {
                self.catalog
                    .change(CHUNK_KIND, &chunk.name, Action::Delete, None, actor.clone())
                    .await?;
            }
            self.compiled.lock().unwrap().remove(&sha);
            if let Some(path) = self.artifact_path(&sha) {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(())
    }

    /// The counters of one version on this node.
    pub fn stats(&self, name: &str, version: u32) -> Arc<FilterStats> {
        self.stats
            .lock()
            .unwrap()
            .entry((name.to_string(), version))
            .or_default()
            .clone()
    }

    /// Every version's counters on this node, by name and version.
    pub fn all_stats(&self) -> Vec<((String, u32), Arc<FilterStats>)> {
        let stats = self.stats.lock().unwrap();
        stats.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

fn corrupt(message: String) -> Error {
    Error::Core(tidemark_core::Error::Corrupt(message))
}

fn parse<T: serde::de::DeserializeOwned>(e: &Entry) -> Result<T> {
    serde_json::from_str(&e.spec)
        .map_err(|err| corrupt(format!("{} '{}' in the catalog: {err}", e.kind, e.name)))
}

/// Create an entity that may exist already with the same content (content-addressed).
async fn create_once(
    catalog: &Catalog,
    kind: &str,
    name: &str,
    spec: String,
    actor: Option<String>,
) -> Result<()> {
    if catalog.get(kind, name).is_some() {
        return Ok(());
    }
    match catalog
        .change(kind, name, Action::Create, Some(spec), actor)
        .await
    {
        Ok(_) | Err(tidemark_core::Error::Conflict(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
