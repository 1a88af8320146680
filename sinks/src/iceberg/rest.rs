//! What Tidemark's Iceberg REST catalog (`/iceberg` on the HTTP listener) serves: the
//! namespaces and tables of the server's own catalog (`<data-dir>/iceberg/catalog.db`) and of
//! every Iceberg subscription's SQL catalog. Namespaces and tables are created in the
//! server's catalog (so other nodes' sinks and other writers can use it as their REST
//! catalog); a commit goes to the catalog that holds the table. The HTTP shapes are the
//! server's.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

use iceberg::{Catalog as _, ErrorKind, NamespaceIdent, TableIdent};
use tidemark_core::catalog::Catalog;

use super::{IcebergSpec, SqlCatalog};
use crate::{Error, Result};

/// A table as the REST catalog's `LoadTableResult` carries it.
pub struct Served {
    pub metadata_location: String,
    /// The table metadata, in the spec's JSON form.
    pub metadata: serde_json::Value,
}

/// The SQL catalogs `specs` name, each once, in order; one that cannot be opened is skipped
/// (its subscription's status shows why). REST catalogs are not served again.
fn catalogs(specs: &[IcebergSpec], config: &Catalog) -> Vec<SqlCatalog> {
    let mut seen: HashSet<(PathBuf, String)> = HashSet::new();
    let mut out = Vec::new();
    for spec in specs {
        let Some((path, name)) = spec.sql_catalog() else {
            continue;
        };
        if !path.exists() || !seen.insert((path.clone(), name.to_string())) {
            continue;
        }
        // An S3 warehouse is read with its sink's credentials.
        let secret = spec
            .s3
            .as_ref()
            .and_then(|s| s.secret_access_key.as_deref())
            .and_then(|r| crate::secrets::resolve(config, r).ok());
        let files = match spec.files(secret) {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(
                    "the Iceberg warehouse {} cannot be reached: {e}",
                    spec.warehouse
                );
                continue;
            }
        };
        match SqlCatalog::open(&path, name, &spec.warehouse, files) {
            Ok(c) => out.push(c),
            Err(e) => tracing::warn!(
                "the Iceberg catalog {} cannot be opened: {e}",
                path.display()
            ),
        }
    }
    out
}

fn failed(what: &str, e: iceberg::Error) -> Error {
    Error::Transient(format!("{what}: {e}"))
}

/// Every namespace, in order.
pub async fn namespaces(specs: &[IcebergSpec], config: &Catalog) -> Result<Vec<String>> {
    let mut out = BTreeSet::new();
    for c in catalogs(specs, config) {
        for ns in c
            .list_namespaces(None)
            .await
            .map_err(|e| failed("listing namespaces", e))?
        {
            out.insert(ns.join("."));
        }
    }
    Ok(out.into_iter().collect())
}

/// The tables of `namespace`, in order; `None` when no catalog has the namespace.
pub async fn tables(
    specs: &[IcebergSpec],
    config: &Catalog,
    namespace: &str,
) -> Result<Option<Vec<String>>> {
    let ns = NamespaceIdent::new(namespace.to_string());
    let (mut found, mut out) = (false, BTreeSet::new());
    for c in catalogs(specs, config) {
        if !c
            .namespace_exists(&ns)
            .await
            .map_err(|e| failed("finding a namespace", e))?
        {
            continue;
        }
        found = true;
        for t in c
            .list_tables(&ns)
            .await
            .map_err(|e| failed("listing tables", e))?
        {
            out.insert(t.name);
        }
    }
    Ok(found.then(|| out.into_iter().collect()))
}

