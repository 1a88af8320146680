//! Blobs on local disk:
//!
//! ```text
//! <root>/packs/…                      content of at most MAX_PACKED bytes, packed (pack/)
//! <root>/<first 2 hex>/<sha256 hex>   one file per larger content (fan-out keeps directories
//!                                     small)
//! <root>/tmp/<uuid>.part              uploads in progress; removed at open (a crash left them)
//! ```
//!
//! An upload is held in memory until it is larger than [`MAX_PACKED`]; only then does it get
//! a temporary file, so a small upload creates no file at all.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use md5::{Digest, Md5};
use sha2::Sha256;

use super::pack::{MAX_PACKED, Packs, sha_bytes};
use super::{
    Blob, BlobStore, ByteStream, GcStats, StoredBlob, counted, hex, is_sha256, validate_sha256,
};
use crate::blocking::blocking;
use crate::error::IoContext;
use crate::{Error, Result};

/// Bytes gathered before each write: one blocking call per MiB, not per network chunk.
const WRITE_CHUNK: usize = 1 << 20;
/// Bytes per chunk of a read.
const READ_CHUNK: u64 = 1 << 20;

pub struct DiskBlobs {
    root: PathBuf,
    tmp: PathBuf,
    /// Held while an upload is moved into place (or an existing copy is touched) and while GC
    /// checks and removes a blob, so GC never removes a blob an upload has just relied on.
    placing: Arc<Mutex<()>>,
    /// `None` for a directory several processes share (the Kafka log's nodes), which keep
    /// every content in a file of its own.
    packs: Option<Arc<Packs>>,
}

impl DiskBlobs {
    /// Open (or create) the store at `root`, packing small content, removing uploads a crash
    /// left unfinished.
    pub fn open(root: &Path) -> Result<DiskBlobs> {
        Self::open_with(root, true)
    }

