//! What Tidemark's read-only Iceberg REST catalog (`/iceberg` on the HTTP listener) serves:
//! the namespaces and tables of every Iceberg subscription, found through their catalogs.
//! The HTTP shapes are the server's; this module only reads catalogs.

use std::collections::{BTreeSet, HashSet};
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

/// The catalogs `specs` name, each once; one that cannot be opened is skipped (its
/// subscription's status shows why).
fn catalogs(specs: &[IcebergSpec], config: &Catalog) -> Vec<SqlCatalog> {
    let mut seen: HashSet<(PathBuf, String)> = HashSet::new();
    let mut out = Vec::new();
    for spec in specs {
        let (path, name) = (spec.catalog_path(), spec.catalog_name().to_string());
        if !path.exists() || !seen.insert((path.clone(), name.clone())) {
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
        match SqlCatalog::open(&path, &name, &spec.warehouse, files) {
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
