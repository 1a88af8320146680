//! The content store: object bytes kept as blobs named by their SHA-256, so identical content is
//! stored once however many keys and versions refer to it. Events carry the SHA-256; the blob
//! holds the bytes.
//!
//! Invariants:
//! - a blob is complete before its name exists: it is written to a temporary file (or object),
//!   then moved (or copied) into place, or appended whole to a pack; a reader never sees a
//!   partial blob;
//! - a blob is durable before anything that refers to it is: `put` answers once it is fsynced;
//!   `put_before_append` may leave a packed blob's fsync to the log's next group commit, which
//!   runs it before writing its own records (`sync_with_log`);
//! - uploads stream through constant memory, whatever their size;
//! - garbage collection removes a blob only when no event still in the log refers to it, no
//!   live filter version uses it, and it is older than a grace period, so content whose event
//!   is being appended is kept.
//!
//! # Garbage collection across nodes
//!
//! Several nodes may share one store (`--content-store s3://…` or a shared directory), and any
//! of them may collect while the others upload. The protocol:
//! 1. every upload, also of content the store holds already, leaves the blob's last-modified
//!    time fresh (a file's time is touched; an object is copied over with the same bytes), and
//!    only then does the node append the event (or catalog record) that refers to it;
//! 2. a collection reads every reference first: the whole retained `objects` log and the live
//!    filter versions of the catalog;
//! 3. it removes a blob only when it is unreferenced and older than the grace period
//!    (`--blob-gc-grace-secs`) by the store's own clock (a shared store's is read by writing
//!    an object, so node clocks do not matter), and checks that time again right before the
//!    delete (a HEAD, or a stat under a lock for the disk store); on a shared object store it
//!    deletes only if that check was answered within 250 ms;
//! 4. an upload to a shared object store that refreshed a blob old enough to be collected
//!    (last written about a grace period ago or earlier) looks again 500 ms later, when any
//!    delete decided before its refresh has landed, and puts the blob back if it went; only
//!    then is the upload done and its event appended. Uploads of content written recently
//!    (the common case of duplicates) do not wait.
//!
//! What remains: a reference appended more than the grace period after its upload finished
//! (a node stalled between storing the bytes and appending the event) can find its blob
//! collected; on a shared object store, a DELETE that reaches the store more than 250 ms
//! after it was sent (a stalled connection, a retried request) can remove a blob an upload
//! just refreshed; nodes sharing a store must use the same grace period (an uploader with a
//! longer one skips step 4 for blobs a collector with a shorter one may take); with several
//! processes sharing one directory (the lock is per process), an upload that touches a blob
//! between another process's stat and unlink of it (microseconds) loses it.
//!
//! # Layout
//! - `disk.rs`: [`DiskBlobs`], blobs under `<data-dir>/blobs/` (the default): content of at
//!   most [`MAX_PACKED`] bytes in pack files (`pack/`), larger content in a file each.
//! - `objects.rs`: [`ObjectStoreBlobs`], blobs as objects in an `object_store` (S3).
//! - `gc.rs`: the SHA-256 the retained log refers to, and collecting the rest.
//! - `tests.rs`: the contract every [`BlobStore`] keeps, run against each implementation.

mod disk;
mod gc;
pub(crate) mod objects;
mod pack;
#[cfg(test)]
mod tests;

pub use disk::DiskBlobs;
pub use gc::{Pinned, collect_garbage, collect_periodically, referenced};
pub use objects::ObjectStoreBlobs;
pub use pack::MAX_PACKED;

use std::collections::HashSet;
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use crate::{Error, Result};

/// Bytes as they arrive from a client or leave for one.
pub type ByteStream<'a> = BoxStream<'a, std::io::Result<Bytes>>;

/// A blob just stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    /// Lower-case hex; the blob's name.
    pub sha256: String,
    /// Lower-case hex MD5 of the bytes: the ETag S3 gives a single-part upload.
    pub md5: String,
    pub size: u64,
    /// The same content was stored already; this upload added nothing.
    pub deduplicated: bool,
}

