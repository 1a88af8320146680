//! Blobs in an object store (S3 or any `object_store` backend), shared by every node that
//! names the same store (`--content-store s3://bucket/prefix`):
//!
//! ```text
//! <prefix>/blobs/<first 2 hex>/<sha256 hex>   one object per content
//! <prefix>/blobs/tmp/<uuid>                   uploads in progress (GC removes leftovers)
//! <prefix>/blobs/clock                        rewritten by each GC to read the store's clock
//! ```
//!
//! An upload streams to a temporary object while it is hashed (one PUT when small, a
//! multipart upload of [`PART_BYTES`] parts otherwise: constant memory), is then copied under
//! its SHA-256 and the temporary object deleted. Copying over a blob already there writes the
//! same bytes again and so refreshes its last-modified time: that is what tells a GC on another
//! node that the content was just relied on (the protocol is in `mod.rs`). A server-side copy
//! is limited to 5 GiB on S3, as is `--max-object-bytes` by default.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::Sha256;

use super::{Blob, BlobStore, ByteStream, GcStats, StoredBlob, hex, is_sha256, validate_sha256};
use crate::{Error, Result};

/// Bytes per part of a multipart upload (S3's smallest part but the last), and the most an
/// upload buffers before it starts one.
pub const PART_BYTES: usize = 5 << 20;
/// Parts being sent at once: memory per upload stays under `(PARTS_IN_FLIGHT + 1) * PART_BYTES`.
const PARTS_IN_FLIGHT: usize = 2;
/// A collection deletes a blob only if its check of the blob's time was answered within this
/// long; else it checks again next time.
const CHECK_VALID: Duration = Duration::from_millis(250);
/// An upload that refreshed a blob old enough to be collected looks again after this long
/// (twice [`CHECK_VALID`]): a delete decided before the refresh has landed by then, and the
/// upload puts the blob back.
const CONFIRM_AFTER: Duration = Duration::from_millis(500);

pub struct ObjectStoreBlobs {
    store: Arc<dyn ObjectStore>,
    /// `<prefix>/blobs`.
    root: Path,
    /// Runs the requests of the blocking methods (`exists`, `gc`) from blocking threads.
    runtime: tokio::runtime::Handle,
    /// The store's URL, for errors.
    describe: String,
    /// The shortest grace period any collection on this store uses: an upload that refreshes
    /// a blob at least this old makes sure no collection removed it meanwhile.
    grace: Duration,
}