    /// [`DiskBlobs::open`]; without `pack`, small content gets files too, so processes can
    /// share the directory (packs already there are still read, and written, by this one).
    pub fn open_with(root: &Path, pack: bool) -> Result<DiskBlobs> {
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp).ctx("create", &tmp)?;
        let mut stale = 0;
        for entry in std::fs::read_dir(&tmp).ctx("list", &tmp)? {
            let path = entry.ctx("list", &tmp)?.path();
            std::fs::remove_file(&path).ctx("remove stale upload", &path)?;
            stale += 1;
        }
        if stale > 0 {
            tracing::info!(stale, "removed unfinished uploads from {}", tmp.display());
        }
        Ok(DiskBlobs {
            packs: match pack || root.join("packs").exists() {
                true => Some(Arc::new(Packs::open(&root.join("packs"))?)),
                false => None,
            },
            root: root.to_path_buf(),
            tmp,
            placing: Arc::default(),
        })
    }

    /// Where the blob named `sha256` (already validated) lives.
    pub fn path_of(&self, sha256: &str) -> PathBuf {
        self.root.join(&sha256[..2]).join(sha256)
    }

    /// Store `body`; with `log_syncs`, a packed blob's fsync is left to the log's next group
    /// commit when the log took that over.
    async fn put_stream(
        &self,
        mut body: ByteStream<'_>,
        max_bytes: u64,
        log_syncs: bool,
    ) -> Result<StoredBlob> {
        let mut small = Vec::new();
        let mut size = 0u64;
        let mut rest = None;
        while let Some(chunk) = body.next().await {
            let chunk = counted(chunk, &mut size, max_bytes)?;
            if small.len() + chunk.len() > MAX_PACKED {
                rest = Some(chunk);
                break;
            }
            small.extend_from_slice(&chunk);
        }
        match (rest, &self.packs) {
            (None, Some(packs)) => put_small(packs, small, log_syncs).await,
            (None, None) => {
                let all = futures::stream::iter([Ok(Bytes::from(small))]);
                self.put_file(all.boxed(), max_bytes).await
            }
            (Some(chunk), _) => {
                let head = futures::stream::iter([Ok(Bytes::from(small)), Ok(chunk)]);
                self.put_file(head.chain(body).boxed(), max_bytes).await
            }
        }
    }

    async fn put_file(&self, mut body: ByteStream<'_>, max_bytes: u64) -> Result<StoredBlob> {
        let path = self
            .tmp
            .join(format!("{}.part", uuid::Uuid::now_v7().simple()));
        let mut temp = TempFile(Some(path.clone()));
        let p = path.clone();
        let mut sink = blocking(move || Hashing::create(&p)).await?;
        let mut buf = Vec::with_capacity(WRITE_CHUNK);
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = counted(chunk, &mut size, max_bytes)?;
            buf.extend_from_slice(&chunk);
            if buf.len() >= WRITE_CHUNK {
                (sink, buf) = blocking(move || {
                    sink.write(&buf)?;
                    buf.clear();
                    Ok((sink, buf))
                })
                .await?;
            }
        }
        let (sha256, md5) = blocking(move || {
            sink.write(&buf)?;
            sink.finish()
        })
        .await?;
        let dest = self.path_of(&sha256);
        let placing = self.placing.clone();
        let deduplicated = blocking(move || place(&path, &dest, &placing)).await?;
        temp.0 = None; // moved into place, or removed as a duplicate
        Ok(StoredBlob {
            sha256,
            md5,
            size,
            deduplicated,
        })
    }

    async fn read_blob(&self, sha256: &str, range: Option<Range<u64>>) -> Result<Option<Blob>> {
        validate_sha256(sha256)?;
        if let Some(packs) = &self.packs
            && let Some(bytes) = packs.read(&sha_bytes(sha256))?
        {
            let size = bytes.len() as u64;
            let range = range.unwrap_or(0..size);
            check_range(&range, size)?;
            let part = bytes.slice(range.start as usize..range.end as usize);
            return Ok(Some(Blob {
                size,
                body: futures::stream::iter([Ok(part)]).boxed(),
            }));
        }
        let path = self.path_of(sha256);
        // Opened, and the first chunk read (a whole blob of up to READ_CHUNK bytes), in one
        // trip to the blocking pool.
        let opened = blocking(move || {
            let mut file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::io("open", &path, e)),
            };
            let size = file.metadata().ctx("stat", &path)?.len();
            let range = range.unwrap_or(0..size);
            check_range(&range, size)?;
            if range.start > 0 {
                file.seek(SeekFrom::Start(range.start)).ctx("seek", &path)?;
            }
            let len = range.end - range.start;
            let first = read_chunk(&mut file, len.min(READ_CHUNK)).ctx("read", &path)?;
            Ok(Some((file, size, len - first.len() as u64, first)))
        })
        .await?;
        let Some((file, size, rest, first)) = opened else {
            return Ok(None);
        };
        let rest = futures::stream::try_unfold((file, rest), |(mut file, left)| async move {
            if left == 0 {
                return Ok(None);
            }
            let n = left.min(READ_CHUNK);
            let (file, chunk) = tokio::task::spawn_blocking(move || {
                read_chunk(&mut file, n).map(|chunk| (file, chunk))
            })
            .await
            .map_err(std::io::Error::other)??;
            Ok(Some((chunk, (file, left - n))))
        });
        let body = futures::stream::iter((!first.is_empty()).then_some(Ok(first))).chain(rest);
        Ok(Some(Blob {
            size,
            body: body.boxed(),
        }))
    }
}

/// The next `n` bytes of `file`.
fn read_chunk(file: &mut File, n: u64) -> std::io::Result<Bytes> {
    // `read_to_end` fills spare capacity without zeroing it first (a `vec![0; n]` cost a
    // memset of every byte served).
    let mut chunk = Vec::with_capacity(n as usize);
    file.take(n).read_to_end(&mut chunk)?;
    if chunk.len() as u64 != n {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the blob file is shorter than it was",
        ));
    }
    Ok(Bytes::from(chunk))
}

async fn put_small(packs: &Arc<Packs>, data: Vec<u8>, log_syncs: bool) -> Result<StoredBlob> {
    let sha: [u8; 32] = Sha256::digest(&data).into();
    let md5 = hex(&Md5::digest(&data));
    // One write to the page cache and an index lookup: not worth a blocking thread.
    let (deduplicated, ticket) = packs.put(sha, &data)?;
    if !(log_syncs && packs.log_syncs()) {
        let packs = packs.clone();
        blocking(move || packs.sync_through(ticket)).await?;
    }
    Ok(StoredBlob {
        sha256: hex(&sha),
        md5,
        size: data.len() as u64,
        deduplicated,
    })
}

fn check_range(range: &Range<u64>, size: u64) -> Result<()> {
    if range.start > range.end || range.end > size {
        return Err(Error::BadInput(format!(
            "range {}..{} is outside the blob's {size} bytes",
            range.start, range.end
        )));
    }
    Ok(())
}

