//! Where a warehouse's files are: a local directory (the crate's own file storage), or an
//! S3-compatible bucket through our `object_store` client, given to the crate as its `Storage`
//! so it needs no S3 client of its own. Listing (for orphan and old-metadata removal) is ours:
//! the crate's storage cannot list.

use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use iceberg::io::{
    FileIO, FileIOBuilder, FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage,
    StorageConfig, StorageFactory,
};
use iceberg::{ErrorKind, Result as IResult};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

/// A warehouse's files.
#[derive(Clone, Debug)]
pub(crate) enum Files {
    Local,
    S3(ObjectStorage),
}

impl Files {
    /// The crate's file access for this warehouse.
    pub fn file_io(&self) -> FileIO {
        match self {
            Files::Local => FileIO::new_with_fs(),
            Files::S3(s) => {
                FileIOBuilder::new(Arc::new(ObjectStorageFactory { storage: s.clone() })).build()
            }
        }
    }

    /// Every file under `dir` (a location as the table metadata writes it), with when it was
    /// last modified. A directory that does not exist lists nothing.
    pub async fn list(&self, dir: &str) -> IResult<Vec<(String, SystemTime)>> {
        match self {
            Files::Local => {
                let dir = std::path::PathBuf::from(dir);
                tokio::task::spawn_blocking(move || list_local(&dir))
                    .await
                    .map_err(|e| unexpected(format!("listing: {e}")))
            }
            Files::S3(s) => s.list(dir).await,
        }
    }
}

fn list_local(root: &std::path::Path) -> Vec<(String, SystemTime)> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if let Ok(modified) = meta.modified() {
                out.push((entry.path().to_string_lossy().into_owned(), modified));
            }
        }
    }
    out
}

fn unexpected(message: String) -> iceberg::Error {
    iceberg::Error::new(ErrorKind::Unexpected, message)
}

/// One bucket of an S3-compatible service; locations are `s3://<bucket>/<key>`. The crate's
/// storages are serializable (for engines that ship a `FileIO` elsewhere); ours lives in
/// process only, so a deserialized one has no client and says so when used.
#[derive(Clone, Default, Serialize, Deserialize)]
pub(crate) struct ObjectStorage {
    bucket: String,
    #[serde(skip)]
    store: Option<Arc<dyn ObjectStore>>,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectStorage(s3://{})", self.bucket)
    }
}

impl ObjectStorage {
    pub fn new(store: Arc<dyn ObjectStore>, bucket: String) -> ObjectStorage {
        ObjectStorage {
            bucket,
            store: Some(store),
        }
    }

    fn store(&self) -> IResult<&Arc<dyn ObjectStore>> {
        self.store.as_ref().ok_or_else(|| {
            unexpected(format!(
                "the storage of s3://{} was deserialized: it has no client",
                self.bucket
            ))
        })
    }

    /// The key of a location in this bucket; any other location is refused.
    fn key(&self, location: &str) -> IResult<Path> {
        let rest = location
            .strip_prefix("s3://")
            .or_else(|| location.strip_prefix("s3a://"))
            .and_then(|r| r.strip_prefix(self.bucket.as_str()))
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| {
                iceberg::Error::new(
                    ErrorKind::DataInvalid,
                    format!(
                        "{location} is not in the warehouse's bucket s3://{}",
                        self.bucket
                    ),
                )
            })?;
        Path::parse(rest).map_err(|e| {
            iceberg::Error::new(
                ErrorKind::DataInvalid,
                format!("{location} is not a valid key: {e}"),
            )
        })
    }

    fn location(&self, key: &Path) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    async fn list(&self, dir: &str) -> IResult<Vec<(String, SystemTime)>> {
        let prefix = self.key(dir.trim_end_matches('/'))?;
        let mut out = Vec::new();
        let mut listing = self.store()?.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| failed("listing", dir, e))?;
            out.push((self.location(&meta.location), meta.last_modified.into()));
        }
        Ok(out)
    }
}

