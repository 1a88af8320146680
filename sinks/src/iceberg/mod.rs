//! The Iceberg sink: a subscription's events as two Apache Iceberg tables,
//! `<namespace>.<name>_journal` (one row per event, columns a superset of the AWS S3 Metadata
//! journal table's) and `<namespace>.<name>_inventory` (one row per live object, its current
//! state), committed exactly once, within `commit_interval_ms` of arriving.
//!
//! Table metadata, manifests and the journal's appends are the `iceberg` crate's; the
//! inventory's overwrites are our own commit path (`overwrite.rs`); data files are written by
//! our own Parquet writer and handed to the crate as file metadata only (docs/lake.md,
//! "Iceberg", says why).
//!
//! # Layout
//! - `schema.rs`: the tables' columns, as Iceberg and Arrow schemas with field ids.
//! - `rows.rs`: events to journal rows (an Arrow batch).
//! - `datafile.rs`: a Parquet data file and its Iceberg `DataFile` from the footer.
//! - `catalogs.rs`: what a sink commits through, whichever catalog it is.
//! - `catalog.rs`: the embedded SQL catalog (SQLite, pyiceberg's `SqlCatalog` layout).
//! - `rest_client.rs`: an external Iceberg REST catalog.
//! - `inventory.rs`: events to inventory rows (the current state of live objects), and back.
//! - `commit.rs`: one committer per table; the exactly-once argument is there.
//! - `backfill.rs`: a new inventory's first commit, from the index's live objects.
//! - `partitioning.rs`: the journal's partition fields, from the settings and from a table.
//! - `overwrite.rs`: the inventory's commits, which replace the partitions whose keys changed.
//! - `compact.rs`: rewriting the journal's small data files into larger ones.
//! - `maintenance.rs`: expiring old snapshots and deleting the files only they used.
//! - `storage.rs`: where a warehouse's files are: a directory, or an S3 bucket through our
//!   `object_store` client given to the crate as its storage.
//! - `rest.rs`: what Tidemark's read-only REST catalog serves (namespaces, tables).
//! - `stream.rs`: the sink as a stream sink: a partition's feed into rows, flushed into data
//!   files on the interval, committed, and only then the subscription's position.

mod backfill;
mod catalog;
mod catalogs;
mod commit;
mod compact;
mod datafile;
mod inventory;
mod maintenance;
mod overwrite;
mod partitioning;
pub mod rest;
mod rest_client;
mod rows;
mod schema;
mod storage;
mod stream;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use iceberg::spec::Schema;
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableIdent};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::sink::{BuildCtx, SinkKind};
use crate::{Error, Result};
pub use catalog::SqlCatalog;
use catalogs::SinkCatalog;
use commit::Committer;

pub const DEFAULT_COMMIT_INTERVAL_MS: u64 = 30_000;
pub const DEFAULT_COMMIT_MAX_ROWS: usize = 100_000;
/// A partition also commits once its buffered records take this many bytes (as read from the
/// log; decoded events take a few times more), so memory stays bounded whatever the rows.
pub const COMMIT_MAX_BYTES: usize = 32 << 20;
/// Table property marking a table Tidemark created: only those are ever cleaned.
pub const MANAGED: &str = "tidemark.managed";
/// Seven days.
pub const DEFAULT_SNAPSHOT_RETENTION_MS: u64 = 7 * 86_400_000;

