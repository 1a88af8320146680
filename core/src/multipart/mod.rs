//! Where the parts of S3 multipart uploads wait for their completion: in the content store, so
//! a part sent to any node sharing it is there when any node completes the upload.
//!
//! An upload is a description (the S3 front's `upload.json`, opaque here) and its parts, each
//! named by its number and MD5. Invariants every store keeps:
//! - a part is visible under its name only once all of its bytes are stored, so its name's MD5
//!   is always the MD5 of its content;
//! - uploads in progress are state in the store only, so they survive a restart;
//! - removing an upload removes its description first, so a crash halfway leaves no upload
//!   that looks alive.
//!
//! # Layout
//! - `files.rs`: [`FileParts`], files under `<content-store>/multipart/` (the default).
//! - `objects.rs`: [`ObjectStoreParts`], objects under `<prefix>/multipart/` (S3).
//! - `tests.rs`: the contract, run against both.

mod files;
mod objects;
#[cfg(test)]
mod tests;

pub use files::FileParts;
pub use objects::ObjectStoreParts;

use std::collections::BTreeMap;
use std::time::SystemTime;

use futures::future::BoxFuture;

use crate::blobs::ByteStream;
use crate::{Error, Result};

/// A received part, as its name records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    pub number: i32,
    /// Lower-case hex MD5 of the part: its ETag.
    pub md5: String,
    pub size: u64,
    pub modified: SystemTime,
}

impl PartInfo {
    /// `<nnnnn>.<md5>.part`.
    fn name(&self) -> String {
        part_name(self.number, &self.md5)
    }
}

fn part_name(number: i32, md5: &str) -> String {
    format!("{number:05}.{md5}.part")
}

/// The number and MD5 a part's name records, if it is a part's name.
fn parse_part_name(name: &str) -> Option<(i32, &str)> {
    let (number, md5) = name.strip_suffix(".part")?.split_once('.')?;
    Some((number.parse().ok()?, md5))
}

/// Keep the newest part of each number (a number sent twice, on two nodes at once).
fn newest(parts: impl IntoIterator<Item = PartInfo>) -> BTreeMap<i32, PartInfo> {
    let mut by_number = BTreeMap::<i32, PartInfo>::new();
    for part in parts {
        match by_number.get(&part.number) {
            Some(p) if p.modified > part.modified => {}
            _ => {
                by_number.insert(part.number, part);
            }
        }
    }
    by_number
}

/// An upload in progress, as [`PartStore::uploads`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenUpload {
    pub id: String,
    /// What the upload was created with (opaque here).
    pub description: Vec<u8>,
}

/// Upload ids are ours (32 hex characters), so one names no other path.
pub fn check_upload_id(upload_id: &str) -> Result<()> {
    if upload_id.len() == 32 && upload_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(Error::NotFound(format!(
            "upload '{upload_id}' does not exist: it was never created, or was completed or \
             aborted"
        )))
    }
}

/// Where multipart uploads in progress are kept. Upload ids are checked by the caller
/// ([`check_upload_id`]).
pub trait PartStore: Send + Sync + 'static {
    /// Record a new upload with its description.
    fn create<'a>(&'a self, upload_id: &'a str, description: Vec<u8>) -> BoxFuture<'a, Result<()>>;

    /// The upload's description, or `None` when there is no such upload.
    fn description<'a>(&'a self, upload_id: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>>;

    /// Every upload in progress.
    fn uploads(&self) -> BoxFuture<'_, Result<Vec<OpenUpload>>>;

    /// Store part `number` of the upload (at most `max_bytes`), replacing an earlier part of
    /// that number; its MD5 in hex. Too many bytes is [`Error::Invalid`] on field `body`; a
    /// body that breaks off is [`Error::BadInput`].
    fn put_part<'a>(
        &'a self,
        upload_id: &'a str,
        number: i32,
        body: ByteStream<'a>,
        max_bytes: u64,
    ) -> BoxFuture<'a, Result<String>>;

    /// The parts received, by number.
    fn parts<'a>(&'a self, upload_id: &'a str) -> BoxFuture<'a, Result<BTreeMap<i32, PartInfo>>>;

    /// The bytes of `parts`, one after another, streamed.
    fn concatenated(&self, upload_id: &str, parts: Vec<PartInfo>) -> ByteStream<'static>;

    /// Remove the upload and its parts (the description first).
    fn remove<'a>(&'a self, upload_id: &'a str) -> BoxFuture<'a, Result<()>>;
}
