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