impl ObjectStoreBlobs {
    /// Blobs under `<prefix>/blobs` of `store`. Call it inside the runtime that will run it.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &Path, describe: &str) -> ObjectStoreBlobs {
        ObjectStoreBlobs {
            store,
            root: prefix.clone().join("blobs"),
            runtime: tokio::runtime::Handle::current(),
            describe: describe.to_string(),
            grace: Duration::ZERO,
        }
    }

    /// Collections of this store keep unreferenced blobs for at least `grace`
    /// (`--blob-gc-grace-secs`, the same on every node sharing the store).
    pub fn with_grace(mut self, grace: Duration) -> ObjectStoreBlobs {
        self.grace = grace;
        self
    }

    /// A store in memory (tests, and a node that keeps no content).
    pub fn in_memory() -> ObjectStoreBlobs {
        ObjectStoreBlobs::new(Arc::new(InMemory::new()), &Path::default(), "memory://")
    }

    /// Where the blob named `sha256` (already validated) lives.
    pub fn path_of(&self, sha256: &str) -> Path {
        self.root.clone().join(&sha256[..2]).join(sha256)
    }

    async fn put_stream(&self, body: ByteStream<'_>, max_bytes: u64) -> Result<StoredBlob> {
        let tmp = self
            .root
            .clone()
            .join("tmp")
            .join(uuid::Uuid::now_v7().simple().to_string());
        let uploaded = upload_hashed(&self.store, &tmp, body, max_bytes, &self.describe).await?;
        let mut temp = TempObject::new(self.store.clone(), tmp.clone());
        let dest = self.path_of(&uploaded.sha256);
        let before = self.modified(&dest).await?;
        self.place(&tmp, &dest, before).await?;
        temp.remove().await;
        let deduplicated = before.is_some();
        Ok(StoredBlob {
            sha256: uploaded.sha256,
            md5: uploaded.md5,
            size: uploaded.size,
            deduplicated,
        })
    }

    /// Copy the upload at `tmp` to `dest`, also when the content is there: the copy refreshes
    /// its last-modified time. A blob that was old enough to be collected (last modified
    /// `before`, about the grace period before this copy) may have been chosen by a collection
    /// just before the copy landed: it is looked at again once such a delete has landed, and
    /// put back if it went.
    async fn place(
        &self,
        tmp: &Path,
        dest: &Path,
        before: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<()> {
        let copy = || async {
            self.store
                .copy(tmp, dest)
                .await
                .map_err(|e| failure(&self.describe, "store a blob in", e))
        };
        copy().await?;
        let Some(before) = before else {
            return Ok(());
        };
        let Some(after) = self.modified(dest).await? else {
            return copy().await; // collected right after the copy
        };
        // Chosen by a collection means older than its grace period; less a second, as S3
        // gives last-modified times to the second.
        let young = chrono::Duration::from_std(self.grace).unwrap_or(chrono::Duration::MAX)
            - chrono::Duration::seconds(1);
        if after - before < young {
            return Ok(()); // too young for any collection to have chosen it
        }
        tokio::time::sleep(CONFIRM_AFTER).await;
        if self.modified(dest).await?.is_none() {
            tracing::info!(blob = %dest, "a collection removed a blob as it was uploaded again; put back");
            copy().await?;
        }
        Ok(())
    }

    async fn modified(&self, path: &Path) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        match self.store.head(path).await {
            Ok(meta) => Ok(Some(meta.last_modified)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(failure(&self.describe, "look up a blob in", e)),
        }
    }

    async fn head_size(&self, path: &Path) -> Result<Option<u64>> {
        match self.store.head(path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(failure(&self.describe, "look up a blob in", e)),
        }
    }

    async fn read_blob(&self, sha256: &str, range: Option<Range<u64>>) -> Result<Option<Blob>> {
        validate_sha256(sha256)?;
        let path = self.path_of(sha256);
        let get = match range {
            None => GetOptions::default(),
            Some(range) => {
                let Some(size) = self.head_size(&path).await? else {
                    return Ok(None);
                };
                if range.start > range.end || range.end > size {
                    return Err(Error::BadInput(format!(
                        "range {}..{} is outside the blob's {size} bytes",
                        range.start, range.end
                    )));
                }
                if range.is_empty() {
                    let body = futures::stream::empty().boxed();
                    return Ok(Some(Blob { size, body }));
                }
                GetOptions {
                    range: Some(GetRange::Bounded(range)),
                    ..Default::default()
                }
            }
        };
        let got = match self.store.get_opts(&path, get).await {
            Ok(got) => got,
            // Collected between the look-up and the read.
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(failure(&self.describe, "read a blob from", e)),
        };
        let size = got.meta.size;
        let body = got.into_stream().map_err(std::io::Error::other).boxed();
        Ok(Some(Blob { size, body }))
    }

    /// The store's own time now: GC compares last-modified times with it, so a node's clock
    /// being off does not shorten the grace period.
    async fn store_now(&self) -> Result<chrono::DateTime<chrono::Utc>> {
        let clock = self.root.clone().join("clock");
        let fail = |e| failure(&self.describe, "read the clock of", e);
        self.store
            .put(&clock, PutPayload::default())
            .await
            .map_err(fail)?;
        Ok(self.store.head(&clock).await.map_err(fail)?.last_modified)
    }

    async fn collect(&self, referenced: &HashSet<String>, grace: Duration) -> Result<GcStats> {
        let now = self.store_now().await?;
        let cutoff = chrono::Duration::from_std(grace)
            .ok()
            .and_then(|grace| now.checked_sub_signed(grace))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let mut stats = GcStats::default();
        let mut listing = self.store.list(Some(&self.root));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| failure(&self.describe, "list the blobs of", e))?;
            let parts: Vec<_> = match meta.location.prefix_match(&self.root) {
                Some(parts) => parts.map(|p| p.as_ref().to_string()).collect(),
                None => continue,
            };
            let blob = match parts.as_slice() {
                [fan, name] if is_sha256(name) && name.starts_with(fan.as_str()) => {
                    if referenced.contains(name) {
                        stats.kept += 1;
                        continue;
                    }
                    true
                }
                [tmp, _] if tmp == "tmp" => false, // an upload a crash or a cancel left
                _ => continue,
            };
            if meta.last_modified >= cutoff {
                stats.kept += u64::from(blob);
                continue;
            }
            // Checked again right before the delete: an upload of the same content on any
            // node since the listing refreshed it, and then it stays. A slow answer is not
            // relied on (an upload waits `CONFIRM_AFTER` for deletes decided before it).
            let asked = std::time::Instant::now();
            let fresh = match self.store.head(&meta.location).await {
                Ok(now) => now.last_modified >= cutoff,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(failure(&self.describe, "look up a blob in", e)),
            };
            if fresh || asked.elapsed() > CHECK_VALID {
                stats.kept += u64::from(blob);
                continue;
            }
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(failure(&self.describe, "remove a blob from", e)),
            }
            if blob {
                stats.removed += 1;
                stats.bytes_freed += meta.size;
            }
        }
        Ok(stats)
    }
}

