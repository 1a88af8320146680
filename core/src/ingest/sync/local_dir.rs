//! A local directory as the external store: every regular file under the root is an object
//! whose key is its relative path with `/`; its SHA-256 and MD5 (the ETag S3 would give a
//! single-part upload) are computed streaming.

use std::io::Read;
use std::path::Path;

use md5::Md5;
use sha2::{Digest, Sha256};

use super::{Entry, Skipped};
use crate::ingest::validate_key;
use crate::{Error, Result};

/// Files under `root` whose key starts with `prefix`, sorted by key. `on_total` gets the
/// number of files once they are found, `on_entry` is called after each file is hashed; listing stops early (returning what it has) once `cancelled`
/// says so. Files that cannot be keys (names not UTF-8, keys over 1024 bytes) are returned
/// apart, with the reason.
pub fn list_dir(
    root: &Path,
    prefix: &str,
    on_total: &dyn Fn(u64),
    on_entry: &dyn Fn(),
    cancelled: &dyn Fn() -> bool,
) -> Result<(Vec<Entry>, Skipped)> {
    let meta = std::fs::metadata(root).map_err(|e| Error::io("read directory", root, e))?;
    if !meta.is_dir() {
        return Err(Error::invalid(
            "source",
            format!("{} is not a directory", root.display()),
        ));
    }
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    walk(root, "", &mut files, &mut skipped)?;
    files.retain(|(key, _)| key.starts_with(prefix));
    files.sort_by(|a, b| a.0.cmp(&b.0));
    on_total(files.len() as u64);
    let mut entries = Vec::with_capacity(files.len());
    for (key, path) in files {
        if cancelled() {
            break;
        }
        let (size, sha256, md5) = digest(&path)?;
        entries.push(Entry {
            content_type: content_type_of(&key).map(str::to_string),
            key,
            size,
            etag: Some(md5),
            sha256: Some(sha256),
            metadata: None,
        });
        on_entry();
    }
    Ok((entries, skipped))
}

/// Collect (key, path) of regular files; symbolic links to directories are not followed, so
/// a link cycle cannot loop.
fn walk(
    dir: &Path,
    at: &str,
    files: &mut Vec<(String, std::path::PathBuf)>,
    skipped: &mut Vec<(String, String)>,
) -> Result<()> {
    for item in std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))? {
        let item = item.map_err(|e| Error::io("read directory", dir, e))?;
        let path = item.path();
        let Some(name) = item.file_name().to_str().map(str::to_string) else {
            skipped.push((path.display().to_string(), "file name is not UTF-8".into()));
            continue;
        };
        let key = format!("{at}{name}");
        let kind = item.file_type().map_err(|e| Error::io("stat", &path, e))?;
        if kind.is_dir() {
            walk(&path, &format!("{key}/"), files, skipped)?;
        } else if path.is_file() {
            match validate_key(&key) {
                Ok(()) => files.push((key, path)),
                Err(why) => skipped.push((key, format!("not a valid key: {why}"))),
            }
        }
    }
    Ok(())
}

/// Size, SHA-256 hex and MD5 hex of a file, read once.
fn digest(path: &Path) -> Result<(i64, String, String)> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let (mut sha, mut md5) = (Sha256::new(), Md5::new());
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0i64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        md5.update(&buf[..n]);
        size += n as i64;
    }
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    Ok((size, hex(&sha.finalize()), hex(&md5.finalize())))
}

/// A directory has no content types: the extension is the only hint there is.
fn content_type_of(key: &str) -> Option<&'static str> {
    let ext = key.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "txt" | "log" => "text/plain",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "md" => "text/markdown",
        "js" => "text/javascript",
        "json" => "application/json",
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "parquet" => "application/vnd.apache.parquet",
        "avro" => "application/avro",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "mp4" => "video/mp4",
        "mp3" => "audio/mpeg",
        _ => return None,
    })
}
