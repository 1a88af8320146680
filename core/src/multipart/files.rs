//! Multipart uploads as files (processes sharing the directory share the uploads):
//!
//! ```text
//! <root>/<upload-id>/upload.json           the upload's description
//! <root>/<upload-id>/<nnnnn>.<md5>.part    a part: number and MD5 in its name
//! <root>/<upload-id>/<uuid>.tmp            a part being received
//! ```
//!
//! A part is written to a `.tmp`, fsynced, then renamed: its final name exists only once all
//! of its bytes are durable.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use md5::{Digest, Md5};

use super::{OpenUpload, PartInfo, PartStore, newest, parse_part_name, part_name};
use crate::blobs::{ByteStream, hex};
use crate::blocking::blocking;
use crate::error::IoContext;
use crate::{Error, Result};

/// Bytes gathered before each write or read: one blocking call per MiB.
const CHUNK: usize = 1 << 20;
const DESCRIPTION: &str = "upload.json";

pub struct FileParts {
    root: PathBuf,
}

impl FileParts {
    pub fn new(root: &Path) -> FileParts {
        FileParts {
            root: root.to_path_buf(),
        }
    }

    fn dir(&self, upload_id: &str) -> PathBuf {
        self.root.join(upload_id)
    }

    async fn receive(
        &self,
        upload_id: &str,
        number: i32,
        mut body: ByteStream<'_>,
        max_bytes: u64,
    ) -> Result<String> {
        let dir = self.dir(upload_id);
        let tmp = dir.join(format!("{}.tmp", uuid::Uuid::now_v7().simple()));
        let t = tmp.clone();
        let mut sink = blocking(move || {
            Ok(PartFile {
                file: std::fs::File::create_new(&t).ctx("create", &t)?,
                path: t,
                md5: Md5::new(),
            })
        })
        .await?;
        let _leftover = Leftover(Some(tmp.clone()));
        let (mut buf, mut size) = (Vec::with_capacity(CHUNK), 0u64);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                Error::BadInput(format!("the part broke off after {size} bytes: {e}"))
            })?;
            size += chunk.len() as u64;
            if size > max_bytes {
                return Err(Error::invalid(
                    "body",
                    format!("the part is larger than {max_bytes} bytes (--max-object-bytes)"),
                ));
            }
            buf.extend_from_slice(&chunk);
            if buf.len() >= CHUNK {
                (sink, buf) = blocking(move || {
                    sink.write(&buf)?;
                    buf.clear();
                    Ok((sink, buf))
                })
                .await?;
            }
        }
        blocking(move || {
            sink.write(&buf)?;
            sink.file.sync_all().ctx("sync", &sink.path)?;
            let md5 = hex(&sink.md5.finalize());
            // Replace an earlier part of the same number.
            for old in parts_in(&dir)?.into_values().filter(|p| p.number == number) {
                let path = dir.join(old.name());
                std::fs::remove_file(&path).ctx("remove", &path)?;
            }
            let path = dir.join(part_name(number, &md5));
            std::fs::rename(&tmp, &path).ctx("move into place", &path)?;
            Ok(md5)
        })
        .await
    }
}

/// A part file being written, with its MD5 so far.
struct PartFile {
    file: std::fs::File,
    path: PathBuf,
    md5: Md5,
}

impl PartFile {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.md5.update(bytes);
        self.file.write_all(bytes).ctx("write", &self.path)
    }
}

/// Removes a part's `.tmp` unless it was renamed, also when the request is dropped half-way.
struct Leftover(Option<PathBuf>);

impl Drop for Leftover {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The parts in `dir`, by number.
fn parts_in(dir: &Path) -> Result<BTreeMap<i32, PartInfo>> {
    let mut parts = Vec::new();
    for entry in std::fs::read_dir(dir).ctx("list", dir)? {
        let entry = entry.ctx("list", dir)?;
        let name = entry.file_name();
        let Some((number, md5)) = name.to_str().and_then(parse_part_name) else {
            continue;
        };
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // replaced
            Err(e) => return Err(Error::io("stat", &entry.path(), e)),
        };
        parts.push(PartInfo {
            number,
            md5: md5.to_string(),
            size: meta.len(),
            modified: meta.modified().ctx("stat", &entry.path())?,
        });
    }
    Ok(newest(parts))
}

fn read_description(dir: &Path) -> Result<Option<Vec<u8>>> {
    let path = dir.join(DESCRIPTION);
    match std::fs::read(&path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", &path, e)),
    }
}

impl PartStore for FileParts {
    fn create<'a>(&'a self, upload_id: &'a str, description: Vec<u8>) -> BoxFuture<'a, Result<()>> {
        let dir = self.dir(upload_id);
        blocking(move || {
            std::fs::create_dir_all(&dir).ctx("create", &dir)?;
            crate::log::embedded::write_atomically(&dir, DESCRIPTION, &description)
        })
        .boxed()
    }

    fn description<'a>(&'a self, upload_id: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        let dir = self.dir(upload_id);
        blocking(move || read_description(&dir)).boxed()
    }

    fn uploads(&self) -> BoxFuture<'_, Result<Vec<OpenUpload>>> {
        let root = self.root.clone();
        blocking(move || {
            let mut found = Vec::new();
            let entries = match std::fs::read_dir(&root) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
                Err(e) => return Err(Error::io("list", &root, e)),
            };
            for entry in entries {
                let entry = entry.ctx("list", &root)?;
                let id = entry.file_name().to_string_lossy().into_owned();
                // None: being created or removed right now.
                if let Some(description) = read_description(&entry.path())? {
                    found.push(OpenUpload { id, description });
                }
            }
            Ok(found)
        })
        .boxed()
    }

    fn put_part<'a>(
        &'a self,
        upload_id: &'a str,
        number: i32,
        body: ByteStream<'a>,
        max_bytes: u64,
    ) -> BoxFuture<'a, Result<String>> {
        self.receive(upload_id, number, body, max_bytes).boxed()
    }

    fn parts<'a>(&'a self, upload_id: &'a str) -> BoxFuture<'a, Result<BTreeMap<i32, PartInfo>>> {
        let dir = self.dir(upload_id);
        blocking(move || parts_in(&dir)).boxed()
    }

    fn concatenated(&self, upload_id: &str, parts: Vec<PartInfo>) -> ByteStream<'static> {
        let dir = self.dir(upload_id);
        futures::stream::iter(parts)
            .then(move |part| {
                let path = dir.join(part.name());
                async move {
                    let file = tokio::task::spawn_blocking(move || std::fs::File::open(path))
                        .await
                        .map_err(std::io::Error::other)??;
                    Ok::<_, std::io::Error>(futures::stream::try_unfold(
                        file,
                        |mut file| async move {
                            let (file, chunk) = tokio::task::spawn_blocking(move || {
                                let mut chunk = Vec::with_capacity(CHUNK);
                                (&mut file).take(CHUNK as u64).read_to_end(&mut chunk)?;
                                Ok::<_, std::io::Error>((file, chunk))
                            })
                            .await
                            .map_err(std::io::Error::other)??;
                            Ok((!chunk.is_empty()).then(|| (Bytes::from(chunk), file)))
                        },
                    ))
                }
            })
            .try_flatten()
            .boxed()
    }

    fn remove<'a>(&'a self, upload_id: &'a str) -> BoxFuture<'a, Result<()>> {
        let dir = self.dir(upload_id);
        blocking(move || {
            let description = dir.join(DESCRIPTION);
            std::fs::remove_file(&description).ctx("remove", &description)?;
            std::fs::remove_dir_all(&dir).ctx("remove", &dir)
        })
        .boxed()
    }
}