/// The `iceberg` sink of a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcebergSpec {
    /// Where tables are created (`<warehouse>/<namespace>.db/<table>`): an absolute directory,
    /// or `s3://bucket/prefix`.
    pub warehouse: String,
    /// For `s3://` warehouses: the endpoint, region and credentials (as the parquet sink's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<crate::lake::S3Spec>,
    #[serde(default)]
    pub catalog: CatalogSpec,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Prefix of the table names (`<table>_journal`); the subscription's name by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Commit at least this often while events arrive (and sooner on size).
    #[serde(default = "default_interval")]
    pub commit_interval_ms: u64,
    /// Rows a partition buffers before it commits without waiting for the interval.
    #[serde(default = "default_max_rows")]
    pub commit_max_rows: usize,
    /// Snapshots older than this are expired, and the files only they used deleted.
    #[serde(default = "default_retention")]
    pub snapshot_retention_ms: u64,
    /// The journal's partition fields, in order: one of `year`, `month`, `day`, `hour` (of
    /// the event time) and/or `bucket`. Applies when the table is created.
    #[serde(default = "default_partition")]
    pub partition: Vec<String>,
    /// Whether the inventory table is kept (as S3 Metadata's inventory configuration can be
    /// disabled). Off, only the journal is written; turned on later, the inventory starts
    /// from the index's live objects, as for a new subscription.
    #[serde(default = "default_inventory")]
    pub inventory: bool,
    /// Table properties given to the tables the sink creates (as Kafka Connect's
    /// `iceberg.tables.auto-create-props.*`). The writer honours the table's own
    /// `write.parquet.compression-level` and `write.parquet.page-size-bytes`, set here or
    /// later by any engine.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

/// The table property naming the zstd level of data files, and its default (Iceberg Java's).
pub const COMPRESSION_LEVEL: &str = "write.parquet.compression-level";
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// The table property naming a data page's size before compression, and its default when a
/// table has none (Iceberg's).
pub const PAGE_SIZE_BYTES: &str = "write.parquet.page-size-bytes";
pub const DEFAULT_PAGE_BYTES: usize = 1 << 20;
/// The page size of the tables the sink creates, unless `properties` names another. zstd
/// sizes its tables to each page it compresses, and 32 KiB pages took the journal's pass
/// about 8 % less CPU than 1 MiB ones, in files no larger (docs/PERFORMANCE.md); Parquet
/// itself advises pages of 8 KiB.
pub const NEW_TABLE_PAGE_BYTES: usize = 32 << 10;
/// The page sizes the writer takes: a page is held whole in memory while it is written.
const PAGE_BYTES: std::ops::RangeInclusive<usize> = 1024..=(64 << 20);
/// Properties the sink sets itself when it creates a table.
const OWN_PROPERTIES: [(&str, &str); 3] = [
    ("write.format.default", "parquet"),
    ("write.parquet.compression-codec", "zstd"),
    (MANAGED, "true"),
];

/// A zstd level from a table property's text, if it is one the writer takes.
fn zstd_level(text: &str) -> Option<i32> {
    text.trim().parse().ok().filter(|l| (1..=22).contains(l))
}

/// A page size from a table property's text, if it is one the writer takes.
fn page_bytes(text: &str) -> Option<usize> {
    text.trim().parse().ok().filter(|b| PAGE_BYTES.contains(b))
}

/// Why the writer cannot use `value` for table property `name`, if it cannot (only the
/// properties it reads are looked at): for a spec's `properties` and for a table's own.
fn unusable(name: &str, value: &str) -> Option<String> {
    let what = match name {
        COMPRESSION_LEVEL if zstd_level(value).is_none() => "a zstd level (1 to 22)".to_string(),
        PAGE_SIZE_BYTES if page_bytes(value).is_none() => format!(
            "a page size in bytes ({} to {})",
            PAGE_BYTES.start(),
            PAGE_BYTES.end()
        ),
        _ => return None,
    };
    Some(format!("'{value}' is not {what}"))
}

/// How a table's data files are written, from its properties (unset: the defaults).
fn table_format(ident: &TableIdent, props: &HashMap<String, String>) -> Result<datafile::Format> {
    for name in [COMPRESSION_LEVEL, PAGE_SIZE_BYTES] {
        if let Some(why) = props.get(name).and_then(|v| unusable(name, v)) {
            return Err(Error::Config(format!("{ident}: its {name} {why}")));
        }
    }
    Ok(datafile::Format {
        zstd_level: props
            .get(COMPRESSION_LEVEL)
            .and_then(|t| zstd_level(t))
            .unwrap_or(DEFAULT_ZSTD_LEVEL),
        page_bytes: props
            .get(PAGE_SIZE_BYTES)
            .and_then(|t| page_bytes(t))
            .unwrap_or(DEFAULT_PAGE_BYTES),
    })
}