impl BlobStore for DiskBlobs {
    fn put<'a>(
        &'a self,
        body: ByteStream<'a>,
        max_bytes: u64,
    ) -> BoxFuture<'a, Result<StoredBlob>> {
        self.put_stream(body, max_bytes, false).boxed()
    }

    fn put_before_append<'a>(
        &'a self,
        body: ByteStream<'a>,
        max_bytes: u64,
    ) -> BoxFuture<'a, Result<StoredBlob>> {
        self.put_stream(body, max_bytes, true).boxed()
    }

    fn sync_with_log(&self) -> Option<crate::log::BeforeSync> {
        let packs = self.packs.clone()?;
        packs.hand_sync_to_log();
        Some(Arc::new(move || packs.sync()))
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
        if let Some(packs) = &self.packs
            && packs.holds(&sha_bytes(sha256))?
        {
            return Ok(true);
        }
        let path = self.path_of(sha256);
        path.try_exists().ctx("look up", &path)
    }

    fn gc(&self, referenced: &HashSet<String>, grace: Duration) -> Result<GcStats> {
        let cutoff = SystemTime::now()
            .checked_sub(grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let cutoff_us = cutoff
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let mut stats = match &self.packs {
            Some(packs) => packs.gc(referenced, cutoff_us)?,
            None => GcStats::default(),
        };
        for dir in std::fs::read_dir(&self.root).ctx("list", &self.root)? {
            let dir = dir.ctx("list", &self.root)?.path();
            let is_fan_out = dir
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 2 && n.bytes().all(|b| b.is_ascii_hexdigit()));
            if !is_fan_out || !dir.is_dir() {
                continue; // `tmp/` and anything that is not ours
            }
            for entry in std::fs::read_dir(&dir).ctx("list", &dir)? {
                let path = entry.ctx("list", &dir)?.path();
                let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if !is_sha256(name) {
                    continue;
                }
                if referenced.contains(name) {
                    stats.kept += 1;
                    continue;
                }
                let _placing = self.placing.lock().unwrap();
                match remove_if_older(&path, cutoff)? {
                    Some(bytes) => {
                        stats.removed += 1;
                        stats.bytes_freed += bytes;
                    }
                    None => stats.kept += 1,
                }
            }
        }
        Ok(stats)
    }
}

/// Remove `path` if it was last modified before `cutoff`; its size if it was removed.
fn remove_if_older(path: &Path, cutoff: SystemTime) -> Result<Option<u64>> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("stat", path, e)),
    };
    if meta.modified().ctx("stat", path)? >= cutoff {
        return Ok(None);
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(Some(meta.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// Move the finished upload at `tmp` to `dest`, durably; if `dest` exists the content is
/// already stored: the upload is dropped and the stored copy's time refreshed, so a GC in
/// progress does not take it from under the event about to refer to it. Returns whether the
/// content was there already.
fn place(tmp: &Path, dest: &Path, placing: &Mutex<()>) -> Result<bool> {
    let _placing = placing.lock().unwrap();
    if dest.try_exists().ctx("look up", dest)? {
        File::options()
            .append(true)
            .open(dest)
            .and_then(|f| f.set_modified(SystemTime::now()))
            .ctx("touch", dest)?;
        std::fs::remove_file(tmp).ctx("remove", tmp)?;
        return Ok(true);
    }
    let dir = dest.parent().expect("a blob path has a fan-out directory");
    let new_dir = !dir.exists();
    std::fs::create_dir_all(dir).ctx("create", dir)?;
    std::fs::rename(tmp, dest).ctx("move into place", dest)?;
    sync_dir(dir)?;
    if new_dir {
        sync_dir(dir.parent().expect("the store has a root"))?;
    }
    Ok(false)
}

/// Make a rename or a new entry in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).ctx("sync", dir)
}

/// Removes an upload's temporary file unless it was moved into place, also when the upload is
/// abandoned half-way (its future dropped because the client went away).
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// An upload's temporary file and the digests of what was written to it.
struct Hashing {
    file: File,
    path: PathBuf,
    sha256: Sha256,
    md5: Md5,
}

impl Hashing {
    fn create(path: &Path) -> Result<Hashing> {
        Ok(Hashing {
            file: File::create_new(path).ctx("create", path)?,
            path: path.to_path_buf(),
            sha256: Sha256::new(),
            md5: Md5::new(),
        })
    }

    fn write(&mut self, buf: &[u8]) -> Result<()> {
        self.file.write_all(buf).ctx("write", &self.path)?;
        self.sha256.update(buf);
        self.md5.update(buf);
        Ok(())
    }

    /// Fsync; the hex SHA-256 and MD5.
    fn finish(self) -> Result<(String, String)> {
        self.file.sync_all().ctx("sync", &self.path)?;
        Ok((hex(&self.sha256.finalize()), hex(&self.md5.finalize())))
    }
}