/// A blob being read.
pub struct Blob {
    /// Size of the whole blob (a ranged read returns less).
    pub size: u64,
    pub body: ByteStream<'static>,
}

/// What a garbage collection did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct GcStats {
    /// Blobs left in place: referenced, or younger than the grace period.
    pub kept: u64,
    pub removed: u64,
    /// The removed blobs' sizes.
    pub bytes_freed: u64,
    /// Pack files rewritten without their removed blobs (or deleted, when none was left).
    pub packs_compacted: u64,
    /// Disk space those rewrites gave back.
    pub pack_bytes_reclaimed: u64,
}

/// Where object content is kept: local files or an object store; each one runs the contract
/// suite in `tests.rs`.
pub trait BlobStore: Send + Sync + 'static {
    /// Store `body`, computing its SHA-256 and MD5 as it streams. More than `max_bytes` is
    /// refused with [`Error::Invalid`] on field `body`, and nothing is kept.
    fn put<'a>(&'a self, body: ByteStream<'a>, max_bytes: u64)
    -> BoxFuture<'a, Result<StoredBlob>>;

    /// [`BlobStore::put`] for content whose event the caller appends to the log next: once
    /// [`BlobStore::sync_with_log`] handed durability to the log, the content becomes durable
    /// no later than that append (the log's group commit fsyncs it first), so a small upload
    /// shares one fsync with every other. Elsewhere the same as `put`.
    fn put_before_append<'a>(
        &'a self,
        body: ByteStream<'a>,
        max_bytes: u64,
    ) -> BoxFuture<'a, Result<StoredBlob>> {
        self.put(body, max_bytes)
    }

    /// What the embedded log must run before each fsync of its group commit, so that
    /// [`BlobStore::put_before_append`] may leave its fsync to the log. `None`: this store
    /// makes every put durable on its own.
    fn sync_with_log(&self) -> Option<crate::log::BeforeSync> {
        None
    }

    /// The blob's bytes (only `range` of them if given), or `None` when it is not held.
    fn read<'a>(
        &'a self,
        sha256: &'a str,
        range: Option<Range<u64>>,
    ) -> BoxFuture<'a, Result<Option<Blob>>>;

    /// Whether the blob is held. Blocking (one file lookup, or one request): call it from a
    /// blocking thread.
    fn exists(&self, sha256: &str) -> Result<bool>;

    /// Remove every blob not in `referenced` that is older than `grace`. Blocking: run it off
    /// the async threads.
    fn gc(&self, referenced: &HashSet<String>, grace: Duration) -> Result<GcStats>;
}

/// The next chunk of an upload, added to `size`: a stream that broke off, and a body past
/// `max_bytes` (refused on field `body`), are errors that say so.
fn counted(chunk: std::io::Result<Bytes>, size: &mut u64, max_bytes: u64) -> Result<Bytes> {
    let chunk = chunk
        .map_err(|e| Error::BadInput(format!("the upload broke off after {size} bytes: {e}")))?;
    *size += chunk.len() as u64;
    if *size > max_bytes {
        return Err(Error::invalid(
            "body",
            format!("is larger than {max_bytes} bytes, the most this server stores per object"),
        ));
    }
    Ok(chunk)
}

/// A SHA-256 as blobs are named: 64 lower-case hex characters (anything else could name a
/// path outside the store).
pub fn validate_sha256(sha256: &str) -> Result<()> {
    if is_sha256(sha256) {
        Ok(())
    } else {
        Err(Error::BadInput(format!(
            "'{sha256}' is not a SHA-256: expected 64 lower-case hex characters"
        )))
    }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The id of a new version of stored content (an upload, a restored version): time-ordered
/// and unique, like the event ids.
pub fn new_version_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}
