//! The embedded SQL catalog: a SQLite file in the layout of the JDBC catalog that pyiceberg's
//! `SqlCatalog` reads (`iceberg_tables`, `iceberg_namespace_properties`, with the
//! `iceberg_type` column pyiceberg's newer layout adds). Tidemark creates the tables itself.
//!
//! A commit writes the new metadata file, then moves the table's pointer with a
//! compare-and-swap on `metadata_location`; a lost race is a commit conflict, never a lost
//! update. The conflict is not marked retryable, so the crate does not re-apply the commit
//! on its own: the committer re-reads the table and recomputes what it records.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;

use async_trait::async_trait;
use iceberg::io::FileIO;
use iceberg::spec::{TableMetadata, TableMetadataBuilder};
use iceberg::table::Table;
use iceberg::{
    Catalog, Error as IcebergError, ErrorKind, MetadataLocation, Namespace, NamespaceIdent,
    TableCommit, TableCreation, TableIdent, TableRequirement, TableUpdate,
};
use rusqlite::{Connection, OptionalExtension, params};

use super::storage::Files;

type IResult<T> = iceberg::Result<T>;

fn sql_err(e: rusqlite::Error) -> IcebergError {
    IcebergError::new(ErrorKind::Unexpected, "the SQL catalog failed").with_source(e)
}

#[derive(Debug)]
pub struct SqlCatalog {
    name: String,
    warehouse: String,
    conn: Mutex<Connection>,
    files: Files,
    file_io: FileIO,
}

impl SqlCatalog {
    /// Open (creating it and its tables if needed) the catalog file at `path`; tables are
    /// created under `warehouse`, whose files `files` reaches.
    pub(crate) fn open(
        path: &Path,
        name: &str,
        warehouse: &str,
        files: Files,
    ) -> IResult<SqlCatalog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                IcebergError::new(
                    ErrorKind::Unexpected,
                    format!("creating the catalog's directory {}", dir.display()),
                )
                .with_source(e)
            })?;
        }
        let conn = Connection::open(path).map_err(sql_err)?;
        // Readers (pyiceberg) and this writer share the file.
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql_err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS iceberg_tables (
                catalog_name VARCHAR(255) NOT NULL,
                table_namespace VARCHAR(255) NOT NULL,
                table_name VARCHAR(255) NOT NULL,
                metadata_location VARCHAR(1000),
                previous_metadata_location VARCHAR(1000),
                iceberg_type VARCHAR(5),
                PRIMARY KEY (catalog_name, table_namespace, table_name));
             CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (
                catalog_name VARCHAR(255) NOT NULL,
                namespace VARCHAR(255) NOT NULL,
                property_key VARCHAR(255) NOT NULL,
                property_value VARCHAR(1000) NOT NULL,
                PRIMARY KEY (catalog_name, namespace, property_key));",
        )
        .map_err(sql_err)?;
        Ok(SqlCatalog {
            name: name.to_string(),
            warehouse: warehouse.trim_end_matches('/').to_string(),
            conn: Mutex::new(conn),
            file_io: files.file_io(),
            files,
        })
    }

    fn metadata_location(&self, t: &TableIdent) -> IResult<Option<String>> {
        let conn = self.conn.lock().unwrap();
        conn.query_row(
            "SELECT metadata_location FROM iceberg_tables
             WHERE catalog_name = ?1 AND table_namespace = ?2 AND table_name = ?3",
            params![self.name, t.namespace.join("."), t.name],
            |r| r.get::<_, Option<String>>(0),
        )
        .optional()
        .map_err(sql_err)
        .map(Option::flatten)
    }

    fn table(
        &self,
        ident: &TableIdent,
        location: String,
        metadata: TableMetadata,
    ) -> IResult<Table> {
        super::catalogs::table(&self.file_io, ident, location, metadata)
    }

    fn no_table(t: &TableIdent) -> IcebergError {
        IcebergError::new(
            ErrorKind::TableNotFound,
            format!(
                "no table {}.{} in the catalog",
                t.namespace.join("."),
                t.name
            ),
        )
    }
}

