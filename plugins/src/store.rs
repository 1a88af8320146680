//! Filter versions, event-sourced on `_config` through the catalog, and their compiled code.
//!
//! Catalog kinds:
//! - `filter_version`, named `NAME@0000000003`: one uploaded version (hash, size, limits, who
//!   and when). Created once; a deletion marks it deleted instead of removing it, so a
//!   version number is never given to other code.
//! - `filter_module`, named by the module's SHA-256, and `filter_module_chunk` (`SHA/0000`):
//!   the module's bytes, in chunks a Kafka message can hold, stored once however many
//!   versions share them. Every node reads modules from here, so uploads reach all nodes.
//!
//! Compiled code is cached in memory by module hash and on disk as precompiled artifacts
//! (`artifact.rs`), so a restart loads machine code instead of compiling again.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tidemark_core::catalog::{Action, Catalog, Entry};

use crate::stats::FilterStats;
use crate::{Error, FilterEngine, FilterModule, Limits, Result};

pub const VERSION_KIND: &str = "filter_version";
pub const MODULE_KIND: &str = "filter_module";
pub const CHUNK_KIND: &str = "filter_module_chunk";
/// Raw bytes per chunk: well under Kafka's default 1 MB message limit once base64-encoded.
const CHUNK_BYTES: usize = 256 << 10;

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
    chunks: usize,
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
}

pub struct Filters {
    catalog: Arc<Catalog>,
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
}

impl Filters {
    pub fn new(
        catalog: Arc<Catalog>,
        engine: Arc<FilterEngine>,
        artifacts: Option<PathBuf>,
        defaults: Limits,
    ) -> Filters {
        Filters {
            catalog,
            engine,
            artifacts,
            defaults,
            compiled: Default::default(),
            compilations: AtomicU64::new(0),
            artifact_loads: AtomicU64::new(0),
            stats: Default::default(),
            uploading: Default::default(),
        }
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

    /// Check, compile and store `bytes` as the next version of `name`.
    pub async fn upload(
        &self,
        name: &str,
        bytes: Vec<u8>,
        req: LimitsRequest,
        actor: Option<String>,
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
            });
        }
        let engine = self.engine.clone();
        let (module, bytes) = tokio::task::spawn_blocking(move || {
            FilterModule::compile(&engine, &bytes, limits).map(|m| (m, bytes))
        })
        .await
        .map_err(|e| Error::Invalid(format!("compiling the module failed: {e}")))??;
        self.compilations.fetch_add(1, Ordering::Relaxed);
        let module = Arc::new(module);
        self.save_artifact(&sha, &module).await;
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
                    return Ok(Uploaded {
                        record,
                        created: true,
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

    async fn store_module(&self, sha: &str, bytes: &[u8], actor: Option<String>) -> Result<()> {
        if self.catalog.get(MODULE_KIND, sha).is_some() {
            return Ok(());
        }
        let chunks: Vec<&[u8]> = bytes.chunks(CHUNK_BYTES).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let spec = serde_json::to_string(&Chunk {
                data: base64::engine::general_purpose::STANDARD.encode(chunk),
            })
            .expect("serializable");
            create_once(
                &self.catalog,
                CHUNK_KIND,
                &format!("{sha}/{i:04}"),
                spec,
                actor.clone(),
            )
            .await?;
        }
        let manifest = serde_json::to_string(&ModuleManifest {
            size: bytes.len(),
            chunks: chunks.len(),
        })
        .expect("serializable");
        create_once(&self.catalog, MODULE_KIND, sha, manifest, actor).await
    }

    /// The module's bytes from the catalog, checked against their hash.
    fn module_bytes(&self, sha: &str) -> Result<Vec<u8>> {
        let missing = || Error::NotFound(format!("the module {sha} is not in the catalog"));
        let manifest: ModuleManifest =
            parse(&self.catalog.get(MODULE_KIND, sha).ok_or_else(missing)?)?;
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
        if sha256_hex(&bytes) != sha {
            return Err(corrupt(format!(
                "module {sha}: the stored bytes do not match their hash"
            )));
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
        let bytes = self.module_bytes(&v.sha256)?;
        let engine = self.engine.clone();
        let module = Arc::new(
            tokio::task::spawn_blocking(move || FilterModule::compile(&engine, &bytes, limits))
                .await
                .map_err(|e| Error::Invalid(e.to_string()))??,
        );
        self.compilations.fetch_add(1, Ordering::Relaxed);
        self.save_artifact(&v.sha256, &module).await;
        Ok(module)
    }

    fn artifact_path(&self, sha: &str) -> Option<PathBuf> {
        let dir = self.artifacts.as_ref()?;
        Some(crate::artifact::path(dir, sha, &self.engine.artifact_key()))
    }

    /// Keep the machine code for the next start: the artifact's SHA-256 (hex), then the
    /// artifact, written atomically. A failure only costs a compile later.
    async fn save_artifact(&self, sha: &str, module: &Arc<FilterModule>) {
        let Some(path) = self.artifact_path(sha) else {
            return;
        };
        if path.exists() {
            return;
        }
        let module = module.clone();
        let saved = tokio::task::spawn_blocking(move || -> std::result::Result<(), String> {
            let artifact = module.artifact().map_err(|e| e.to_string())?;
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
        let mut deleted = Vec::new();
        for v in doomed {
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
            deleted.push(v.version);
        }
        self.collect_garbage(actor).await?;
        Ok(deleted)
    }

    /// Remove stored modules that no live version references.
    async fn collect_garbage(&self, actor: Option<String>) -> Result<()> {
        let live: std::collections::HashSet<String> = self
            .catalog
            .list(VERSION_KIND)
            .iter()
            .filter_map(|e| parse::<VersionRecord>(e).ok())
            .filter(|v| v.deleted_at.is_none())
            .map(|v| v.sha256)
            .collect();
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
