//! Index snapshots: files under `<data-dir>/snapshots/`, each holding every key's head row (the
//! bytes of the index's `objects` table, in key order) and the per-partition offsets they are
//! complete up to, read in one index transaction so the two agree. The state at an instant is
//! then one snapshot load plus the events after it, instead of a replay of the whole log.
//!
//! A snapshot is written to a temporary file, fsynced and renamed, so a listed snapshot is
//! always whole; damage after that (a flipped bit, a truncated copy) fails its checksum and the
//! snapshot is passed over with a warning, never used. Only the newest few are kept, and those
//! that no longer match the log (offsets before its start, after retention; or past its end,
//! after a torn tail was cut off) are deleted.

mod format;
mod merge;
mod periodic;

pub use periodic::{Policy, log_offsets, take_periodically};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tidemark_core::error::IoContext;
use tidemark_core::index::ObjectIndex;
use tidemark_core::log::OffsetRange;
use tidemark_core::time::{format_us, now_us};

use crate::Result;
use format::{Header, RowReader, SnapshotWriter};

const SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".tmp";
/// A temporary file this old was left by a writer that died; newer ones may be in progress.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// Where a node's snapshots are.
pub fn dir_of(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

/// A snapshot file, as its header and footer describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub path: PathBuf,
    /// When it was taken (µs).
    pub taken_at: i64,
    /// Next offset to apply per partition: it holds every event before these.
    pub applied: BTreeMap<u32, u64>,
    /// Keys (head rows), deleted keys included.
    pub keys: u64,
}

impl Snapshot {
    /// Records it covers, over all partitions: how far into the log it reaches.
    pub fn covered(&self) -> u64 {
        self.applied.values().sum()
    }

    /// Next offset of `partition` (nothing applied yet: 0).
    pub fn offset(&self, partition: u32) -> u64 {
        self.applied.get(&partition).copied().unwrap_or(0)
    }

    pub fn to_json(&self) -> Value {
        json!({
            // The name only: where the node keeps its data is not the client's business.
            "file": self.path.file_name().map(|n| n.to_string_lossy().into_owned()),
            "taken_at": format_us(self.taken_at),
            "offsets": offsets_json(&self.applied),
            "keys": self.keys,
        })
    }

    fn header(&self) -> Header {
        Header {
            taken_at: self.taken_at,
            applied: self.applied.clone(),
            keys: self.keys,
        }
    }
}