/// Where the tables are registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum CatalogSpec {
    /// A SQLite file in the JDBC catalog layout (pyiceberg's `SqlCatalog`).
    Sql {
        /// The catalog file. A subscription created without one gets the server's own
        /// catalog, `<data-dir>/iceberg/catalog.db` (the one `/iceberg` serves); a spec stored
        /// without one (created before that default) keeps `<warehouse>/catalog.db`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        /// The catalog's name (pyiceberg's `SqlCatalog(name, ...)`).
        #[serde(default = "default_catalog_name")]
        name: String,
    },
    /// An external Iceberg REST catalog.
    Rest {
        /// The catalog's base URI (`/v1/...` is appended), `http://` or `https://`.
        uri: String,
        /// The catalog's warehouse, when it serves several (sent to `/v1/config`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        warehouse: Option<String>,
        /// A bearer token: a reference (`env:`, `file:`, `secret:`) or a value stored as a
        /// secret.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// OAuth2 client credentials, `client_id:client_secret`, exchanged for a token; a
        /// reference or a value stored as a secret.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential: Option<String>,
        /// Where credentials are exchanged; `<uri>/v1/oauth/tokens` by default.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        oauth2_server_uri: Option<String>,
        /// The OAuth2 scope asked for; `catalog` by default.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
    },
}

impl Default for CatalogSpec {
    fn default() -> Self {
        CatalogSpec::Sql {
            path: None,
            name: default_catalog_name(),
        }
    }
}

fn default_namespace() -> String {
    "tidemark".into()
}

fn default_catalog_name() -> String {
    "tidemark".into()
}

fn default_interval() -> u64 {
    DEFAULT_COMMIT_INTERVAL_MS
}

fn default_max_rows() -> usize {
    DEFAULT_COMMIT_MAX_ROWS
}

