//! What a sink commits through: the embedded SQL catalog or an external REST catalog. Both
//! are the crate's `Catalog` (loads, creates, and the crate's own actions), plus what our own
//! commit path needs: the warehouse's files and a commit of table requirements and updates
//! (the crate builds its `TableCommit` only inside itself).

use async_trait::async_trait;
use iceberg::io::FileIO;
use iceberg::spec::TableMetadata;
use iceberg::table::Table;
use iceberg::{Catalog, TableIdent, TableRequirement, TableUpdate};

use super::storage::Files;

#[async_trait]
pub(crate) trait SinkCatalog: Catalog {
    /// The crate's access to the warehouse's files.
    fn file_io(&self) -> &FileIO;

    /// The warehouse's files, for listing.
    fn files(&self) -> &Files;

    /// The sink's warehouse: every table it writes to must lie under it.
    fn warehouse(&self) -> &str;

    /// Apply `updates` to the table if `requirements` hold (the REST catalog's commit); a
    /// failed requirement or a lost race is `CatalogCommitConflicts`.
    async fn commit_updates(
        &self,
        ident: &TableIdent,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
    ) -> iceberg::Result<Table>;
}

/// A loaded table as either catalog hands it out.
pub(crate) fn table(
    file_io: &FileIO,
    ident: &TableIdent,
    location: String,
    metadata: TableMetadata,
) -> iceberg::Result<Table> {
    Table::builder()
        .file_io(file_io.clone())
        .metadata_location(location)
        .metadata(metadata)
        .identifier(ident.clone())
        .runtime(iceberg::Runtime::try_current()?)
        .build()
}

/// Refuse a table whose location is not under the sink's warehouse. The sink writes data
/// files under a table's location, and maintenance deletes unreferenced ones there, so the
/// catalog (an external REST catalog above all, or whoever edited the catalog file) must not
/// choose where on this host or in which bucket that happens.
pub(crate) fn check_location(
    catalog: &dyn SinkCatalog,
    ident: &TableIdent,
    location: &str,
) -> iceberg::Result<()> {
    let root = catalog.warehouse().trim_end_matches('/');
    let inside = location
        .strip_prefix(root)
        .is_some_and(|rest| rest.starts_with('/'))
        && !location.split('/').any(|segment| segment == "..");
    if inside {
        return Ok(());
    }
    Err(iceberg::Error::new(
        iceberg::ErrorKind::DataInvalid,
        format!(
            "the catalog places {ident} at {location}, outside the sink's warehouse {root}; \
             Tidemark writes only under its warehouse"
        ),
    ))
}