#[async_trait]
impl Catalog for SqlCatalog {
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> IResult<Vec<NamespaceIdent>> {
        if parent.is_some() {
            return Ok(Vec::new()); // one level of namespaces
        }
        let conn = self.conn.lock().unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT namespace FROM iceberg_namespace_properties WHERE catalog_name = ?1
                 UNION SELECT table_namespace FROM iceberg_tables WHERE catalog_name = ?1",
            )
            .map_err(sql_err)?;
        let names = stmt
            .query_map(params![self.name], |r| r.get::<_, String>(0))
            .map_err(sql_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql_err)?;
        names
            .iter()
            .map(|n| NamespaceIdent::from_strs(n.split('.')))
            .collect()
    }

    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> IResult<Namespace> {
        let conn = self.conn.lock().unwrap();
        let name = namespace.join(".");
        // pyiceberg marks a namespace with an `exists` property.
        let mut props = properties.clone();
        props
            .entry("exists".into())
            .or_insert_with(|| "true".into());
        for (k, v) in &props {
            conn.execute(
                "INSERT OR REPLACE INTO iceberg_namespace_properties
                 (catalog_name, namespace, property_key, property_value) VALUES (?1, ?2, ?3, ?4)",
                params![self.name, name, k, v],
            )
            .map_err(sql_err)?;
        }
        Ok(Namespace::with_properties(namespace.clone(), properties))
    }

    async fn get_namespace(&self, namespace: &NamespaceIdent) -> IResult<Namespace> {
        let conn = self.conn.lock().unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT property_key, property_value FROM iceberg_namespace_properties
                 WHERE catalog_name = ?1 AND namespace = ?2",
            )
            .map_err(sql_err)?;
        let props = stmt
            .query_map(params![self.name, namespace.join(".")], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(sql_err)?
            .collect::<Result<HashMap<_, _>, _>>()
            .map_err(sql_err)?;
        if props.is_empty() {
            return Err(IcebergError::new(
                ErrorKind::NamespaceNotFound,
                format!("no namespace {} in the catalog", namespace.join(".")),
            ));
        }
        Ok(Namespace::with_properties(namespace.clone(), props))
    }

    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> IResult<bool> {
        Ok(self.get_namespace(namespace).await.is_ok())
    }

    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> IResult<()> {
        self.create_namespace(namespace, properties)
            .await
            .map(|_| ())
    }

    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> IResult<()> {
        if !self.list_tables(namespace).await?.is_empty() {
            return Err(IcebergError::new(
                ErrorKind::Unexpected,
                format!("namespace {} still has tables", namespace.join(".")),
            ));
        }
        let conn = self.conn.lock().unwrap();
        conn.execute(
            "DELETE FROM iceberg_namespace_properties WHERE catalog_name = ?1 AND namespace = ?2",
            params![self.name, namespace.join(".")],
        )
        .map_err(sql_err)?;
        Ok(())
    }

    async fn list_tables(&self, namespace: &NamespaceIdent) -> IResult<Vec<TableIdent>> {
        let conn = self.conn.lock().unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT table_name FROM iceberg_tables
                 WHERE catalog_name = ?1 AND table_namespace = ?2 ORDER BY table_name",
            )
            .map_err(sql_err)?;
        let names = stmt
            .query_map(params![self.name, namespace.join(".")], |r| {
                r.get::<_, String>(0)
            })
            .map_err(sql_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql_err)?;
        Ok(names
            .into_iter()
            .map(|n| TableIdent::new(namespace.clone(), n))
            .collect())
    }

    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> IResult<Table> {
        let ident = TableIdent::new(namespace.clone(), creation.name.clone());
        if self.metadata_location(&ident)?.is_some() {
            return Err(IcebergError::new(
                ErrorKind::TableAlreadyExists,
                format!("table {}.{} exists", namespace.join("."), ident.name),
            ));
        }
        let location = creation.location.clone().unwrap_or_else(|| {
            format!(
                "{}/{}.db/{}",
                self.warehouse,
                namespace.join("."),
                ident.name
            )
        });
        let creation = TableCreation {
            location: Some(location.clone()),
            ..creation
        };
        let metadata = TableMetadataBuilder::from_table_creation(creation)?
            .build()?
            .metadata;
        let at = MetadataLocation::new_with_metadata(location, &metadata);
        metadata.write_to(&self.file_io, &at).await?;
        {
            let conn = self.conn.lock().unwrap();
            conn.execute(
                "INSERT INTO iceberg_tables (catalog_name, table_namespace, table_name,
                 metadata_location, previous_metadata_location, iceberg_type)
                 VALUES (?1, ?2, ?3, ?4, NULL, 'TABLE')",
                params![self.name, namespace.join("."), ident.name, at.to_string()],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    IcebergError::new(ErrorKind::TableAlreadyExists, "the table was just created")
                }
                e => sql_err(e),
            })?;
        }
        self.table(&ident, at.to_string(), metadata)
    }

    async fn load_table(&self, ident: &TableIdent) -> IResult<Table> {
        let location = self
            .metadata_location(ident)?
            .ok_or_else(|| Self::no_table(ident))?;
        let metadata = TableMetadata::read_from(&self.file_io, &location).await?;
        self.table(ident, location, metadata)
    }

    async fn drop_table(&self, ident: &TableIdent) -> IResult<()> {
        let conn = self.conn.lock().unwrap();
        let n = conn
            .execute(
                "DELETE FROM iceberg_tables
                 WHERE catalog_name = ?1 AND table_namespace = ?2 AND table_name = ?3",
                params![self.name, ident.namespace.join("."), ident.name],
            )
            .map_err(sql_err)?;
        match n {
            0 => Err(Self::no_table(ident)),
            _ => Ok(()),
        }
    }

    async fn purge_table(&self, ident: &TableIdent) -> IResult<()> {
        self.drop_table(ident).await
    }

    async fn table_exists(&self, ident: &TableIdent) -> IResult<bool> {
        Ok(self.metadata_location(ident)?.is_some())
    }

    async fn rename_table(&self, _src: &TableIdent, _dest: &TableIdent) -> IResult<()> {
        Err(IcebergError::new(
            ErrorKind::FeatureUnsupported,
            "Tidemark's catalog does not rename tables",
        ))
    }

    async fn register_table(&self, ident: &TableIdent, location: String) -> IResult<Table> {
        let metadata = TableMetadata::read_from(&self.file_io, &location).await?;
        {
            let conn = self.conn.lock().unwrap();
            conn.execute(
                "INSERT INTO iceberg_tables (catalog_name, table_namespace, table_name,
                 metadata_location, previous_metadata_location, iceberg_type)
                 VALUES (?1, ?2, ?3, ?4, NULL, 'TABLE')",
                params![self.name, ident.namespace.join("."), ident.name, location],
            )
            .map_err(sql_err)?;
        }
        self.table(ident, location, metadata)
    }

    async fn update_table(&self, commit: TableCommit) -> IResult<Table> {
        let ident = commit.identifier().clone();
        let current = self.load_table(&ident).await?;
        let before = current
            .metadata_location()
            .map(str::to_string)
            .ok_or_else(|| Self::no_table(&ident))?;
        let staged = commit.apply(current)?;
        let after = staged.metadata_location_result()?.to_string();
        staged
            .metadata()
            .write_to(staged.file_io(), &MetadataLocation::from_str(&after)?)
            .await?;
        self.move_pointer(&ident, &before, &after).await?;
        Ok(staged)
    }
}