fn default_partition() -> Vec<String> {
    partitioning::DEFAULT
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn default_inventory() -> bool {
    true
}

fn default_retention() -> u64 {
    DEFAULT_SNAPSHOT_RETENTION_MS
}

impl IcebergSpec {
    fn is_s3(&self) -> bool {
        self.warehouse.starts_with("s3://")
    }

    /// The warehouse's files; `secret` is the resolved S3 secret access key.
    fn files(&self, secret: Option<String>) -> Result<storage::Files> {
        if !self.is_s3() {
            return Ok(storage::Files::Local);
        }
        let (store, bucket, _) = crate::lake::connect_s3(
            &self.warehouse,
            &self.s3.clone().unwrap_or_default(),
            secret,
        )
        .map_err(|e| Error::invalid("sink.warehouse", e.to_string()))?;
        Ok(storage::Files::S3(storage::ObjectStorage::new(
            store, bucket,
        )))
    }

    /// The server's own catalog, which its REST catalog serves and writes:
    /// `<data-dir>/iceberg/catalog.db`, tables under `<data-dir>/iceberg/warehouse`.
    pub fn served(data_dir: &Path) -> IcebergSpec {
        IcebergSpec {
            warehouse: data_dir
                .join("iceberg")
                .join("warehouse")
                .display()
                .to_string(),
            s3: None,
            catalog: CatalogSpec::Sql {
                path: Some(served_catalog(data_dir).display().to_string()),
                name: default_catalog_name(),
            },
            namespace: default_namespace(),
            table: None,
            commit_interval_ms: default_interval(),
            commit_max_rows: default_max_rows(),
            snapshot_retention_ms: default_retention(),
            partition: default_partition(),
            inventory: default_inventory(),
            properties: BTreeMap::new(),
        }
    }

    /// A SQL catalog without a path (one from before the server's catalog was the default:
    /// its file is `<warehouse>/catalog.db`).
    pub fn sql_catalog_unplaced(&self) -> bool {
        matches!(self.catalog, CatalogSpec::Sql { path: None, .. })
    }

    /// Give a SQL catalog without a path the file `path`.
    pub fn place_sql_catalog(&mut self, at: &Path) {
        if let CatalogSpec::Sql { path: p @ None, .. } = &mut self.catalog {
            *p = Some(at.display().to_string());
        }
    }

    /// The SQL catalog's file and name; `None` for a REST catalog.
    fn sql_catalog(&self) -> Option<(PathBuf, &str)> {
        match &self.catalog {
            CatalogSpec::Sql { path, name } => Some((
                match path {
                    Some(p) => PathBuf::from(p),
                    None => Path::new(&self.warehouse).join("catalog.db"),
                },
                name,
            )),
            CatalogSpec::Rest { .. } => None,
        }
    }

    /// What status shows for the destination.
    pub fn endpoint(&self, subscription: &str) -> String {
        let catalog = match (&self.catalog, self.sql_catalog()) {
            (CatalogSpec::Rest { uri, .. }, _) => uri.clone(),
            (_, Some((path, _))) => path.display().to_string(),
            (_, None) => String::new(),
        };
        format!(
            "iceberg:{catalog}#{}.{}_journal",
            self.namespace,
            self.table.as_deref().unwrap_or(subscription)
        )
    }

    /// The secrets the spec holds (references once stored), to store, check or forget.
    pub fn secrets_mut(&mut self) -> impl Iterator<Item = &mut String> {
        let s3 = self.s3.as_mut().and_then(|s| s.secret_access_key.as_mut());
        let (token, credential) = match &mut self.catalog {
            CatalogSpec::Rest {
                token, credential, ..
            } => (token.as_mut(), credential.as_mut()),
            CatalogSpec::Sql { .. } => (None, None),
        };
        s3.into_iter().chain(token).chain(credential)
    }
}

/// The server's own catalog file: the default of SQL catalogs, served by `/iceberg`.
pub fn served_catalog(data_dir: &Path) -> PathBuf {
    data_dir.join("iceberg").join("catalog.db")
}

/// An Iceberg sink, shared by the subscription's partition workers.
pub struct Iceberg {
    describe: String,
    spec: IcebergSpec,
    catalog: Arc<dyn SinkCatalog>,
    journal: Managed,
    inventory: Managed,
    journal_commits: Committer<Vec<iceberg::spec::DataFile>>,
    inventory_commits: Committer<overwrite::Changes>,
    /// When maintenance last ran, and when it last looked for orphan files.
    maintained: std::sync::Mutex<Option<std::time::Instant>>,
    orphans_checked: std::sync::Mutex<Option<std::time::Instant>>,
}

/// What writing data files for a table needs to know of it.
#[derive(Clone)]
pub(crate) struct TableInfo {
    schema: Schema,
    /// The journal's partition fields, as the table's spec has them.
    parts: Vec<partitioning::Part>,
    /// The table's root; data files go under `<location>/data/`.
    location: String,
    spec_id: i32,
    /// How its data files are written (its `write.parquet.*` properties).
    format: datafile::Format,
}

/// Refuse settings that can never work, naming the field.
pub fn check(spec: &IcebergSpec) -> Result<()> {
    if spec.is_s3() {
        let bucket = spec.warehouse["s3://".len()..].split('/').next();
        if bucket.is_none_or(str::is_empty) {
            return Err(Error::invalid(
                "sink.warehouse",
                format!("'{}' names no bucket (s3://bucket/prefix)", spec.warehouse),
            ));
        }
        if matches!(&spec.catalog, CatalogSpec::Sql { path: None, .. }) {
            return Err(Error::invalid(
                "sink.catalog.path",
                "an s3:// warehouse needs catalog.path: the SQL catalog is a local SQLite file \
                 (an absolute path)",
            ));
        }
    } else if spec.warehouse.contains("://") {
        return Err(Error::invalid(
            "sink.warehouse",
            format!(
                "'{}': a warehouse is an absolute directory or s3://bucket/prefix",
                spec.warehouse
            ),
        ));
    } else if spec.s3.is_some() {
        return Err(Error::invalid("sink.s3", "only for s3:// warehouses"));
    } else if !Path::new(&spec.warehouse).is_absolute() {
        return Err(Error::invalid(
            "sink.warehouse",
            format!("'{}' must be an absolute path", spec.warehouse),
        ));
    }
    match &spec.catalog {
        CatalogSpec::Sql { path: Some(p), .. } if !Path::new(p).is_absolute() => {
            return Err(Error::invalid(
                "sink.catalog.path",
                format!("'{p}' must be an absolute path"),
            ));
        }
        CatalogSpec::Sql { .. } => {}
        CatalogSpec::Rest {
            uri,
            token,
            credential,
            oauth2_server_uri,
            ..
        } => {
            for (field, url) in [
                ("sink.catalog.uri", Some(uri)),
                ("sink.catalog.oauth2_server_uri", oauth2_server_uri.as_ref()),
            ] {
                if let Some(url) = url
                    && !(url.starts_with("http://") || url.starts_with("https://"))
                {
                    return Err(Error::invalid(
                        field,
                        format!("'{url}' is not an http:// or https:// URL"),
                    ));
                }
            }
            if token.is_some() && credential.is_some() {
                return Err(Error::invalid(
                    "sink.catalog.credential",
                    "give a token or a credential, not both",
                ));
            }
        }
    }
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if !name_ok(&spec.namespace) {
        return Err(Error::invalid(
            "sink.namespace",
            format!("'{}': letters, digits, '_' and '-' only", spec.namespace),
        ));
    }
    if let Some(t) = &spec.table
        && !name_ok(t)
    {
        return Err(Error::invalid(
            "sink.table",
            format!("'{t}': letters, digits, '_' and '-' only"),
        ));
    }
    if !(1_000..=86_400_000).contains(&spec.commit_interval_ms) {
        return Err(Error::invalid(
            "sink.commit_interval_ms",
            format!("{} is outside 1000..=86400000", spec.commit_interval_ms),
        ));
    }
    if !(1_000..=365 * 86_400_000).contains(&spec.snapshot_retention_ms) {
        return Err(Error::invalid(
            "sink.snapshot_retention_ms",
            format!(
                "{} is outside 1000..=31536000000",
                spec.snapshot_retention_ms
            ),
        ));
    }
    partitioning::parse(&spec.partition)?;
    for (name, value) in &spec.properties {
        let field = || format!("sink.properties.{name}");
        if name.trim().is_empty() {
            return Err(Error::invalid(
                "sink.properties",
                "a property name is empty",
            ));
        }
        if iceberg::spec::TableProperties::RESERVED_PROPERTIES.contains(&name.as_str()) {
            return Err(Error::invalid(
                field(),
                "a reserved property (the table's format, schema and snapshots are the \
                 sink's and the catalog's)",
            ));
        }
        if let Some((_, own)) = OWN_PROPERTIES.iter().find(|(n, _)| n == name)
            && !value.eq_ignore_ascii_case(own)
        {
            return Err(Error::invalid(
                field(),
                format!("'{value}': the sink writes only '{own}' here"),
            ));
        }
        if let Some(why) = unusable(name, value) {
            return Err(Error::invalid(field(), why));
        }
    }
    if !(1..=1_000_000).contains(&spec.commit_max_rows) {
        return Err(Error::invalid(
            "sink.commit_max_rows",
            format!("{} is outside 1..=1000000", spec.commit_max_rows),
        ));
    }
    Ok(())
}

/// Open the catalog now, so an unwritable warehouse or catalog file is refused at create time.
/// (An S3 warehouse is reached when the sink runs, with its secret; status shows failures.)
/// (A REST catalog is reached when the sink runs, with its credentials; status shows why it
/// cannot be.)
pub fn probe(spec: &IcebergSpec) -> Result<()> {
    if !spec.is_s3() {
        std::fs::create_dir_all(&spec.warehouse).map_err(|e| {
            Error::invalid(
                "sink.warehouse",
                format!("cannot create {}: {e}", spec.warehouse),
            )
        })?;
    }
    let Some((path, name)) = spec.sql_catalog() else {
        return Ok(());
    };
    SqlCatalog::open(&path, name, &spec.warehouse, storage::Files::Local)
        .map(|_| ())
        .map_err(|e| {
            Error::invalid(
                "sink.catalog",
                format!("cannot open {}: {e}", path.display()),
            )
        })
}

/// The sink `spec` describes.
pub fn build(spec: &IcebergSpec, ctx: &BuildCtx<'_>) -> Result<SinkKind> {
    check(spec)?;
    let resolve = |r: Option<&String>| match r {
        Some(r) => crate::secrets::resolve(ctx.catalog, r).map(Some),
        None => Ok(None),
    };
    let secret = resolve(spec.s3.as_ref().and_then(|s| s.secret_access_key.as_ref()))?;
    let files = spec.files(secret)?;
    let catalog: Arc<dyn SinkCatalog> = match &spec.catalog {
        CatalogSpec::Sql { .. } => {
            let (path, name) = spec.sql_catalog().expect("a SQL catalog");
            Arc::new(
                SqlCatalog::open(&path, name, &spec.warehouse, files)
                    .map_err(|e| Error::Transient(format!("opening the Iceberg catalog: {e}")))?,
            )
        }
        CatalogSpec::Rest {
            uri,
            warehouse,
            token,
            credential,
            oauth2_server_uri,
            scope,
        } => {
            let auth = match (resolve(token.as_ref())?, resolve(credential.as_ref())?) {
                (Some(t), _) => rest_client::Auth::Bearer(t),
                (None, Some(c)) => {
                    rest_client::Auth::client(&c, oauth2_server_uri.clone(), scope.clone())
                }
                (None, None) => rest_client::Auth::None,
            };
            Arc::new(rest_client::RestCatalog::new(
                uri,
                warehouse.clone(),
                &spec.warehouse,
                auth,
                ctx.client.clone(),
                files,
            ))
        }
    };
    let prefix = spec.table.as_deref().unwrap_or(ctx.subscription);
    let ident = |suffix: &str| {
        TableIdent::new(
            NamespaceIdent::new(spec.namespace.clone()),
            format!("{prefix}_{suffix}"),
        )
    };
    Ok(SinkKind::Stream(Arc::new(Iceberg {
        describe: spec.endpoint(ctx.subscription),
        spec: spec.clone(),
        journal: Managed::new(
            catalog.clone(),
            ident("journal"),
            Kind::Journal(partitioning::parse(&spec.partition)?),
            spec,
        ),
        inventory: Managed::new(catalog.clone(), ident("inventory"), Kind::Inventory, spec),
        journal_commits: Committer::new(),
        inventory_commits: Committer::new(),
        maintained: Default::default(),
        orphans_checked: Default::default(),
        catalog,
    })))
}

impl Iceberg {
    /// Expire both tables' old snapshots, at most once a minute (or once per retention when
    /// that is shorter). Failures are logged: the next run tries again.
    async fn maintain(&self) {
        let every = std::time::Duration::from_millis(self.spec.snapshot_retention_ms.min(60_000));
        {
            let mut last = self.maintained.lock().unwrap();
            if last.is_some_and(|t| t.elapsed() < every) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        let retention = self.spec.snapshot_retention_ms;
        // Orphans: on the first run after start (a crash leaves them), then every quarter of
        // their minimum age.
        let orphans_due = {
            let mut last = self.orphans_checked.lock().unwrap();
            let due = last.is_none_or(|t| t.elapsed() >= maintenance::ORPHAN_AGE / 4);
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        };
        if orphans_due {
            for (ident, removed) in [
                (
                    &self.journal.ident,
                    self.journal_commits
                        .exclusive(maintenance::remove_orphans(
                            &*self.catalog,
                            &self.journal.ident,
                        ))
                        .await,
                ),
                (
                    &self.inventory.ident,
                    self.inventory_commits
                        .exclusive(maintenance::remove_orphans(
                            &*self.catalog,
                            &self.inventory.ident,
                        ))
                        .await,
                ),
            ] {
                match removed {
                    Ok(n) if n > 0 => tracing::info!("{ident}: removed {n} orphan files"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("{e}"),
                }
            }
        }
        match self.journal.info().await {
            Ok(info) => {
                let compacted = self
                    .journal_commits
                    .exclusive(compact::compact_journal(
                        &*self.catalog,
                        &self.journal.ident,
                        &info,
                    ))
                    .await;
                match compacted {
                    Ok(n) if n > 0 => {
                        tracing::info!("{}: compacted {n} small files", self.journal.ident)
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("{e}"),
                }
            }
            Err(e) => tracing::warn!("{e}"),
        }
        let merged = self
            .journal_commits
            .exclusive(maintenance::merge_manifests(
                &*self.catalog,
                &self.journal.ident,
            ))
            .await;
        match merged {
            Ok(n) if n > 0 => {
                tracing::info!("{}: merged {n} manifests into one", self.journal.ident)
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("{e}"),
        }
        let journal = self
            .journal_commits
            .exclusive(maintenance::expire(
                &*self.catalog,
                &self.journal.ident,
                retention,
            ))
            .await;
        let inventory = self
            .inventory_commits
            .exclusive(maintenance::expire(
                &*self.catalog,
                &self.inventory.ident,
                retention,
            ))
            .await;
        for (ident, outcome) in [
            (&self.journal.ident, journal),
            (&self.inventory.ident, inventory),
        ] {
            match outcome {
                Ok(e) if e.snapshots > 0 => tracing::info!(
                    "{ident}: expired {} snapshots, deleted {} files",
                    e.snapshots,
                    e.files
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }
}

/// Which of the sink's tables.
#[derive(Clone, PartialEq, Eq)]
enum Kind {
    /// With the partition fields a new journal is created with.
    Journal(Vec<partitioning::Part>),
    Inventory,
}

/// One of the sink's tables: created on first use.
struct Managed {
    catalog: Arc<dyn SinkCatalog>,
    ident: TableIdent,
    kind: Kind,
    /// The table's properties if the sink creates it: its own, then the spec's.
    properties: HashMap<String, String>,
    ready: OnceCell<TableInfo>,
}

impl Managed {
    fn new(
        catalog: Arc<dyn SinkCatalog>,
        ident: TableIdent,
        kind: Kind,
        spec: &IcebergSpec,
    ) -> Managed {
        let own = OWN_PROPERTIES.map(|(k, v)| (k.to_string(), v.to_string()));
        let page = (
            PAGE_SIZE_BYTES.to_string(),
            NEW_TABLE_PAGE_BYTES.to_string(),
        );
        // Given later, the spec's own value replaces the page size.
        let given = spec.properties.iter().map(|(k, v)| (k.clone(), v.clone()));
        Managed {
            catalog,
            ident,
            kind,
            properties: own.into_iter().chain([page]).chain(given).collect(),
            ready: OnceCell::new(),
        }
    }

    /// The table, creating the namespace and the table when missing.
    async fn info(&self) -> Result<TableInfo> {
        self.ready.get_or_try_init(|| self.open()).await.cloned()
    }

    async fn open(&self) -> Result<TableInfo> {
        let ns = self.ident.namespace.clone();
        let failed =
            |what: &str, e: iceberg::Error| Error::Transient(format!("{what} {}: {e}", self.ident));
        if !self
            .catalog
            .namespace_exists(&ns)
            .await
            .map_err(|e| failed("finding the namespace of", e))?
        {
            self.catalog
                .create_namespace(&ns, HashMap::new())
                .await
                .map_err(|e| failed("creating the namespace of", e))?;
        }
        let (table_schema, partition_spec, columns, added) = match &self.kind {
            Kind::Journal(parts) => (
                schema::journal_schema()?,
                partitioning::unbound(parts)?,
                schema::JOURNAL,
                schema::JOURNAL_ADDED,
            ),
            Kind::Inventory => (
                schema::inventory_schema()?,
                schema::inventory_partitioning()?,
                schema::INVENTORY,
                &[][..],
            ),
        };
        let table = match self.catalog.load_table(&self.ident).await {
            Ok(t) => t,
            Err(e) if e.kind() == iceberg::ErrorKind::TableNotFound => {
                let creation = TableCreation::builder()
                    .name(self.ident.name.clone())
                    .schema(table_schema)
                    .partition_spec(partition_spec)
                    .properties(self.properties.clone())
                    .build();
                match self.catalog.create_table(&ns, creation).await {
                    Ok(t) => t,
                    // Another node created it meanwhile.
                    Err(e) if e.kind() == iceberg::ErrorKind::TableAlreadyExists => self
                        .catalog
                        .load_table(&self.ident)
                        .await
                        .map_err(|e| failed("loading", e))?,
                    Err(e) => return Err(failed("creating", e)),
                }
            }
            Err(e) => return Err(failed("loading", e)),
        };
        catalogs::check_location(&*self.catalog, &self.ident, table.metadata().location())
            .map_err(|e| failed("opening", e))?;
        let table = self.add_columns(table, added).await?;
        let m = table.metadata();
        schema::check_ids(m.current_schema(), columns)?;
        schema::check_ids(m.current_schema(), added)?;
        let parts = match &self.kind {
            Kind::Journal(_) => partitioning::of_table(m.default_partition_spec())?,
            Kind::Inventory => Vec::new(),
        };
        Ok(TableInfo {
            parts,
            schema: m.current_schema().as_ref().clone(),
            location: m.location().trim_end_matches('/').to_string(),
            spec_id: m.default_partition_spec_id(),
            format: table_format(&self.ident, m.properties())?,
        })
    }

    /// Add the columns of later event schema versions the table lacks, in order, by a schema
    /// update (Iceberg gives each the next field id); rows written before read them as null.
    async fn add_columns(
        &self,
        mut table: iceberg::table::Table,
        added: &[schema::Column],
    ) -> Result<iceberg::table::Table> {
        use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};
        let failed =
            |e: iceberg::Error| Error::Transient(format!("adding columns to {}: {e}", self.ident));
        for _ in 0..commit::CONFLICT_TRIES {
            let missing: Vec<&schema::Column> = added
                .iter()
                .filter(|c| {
                    table
                        .metadata()
                        .current_schema()
                        .field_by_name(c.name)
                        .is_none()
                })
                .collect();
            if missing.is_empty() {
                return Ok(table);
            }
            let tx = Transaction::new(&table);
            let mut update = tx.update_schema();
            for c in &missing {
                update = update.add_column(AddColumn::optional(c.name, schema::column_type(c)));
            }
            let tx = update.apply(tx).map_err(failed)?;
            match tx.commit(&*self.catalog as &dyn Catalog).await {
                Ok(t) => {
                    let names: Vec<&str> = missing.iter().map(|c| c.name).collect();
                    tracing::info!("{}: added columns {names:?}", self.ident);
                    return Ok(t);
                }
                // Another node's commit came first (maybe adding them): look again.
                Err(e) if e.kind() == iceberg::ErrorKind::CatalogCommitConflicts => {
                    table = self.catalog.load_table(&self.ident).await.map_err(failed)?;
                }
                Err(e) => return Err(failed(e)),
            }
        }
        Err(Error::Transient(format!(
            "adding columns to {}: too many conflicting commits",
            self.ident
        )))
    }

    /// The offset after the last event of `partition` the table reflects (0: none).
    async fn covered(&self, partition: u32) -> Result<u64> {
        Ok(self.covers(partition).await?.unwrap_or(0))
    }

    /// The offset after the last event of `partition` the table reflects; `None` when no
    /// commit has covered the partition yet.
    async fn covers(&self, partition: u32) -> Result<Option<u64>> {
        let table = self
            .catalog
            .load_table(&self.ident)
            .await
            .map_err(|e| Error::Transient(format!("loading {}: {e}", self.ident)))?;
        Ok(commit::covered(table.metadata()).get(&partition).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table's own `write.parquet.*` properties, whoever set them, decide how its files are
    /// written; one the writer cannot use is an error naming the table and the property.
    #[test]
    fn a_tables_format_comes_from_its_properties() {
        let ident = TableIdent::from_strs(["tidemark", "t_journal"]).unwrap();
        let format = |pairs: &[(&str, &str)]| {
            let props = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            table_format(&ident, &props)
        };
        let unset = format(&[]).unwrap();
        assert_eq!((unset.zstd_level, unset.page_bytes), (3, 1 << 20));
        let set = format(&[(COMPRESSION_LEVEL, "9"), (PAGE_SIZE_BYTES, " 8192 ")]).unwrap();
        assert_eq!((set.zstd_level, set.page_bytes), (9, 8192));
        for (name, bad, says) in [
            (
                PAGE_SIZE_BYTES,
                "512",
                "is not a page size in bytes (1024 to 67108864)",
            ),
            (PAGE_SIZE_BYTES, "1MB", "is not a page size"),
            (COMPRESSION_LEVEL, "0", "is not a zstd level (1 to 22)"),
        ] {
            let e = format(&[(name, bad)]).unwrap_err().to_string();
            assert!(
                e.contains("t_journal") && e.contains(&format!("{name} '{bad}' {says}")),
                "{e}"
            );
        }
    }
}