/// `{"0": 1234, "1": ...}`: per-partition offsets as JSON.
pub fn offsets_json(offsets: &BTreeMap<u32, u64>) -> Value {
    offsets
        .iter()
        .map(|(p, o)| (p.to_string(), Value::from(*o)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Write a snapshot of `index` as it is now into `dir`. Blocking: it reads every head.
pub fn take(index: &ObjectIndex, dir: &Path) -> Result<Snapshot> {
    std::fs::create_dir_all(dir).ctx("create", dir)?;
    let taken_at = now_us();
    let rows = index.head_rows()?;
    let applied = rows.applied()?;
    // Named by coverage, then time, so a listing sorts oldest first.
    let name = format!(
        "snapshot-{:020}-{taken_at}{SUFFIX}",
        applied.values().sum::<u64>()
    );
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.{}{TEMP_SUFFIX}", std::process::id()));
    let written = (|| {
        let mut writer = SnapshotWriter::create(&tmp, taken_at, &applied)?;
        rows.for_each(|key, row| writer.row(key, row))?;
        writer.finish()
    })();
    let keys = match written {
        Ok((keys, _)) => keys,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
    };
    std::fs::rename(&tmp, &path).ctx("rename", &tmp)?;
    // The rename is durable once the directory is.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("fsync", dir)?;
    Ok(Snapshot {
        path,
        taken_at,
        applied,
        keys,
    })
}

/// The snapshots in `dir` whose header and footer read back, newest (furthest into the log)
/// first, and a warning for each file passed over. No directory: none.
pub fn list(dir: &Path) -> Result<(Vec<Snapshot>, Vec<String>)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(tidemark_core::Error::io("list", dir, e).into()),
    };
    let (mut found, mut skipped) = (Vec::new(), Vec::new());
    for entry in entries {
        let path = entry.ctx("list", dir)?.path();
        let is_snapshot = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(SUFFIX) && !n.starts_with('.'));
        if !is_snapshot {
            continue;
        }
        match format::read_header(&path) {
            Ok(h) => found.push(Snapshot {
                path,
                taken_at: h.taken_at,
                applied: h.applied,
                keys: h.keys,
            }),
            // Deleted by a concurrent prune since the listing: not worth a warning.
            Err(tidemark_core::Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => skipped.push(format!("ignoring damaged snapshot: {e}")),
        }
    }
    found.sort_by(|a, b| {
        (b.covered(), b.taken_at, &b.path).cmp(&(a.covered(), a.taken_at, &a.path))
    });
    Ok((found, skipped))
}

/// Load `snapshot`'s heads and offsets into `into`, a new scratch index, checking the whole
/// file as it goes: if it turns out damaged this fails, and `into` must be thrown away.
pub fn load(snapshot: &Snapshot, into: &ObjectIndex) -> Result<u64> {
    load_merged(snapshot, std::iter::empty(), &snapshot.applied, into)
}

/// [`load`], with `newer` head rows (what the events after the snapshot left) in place of
/// the snapshot's for the same keys, and `applied` the offsets the result is complete up to.
/// Each key is written once, in order; both sides stream.
pub fn load_merged(
    snapshot: &Snapshot,
    newer: impl Iterator<Item = tidemark_core::Result<tidemark_core::rebuild::Row>>,
    applied: &BTreeMap<u32, u64>,
    into: &ObjectIndex,
) -> Result<u64> {
    let rows = RowReader::open(&snapshot.path, &snapshot.header())?;
    Ok(into.load_head_rows(applied, merge::Merge::new(rows, newer))?)
}

/// Why `snapshot` does not describe the log whose partitions hold `log` (offsets present
/// now), if it does not: it reaches before a partition's start (retention removed events it
/// does not hold) or past its end (the log's tail was cut off, or it is another log).
pub fn mismatch(snapshot: &Snapshot, log: &[(u32, OffsetRange)]) -> Option<String> {
    if let Some(p) = snapshot
        .applied
        .keys()
        .find(|p| !log.iter().any(|(q, _)| q == *p))
    {
        return Some(format!("partition {p} is not in the log"));
    }
    log.iter().find_map(|(p, range)| {
        let at = snapshot.offset(*p);
        if at < range.start {
            Some(format!(
                "partition {p}: it covers up to offset {at}, before the log start {} \
                 (retention)",
                range.start
            ))
        } else if at > range.end {
            Some(format!(
                "partition {p}: it covers up to offset {at}, past the log end {}",
                range.end
            ))
        } else {
            None
        }
    })
}

/// Delete the snapshots in `dir` that no longer match the log (see [`mismatch`]), all but the
/// newest `keep` of the others, and temporary files left by writers that died. Returns what
/// was deleted, and why.
pub fn prune(
    dir: &Path,
    keep: usize,
    log: &[(u32, OffsetRange)],
) -> Result<Vec<(PathBuf, String)>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let (snapshots, _) = list(dir)?;
    let mut deleted = Vec::new();
    let mut kept = 0;
    for s in snapshots {
        let why = match mismatch(&s, log) {
            Some(why) => why,
            None if kept < keep => {
                kept += 1;
                continue;
            }
            None => format!("only the newest {keep} are kept"),
        };
        remove(&s.path)?;
        deleted.push((s.path, why));
    }
    for entry in std::fs::read_dir(dir).ctx("list", dir)? {
        let entry = entry.ctx("list", dir)?;
        let stale = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with('.') && n.ends_with(TEMP_SUFFIX))
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t + STALE_TEMP < SystemTime::now());
        if stale {
            remove(&entry.path())?;
            deleted.push((entry.path(), "left by a writer that stopped".into()));
        }
    }
    Ok(deleted)
}

/// Another process pruning at the same time may have deleted it already.
fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(tidemark_core::Error::io("delete", path, e).into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