/// Table `name` of `namespace`, from the first catalog that has it.
pub async fn load(
    specs: &[IcebergSpec],
    config: &Catalog,
    namespace: &str,
    name: &str,
) -> Result<Option<Served>> {
    let ident = TableIdent::new(NamespaceIdent::new(namespace.to_string()), name.to_string());
    for c in catalogs(specs, config) {
        match c.load_table(&ident).await {
            Ok(t) => {
                let metadata = serde_json::to_value(t.metadata())
                    .map_err(|e| Error::Transient(format!("rendering {ident}: {e}")))?;
                return Ok(Some(Served {
                    metadata_location: t.metadata_location().unwrap_or_default().to_string(),
                    metadata,
                }));
            }
            Err(e) if e.kind() == ErrorKind::TableNotFound => continue,
            Err(e) => return Err(failed(&format!("loading {ident}"), e)),
        }
    }
    Ok(None)
}

/// Why a write to the served catalog was refused: the REST error's status, type and message.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
}

fn refused(status: u16, kind: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        status,
        kind,
        message: message.into(),
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Refused {
    refused(503, "ServiceUnavailableException", format!("{what}: {e}"))
}

/// The server's own catalog: where namespaces and tables made through the REST catalog go.
/// It is the first of `specs` (see [`IcebergSpec::served`]).
fn own(specs: &[IcebergSpec]) -> std::result::Result<SqlCatalog, Refused> {
    let spec = specs
        .first()
        .ok_or_else(|| refused(503, "ServiceUnavailableException", "no catalog is served"))?;
    let (path, name) = spec
        .sql_catalog()
        .expect("the server's catalog is a SQL catalog");
    std::fs::create_dir_all(&spec.warehouse)
        .map_err(|e| unavailable(&format!("creating {}", spec.warehouse), e))?;
    SqlCatalog::open(&path, name, &spec.warehouse, super::storage::Files::Local)
        .map_err(|e| unavailable(&format!("opening {}", path.display()), e))
}

/// Create `namespace` in the server's catalog.
pub async fn create_namespace(
    specs: &[IcebergSpec],
    namespace: &str,
    properties: HashMap<String, String>,
) -> std::result::Result<(), Refused> {
    let ns = NamespaceIdent::new(namespace.to_string());
    let c = own(specs)?;
    if c.namespace_exists(&ns)
        .await
        .map_err(|e| unavailable("finding the namespace", e))?
    {
        return Err(refused(
            409,
            "AlreadyExistsException",
            format!("namespace '{namespace}' already exists"),
        ));
    }
    c.create_namespace(&ns, properties)
        .await
        .map(|_| ())
        .map_err(|e| unavailable("creating the namespace", e))
}

/// What a create-table request names (the REST spec's `CreateTableRequest`).
#[derive(serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CreateTable {
    pub name: String,
    #[serde(default)]
    pub location: Option<String>,
    pub schema: iceberg::spec::Schema,
    #[serde(default)]
    pub partition_spec: Option<iceberg::spec::UnboundPartitionSpec>,
    #[serde(default)]
    pub write_order: Option<iceberg::spec::SortOrder>,
    #[serde(default)]
    pub stage_create: bool,
    #[serde(default)]
    pub properties: HashMap<String, String>,
}