impl BlobStore for ObjectStoreBlobs {
    fn put<'a>(
        &'a self,
        body: ByteStream<'a>,
        max_bytes: u64,
    ) -> BoxFuture<'a, Result<StoredBlob>> {
        self.put_stream(body, max_bytes).boxed()
    }

    fn read<'a>(
        &'a self,
        sha256: &'a str,
        range: Option<Range<u64>>,
    ) -> BoxFuture<'a, Result<Option<Blob>>> {
        self.read_blob(sha256, range).boxed()
    }

    fn exists(&self, sha256: &str) -> Result<bool> {
        validate_sha256(sha256)?;
        let path = self.path_of(sha256);
        Ok(self.runtime.block_on(self.head_size(&path))?.is_some())
    }

    fn gc(&self, referenced: &HashSet<String>, grace: Duration) -> Result<GcStats> {
        self.runtime.block_on(self.collect(referenced, grace))
    }
}

/// What [`upload_hashed`] stored.
pub(crate) struct Hashed {
    pub sha256: String,
    pub md5: String,
    pub size: u64,
}

/// Stream `body` to the object `to` while computing its SHA-256 and MD5; at most `max_bytes`.
/// Nothing is left at `to` when this fails or is dropped half-way (a multipart upload a
/// dropped future leaves is aborted in the background).
pub(crate) async fn upload_hashed(
    store: &Arc<dyn ObjectStore>,
    to: &Path,
    mut body: ByteStream<'_>,
    max_bytes: u64,
    describe: &str,
) -> Result<Hashed> {
    let fail = |e| failure(describe, "upload to", e);
    let (mut sha256, mut md5) = (Sha256::new(), Md5::new());
    let mut size = 0u64;
    let mut small = Vec::new();
    let mut large = Multipart(None);
    while let Some(chunk) = body.next().await {
        let chunk = super::counted(chunk, &mut size, max_bytes)?;
        sha256.update(&chunk);
        md5.update(&chunk);
        match &mut large.0 {
            Some(w) => {
                w.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(fail)?;
                w.put(chunk);
            }
            None => {
                small.extend_from_slice(&chunk);
                if small.len() >= PART_BYTES {
                    let upload = store.put_multipart(to).await.map_err(fail)?;
                    let mut w = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
                    w.put(std::mem::take(&mut small).into());
                    large.0 = Some(w);
                }
            }
        }
    }
    match large.0.take() {
        Some(w) => w.finish().await.map_err(fail)?,
        None => store.put(to, small.into()).await.map_err(fail)?,
    };
    Ok(Hashed {
        sha256: hex(&sha256.finalize()),
        md5: hex(&md5.finalize()),
        size,
    })
}

/// A multipart upload in progress, aborted if it is dropped unfinished.
struct Multipart(Option<WriteMultipart>);

impl Drop for Multipart {
    fn drop(&mut self) {
        if let Some(w) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = w.abort().await;
            });
        }
    }
}

/// A temporary object, deleted once it is no longer needed, also when the request that made
/// it is dropped half-way.
pub(crate) struct TempObject {
    store: Arc<dyn ObjectStore>,
    path: Option<Path>,
}

impl TempObject {
    pub fn new(store: Arc<dyn ObjectStore>, path: Path) -> TempObject {
        TempObject {
            store,
            path: Some(path),
        }
    }

    pub async fn remove(&mut self) {
        if let Some(path) = self.path.take() {
            // A failure leaves an object GC removes once it is older than the grace period.
            let _ = self.store.delete(&path).await;
        }
    }
}

impl Drop for TempObject {
    fn drop(&mut self) {
        if let Some(path) = self.path.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let store = self.store.clone();
            runtime.spawn(async move {
                let _ = store.delete(&path).await;
            });
        }
    }
}

/// A failed request to the store, naming the store and what was being done.
pub(crate) fn failure(describe: &str, doing: &str, e: object_store::Error) -> Error {
    match e {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => Error::Unavailable(format!(
            "cannot {doing} the content store {describe}: access refused ({e}); check the \
             AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY the server runs with"
        )),
        e => Error::Unavailable(format!("cannot {doing} the content store {describe}: {e}")),
    }
}
