//! Where lake files go, and how one is committed so that readers never see half of it.
//!
//! Local directories: the file is written under a hidden temporary name (`.NAME.tmp`, which
//! `*.parquet` globs and Hive readers skip), fsynced, renamed to its final name, and the
//! directory fsynced; a rename is atomic, so a reader sees the whole file or none.
//! A file whose final name exists is already committed (the names are deterministic, see
//! `writer.rs`) and is not written again.
//!
//! A file system that refuses us (permissions, read-only) is the lake's settings
//! ([`Error::Config`]); any other I/O failure may pass ([`Error::Transient`]).

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// `message` about an I/O failure, of the kind its cause says.
fn io_error(message: String, e: &std::io::Error) -> Error {
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => Error::Config(message),
        _ => Error::Transient(message),
    }
}

/// The lake's root directory.
#[derive(Debug, Clone)]
pub struct LocalLake {
    root: PathBuf,
}

impl LocalLake {
    /// Check that `root` can be created and written now, so a bad path is an error at create
    /// time rather than in status later.
    pub fn open(root: &str) -> Result<LocalLake> {
        let root = PathBuf::from(root);
        std::fs::create_dir_all(&root).map_err(|e| {
            let message = format!("cannot create the lake directory {}: {e}", root.display());
            io_error(message, &e)
        })?;
        let probe = root.join(format!(".tidemark-probe-{}", std::process::id()));
        std::fs::write(&probe, b"")
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|e| {
                let message = format!("cannot write in the lake directory {}: {e}", root.display());
                io_error(message, &e)
            })?;
        Ok(LocalLake { root })
    }

    pub fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    /// Whether `dir/name` is committed.
    pub fn exists(&self, dir: &str, name: &str) -> Result<bool> {
        Ok(self.root.join(dir).join(name).exists())
    }

    /// Commit `bytes` as `dir/name`.
    pub fn put(&self, dir: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let dir = self.root.join(dir);
        let target = dir.join(name);
        let fail = |what: &str, p: &Path, e: std::io::Error| {
            io_error(format!("{what} {}: {e}", p.display()), &e)
        };
        std::fs::create_dir_all(&dir).map_err(|e| fail("cannot create", &dir, e))?;
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut file = std::fs::File::create(&tmp).map_err(|e| fail("cannot create", &tmp, e))?;
        file.write_all(bytes)
            .and_then(|_| file.sync_all())
            .map_err(|e| fail("cannot write", &tmp, e))?;
        drop(file);
        std::fs::rename(&tmp, &target).map_err(|e| fail("cannot rename", &tmp, e))?;
        // The rename itself must survive a crash before the position is committed.
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| fail("cannot sync", &dir, e))?;
        Ok(())
    }

    /// Every file under the root: its path and name.
    fn files(&self) -> Result<Vec<(PathBuf, String)>> {
        let mut files = Vec::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| io_error(format!("cannot list {}: {e}", dir.display()), &e))?;
            for entry in entries.flatten() {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(path);
                } else {
                    files.push((path, entry.file_name().to_string_lossy().into_owned()));
                }
            }
        }
        Ok(files)
    }

    /// Remove temporary files a crash left behind for names starting with `prefix`.
    pub fn remove_leftovers(&self, prefix: &str) -> Result<usize> {
        let mut removed = 0;
        for (path, name) in self.files()? {
            if name.starts_with(&format!(".{prefix}")) && name.ends_with(".tmp") {
                std::fs::remove_file(&path)
                    .map_err(|e| io_error(format!("cannot remove {}: {e}", path.display()), &e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The names of committed files, wherever they are.
    pub fn names(&self) -> Result<Vec<String>> {
        Ok(self
            .files()?
            .into_iter()
            .map(|(_, name)| name)
            .filter(|n| !n.starts_with('.'))
            .collect())
    }
}