#[async_trait]
impl super::catalogs::SinkCatalog for SqlCatalog {
    fn file_io(&self) -> &FileIO {
        &self.file_io
    }

    fn files(&self) -> &Files {
        &self.files
    }

    fn warehouse(&self) -> &str {
        &self.warehouse
    }

    async fn commit_updates(
        &self,
        ident: &TableIdent,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
    ) -> IResult<Table> {
        let current = self.load_table(ident).await?;
        let before = current.metadata_location_result()?.to_string();
        for r in &requirements {
            r.check(Some(current.metadata()))?;
        }
        let mut next = current
            .metadata()
            .clone()
            .into_builder(Some(before.clone()));
        for u in updates {
            next = u.apply(next)?;
        }
        self.swap(ident, &before, next.build()?.metadata).await
    }
}

impl SqlCatalog {
    /// Commit `metadata` as the table's next version, if the table is still at `before`
    /// (our own commit path, for what the crate has no action for).
    async fn swap(
        &self,
        ident: &TableIdent,
        before: &str,
        metadata: TableMetadata,
    ) -> IResult<Table> {
        let after = MetadataLocation::from_str(before)?
            .with_next_version()
            .with_new_metadata(&metadata);
        metadata.write_to(&self.file_io, &after).await?;
        self.move_pointer(ident, before, &after.to_string()).await?;
        self.table(ident, after.to_string(), metadata)
    }

    /// Compare-and-swap the table's metadata location from `before` to `after`.
    async fn move_pointer(&self, ident: &TableIdent, before: &str, after: &str) -> IResult<()> {
        let moved =
            {
                let conn = self.conn.lock().unwrap();
                conn.execute(
                "UPDATE iceberg_tables SET metadata_location = ?1, previous_metadata_location = ?2
                 WHERE catalog_name = ?3 AND table_namespace = ?4 AND table_name = ?5
                 AND metadata_location = ?2",
                params![after, before, self.name, ident.namespace.join("."), ident.name],
            )
            .map_err(sql_err)?
            };
        if moved == 0 {
            // Another committer moved the pointer first: our metadata file is an orphan.
            let _ = self.file_io.delete(after).await;
            return Err(IcebergError::new(
                ErrorKind::CatalogCommitConflicts,
                format!(
                    "table {}.{} changed while committing",
                    ident.namespace.join("."),
                    ident.name
                ),
            ));
        }
        Ok(())
    }
}