/// Create a table in the server's catalog; its metadata, as served.
pub async fn create_table(
    specs: &[IcebergSpec],
    config: &Catalog,
    namespace: &str,
    request: CreateTable,
) -> std::result::Result<Served, Refused> {
    if request.stage_create {
        return Err(refused(
            406,
            "UnsupportedOperationException",
            "staged table creation is not supported",
        ));
    }
    let name_ok = !request.name.is_empty()
        && request.name.len() <= 255
        && !request.name.contains(['/', '\\', '\0'])
        && request.name != "."
        && request.name != "..";
    if !name_ok {
        return Err(refused(
            400,
            "BadRequestException",
            format!("'{}' is not a table name", request.name),
        ));
    }
    // The server writes the table's metadata files itself: only on its own file system.
    if let Some(l) = &request.location
        && (l.contains("://")
            || !std::path::Path::new(l).is_absolute()
            || l.split('/').any(|segment| segment == ".."))
    {
        return Err(refused(
            400,
            "BadRequestException",
            format!(
                "location '{l}': this catalog keeps tables on the server's file system; give an \
                 absolute path, or none for the server's warehouse"
            ),
        ));
    }
    let ns = NamespaceIdent::new(namespace.to_string());
    let ident = TableIdent::new(ns.clone(), request.name.clone());
    let c = own(specs)?;
    if load(specs, config, namespace, &request.name)
        .await
        .map_err(|e| unavailable("finding the table", e))?
        .is_some()
    {
        return Err(refused(
            409,
            "AlreadyExistsException",
            format!("table '{ident}' already exists"),
        ));
    }
    if !c
        .namespace_exists(&ns)
        .await
        .map_err(|e| unavailable("finding the namespace", e))?
    {
        // A namespace another served catalog holds is made here too.
        let known = namespaces(specs, config)
            .await
            .map_err(|e| unavailable("listing namespaces", e))?;
        if !known.iter().any(|n| n == namespace) {
            return Err(refused(
                404,
                "NoSuchNamespaceException",
                format!("namespace '{namespace}' does not exist"),
            ));
        }
        c.create_namespace(&ns, HashMap::new())
            .await
            .map_err(|e| unavailable("creating the namespace", e))?;
    }
    let creation = iceberg::TableCreation {
        name: request.name,
        location: request.location,
        schema: request.schema,
        partition_spec: request.partition_spec,
        sort_order: request.write_order,
        properties: request.properties,
        format_version: iceberg::spec::FormatVersion::V2,
    };
    match c.create_table(&ns, creation).await {
        Ok(t) => served(&t),
        Err(e) if e.kind() == ErrorKind::TableAlreadyExists => Err(refused(
            409,
            "AlreadyExistsException",
            format!("table '{ident}' already exists"),
        )),
        Err(e) if e.kind() == ErrorKind::DataInvalid => {
            Err(refused(400, "BadRequestException", e.to_string()))
        }
        Err(e) => Err(unavailable(&format!("creating {ident}"), e)),
    }
}

/// What a commit request names (the REST spec's `CommitTableRequest`).
#[derive(serde::Deserialize)]
pub struct CommitTable {
    #[serde(default)]
    pub requirements: Vec<iceberg::TableRequirement>,
    #[serde(default)]
    pub updates: Vec<iceberg::TableUpdate>,
}

/// Commit to table `name` of `namespace`, in the catalog that holds it; its new metadata.
pub async fn commit(
    specs: &[IcebergSpec],
    config: &Catalog,
    namespace: &str,
    name: &str,
    request: CommitTable,
) -> std::result::Result<Served, Refused> {
    use super::catalogs::SinkCatalog as _;
    let ident = TableIdent::new(NamespaceIdent::new(namespace.to_string()), name.to_string());
    for c in catalogs(specs, config) {
        if !c
            .table_exists(&ident)
            .await
            .map_err(|e| unavailable("finding the table", e))?
        {
            continue;
        }
        return match c
            .commit_updates(&ident, request.requirements, request.updates)
            .await
        {
            Ok(t) => served(&t),
            Err(e) if e.kind() == ErrorKind::CatalogCommitConflicts => {
                Err(refused(409, "CommitFailedException", e.to_string()))
            }
            Err(e) if e.kind() == ErrorKind::DataInvalid => {
                Err(refused(400, "BadRequestException", e.to_string()))
            }
            Err(e) => Err(unavailable(&format!("committing to {ident}"), e)),
        };
    }
    Err(refused(
        404,
        "NoSuchTableException",
        format!("table '{ident}' does not exist"),
    ))
}

fn served(t: &iceberg::table::Table) -> std::result::Result<Served, Refused> {
    let metadata = serde_json::to_value(t.metadata())
        .map_err(|e| unavailable(&format!("rendering {}", t.identifier()), e))?;
    Ok(Served {
        metadata_location: t.metadata_location().unwrap_or_default().to_string(),
        metadata,
    })
}