fn failed(what: &str, location: &str, e: object_store::Error) -> iceberg::Error {
    let kind = match e {
        object_store::Error::NotFound { .. } => ErrorKind::DataInvalid,
        _ => ErrorKind::Unexpected,
    };
    iceberg::Error::new(kind, format!("{what} {location}: {e}"))
}

#[async_trait]
#[typetag::serde]
impl Storage for ObjectStorage {
    async fn exists(&self, path: &str) -> IResult<bool> {
        match self.store()?.head(&self.key(path)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(failed("checking", path, e)),
        }
    }

    async fn metadata(&self, path: &str) -> IResult<FileMetadata> {
        let meta = self
            .store()?
            .head(&self.key(path)?)
            .await
            .map_err(|e| failed("reading", path, e))?;
        Ok(FileMetadata { size: meta.size })
    }

    async fn read(&self, path: &str) -> IResult<Bytes> {
        self.store()?
            .get(&self.key(path)?)
            .await
            .map_err(|e| failed("reading", path, e))?
            .bytes()
            .await
            .map_err(|e| failed("reading", path, e))
    }

    async fn reader(&self, path: &str) -> IResult<Box<dyn FileRead>> {
        Ok(Box::new(RangeReader {
            storage: self.clone(),
            key: self.key(path)?,
            location: path.to_string(),
        }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> IResult<()> {
        // One PUT of the whole object: readers see all of it or nothing.
        self.store()?
            .put(&self.key(path)?, PutPayload::from(bs))
            .await
            .map(|_| ())
            .map_err(|e| failed("writing", path, e))
    }

    async fn writer(&self, path: &str) -> IResult<Box<dyn FileWrite>> {
        Ok(Box::new(BufferedWriter {
            storage: self.clone(),
            location: path.to_string(),
            buffer: Vec::new(),
            closed: false,
        }))
    }

    async fn delete(&self, path: &str) -> IResult<()> {
        match self.store()?.delete(&self.key(path)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(failed("deleting", path, e)),
        }
    }

    async fn delete_prefix(&self, path: &str) -> IResult<()> {
        for (location, _) in self.list(path).await? {
            self.delete(&location).await?;
        }
        Ok(())
    }

    async fn delete_stream(&self, mut paths: BoxStream<'static, String>) -> IResult<()> {
        while let Some(path) = paths.next().await {
            self.delete(&path).await?;
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> IResult<InputFile> {
        self.key(path)?;
        Ok(InputFile::new(Arc::new(self.clone()), path.to_string()))
    }

    fn new_output(&self, path: &str) -> IResult<OutputFile> {
        self.key(path)?;
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_string()))
    }
}

/// Ranged GETs of one object (readers fetch a Parquet footer, then column chunks).
struct RangeReader {
    storage: ObjectStorage,
    key: Path,
    location: String,
}

#[async_trait]
impl FileRead for RangeReader {
    async fn read(&self, range: Range<u64>) -> IResult<Bytes> {
        self.storage
            .store()?
            .get_range(&self.key, range)
            .await
            .map_err(|e| failed("reading", &self.location, e))
    }
}

/// Collects what is written and PUTs it whole on close: the files written this way are
/// manifests and metadata, a few MiB at most.
struct BufferedWriter {
    storage: ObjectStorage,
    location: String,
    buffer: Vec<u8>,
    closed: bool,
}

#[async_trait]
impl FileWrite for BufferedWriter {
    async fn write(&mut self, bs: Bytes) -> IResult<()> {
        if self.closed {
            return Err(unexpected(format!("{} is already closed", self.location)));
        }
        self.buffer.extend_from_slice(&bs);
        Ok(())
    }

    async fn close(&mut self) -> IResult<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let bytes = Bytes::from(std::mem::take(&mut self.buffer));
        self.storage.write(&self.location, bytes).await
    }
}

/// Hands the crate our storage.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ObjectStorageFactory {
    storage: ObjectStorage,
}

#[typetag::serde]
impl StorageFactory for ObjectStorageFactory {
    fn build(&self, _config: &StorageConfig) -> IResult<Arc<dyn Storage>> {
        self.storage.store()?;
        Ok(Arc::new(self.storage.clone()))
    }
}
