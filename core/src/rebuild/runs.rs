//! Head rows in sorted runs, so a replay's newest heads need memory set by a budget rather
//! than by the number of keys it saw: each chunk of heads a scan worker hands over is sorted
//! and kept in memory while the runs fit [`IN_MEMORY`], and written to a run file in a
//! scratch directory past that. Reading them back merges every run in key order.
//!
//! A worker hands over a partition's heads in order (it flushes when its own buffer is full,
//! then at the partition's end), and a key lives in one partition, so when two runs hold the
//! same key the one handed over later is newer: the merge keeps that one.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

use crate::{Error, Result};

/// (`bucket/key`, head row).
pub type Row = (String, Vec<u8>);

/// Bytes of rows kept in memory before runs go to files.
pub const IN_MEMORY: usize = 32 << 20;

enum Run {
    Memory(Vec<Row>),
    File(PathBuf),
}

/// Sorted runs of head rows, in the order they were handed over.
pub struct Runs {
    runs: Vec<Run>,
    in_memory: usize,
    /// Holds the run files; deleted with the runs.
    dir: Option<tempfile::TempDir>,
}

fn row_bytes(r: &Row) -> usize {
    r.0.len() + r.1.len() + 48
}

impl Runs {
    pub fn new() -> Runs {
        Runs {
            runs: Vec::new(),
            in_memory: 0,
            dir: None,
        }
    }

    /// Add a run (sorted here) handed over after every run already added.
    pub fn push(&mut self, mut rows: Vec<Row>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let bytes: usize = rows.iter().map(row_bytes).sum();
        if self.in_memory + bytes <= IN_MEMORY {
            self.in_memory += bytes;
            self.runs.push(Run::Memory(rows));
            return Ok(());
        }
        if self.dir.is_none() {
            let dir = tempfile::Builder::new()
                .prefix("tidemark-heads-")
                .tempdir()
                .map_err(|e| Error::Io {
                    context: "create a scratch directory for head runs".into(),
                    source: e,
                })?;
            self.dir = Some(dir);
        }
        let path = self
            .dir
            .as_ref()
            .expect("made above")
            .path()
            .join(format!("run-{:06}", self.runs.len()));
        let file = File::create(&path).map_err(|e| Error::io("create", &path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        for (key, row) in &rows {
            write_field(&mut out, key.as_bytes()).map_err(|e| Error::io("write", &path, e))?;
            write_field(&mut out, row).map_err(|e| Error::io("write", &path, e))?;
        }
        out.flush().map_err(|e| Error::io("write", &path, e))?;
        self.runs.push(Run::File(path));
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Every row once, in key order: for a key in several runs, the latest run's row.
    pub fn merged(self) -> Result<Merged> {
        let mut sources = Vec::with_capacity(self.runs.len());
        for run in self.runs {
            sources.push(match run {
                Run::Memory(rows) => Source::Memory(rows.into_iter()),
                Run::File(path) => {
                    let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
                    Source::File(BufReader::with_capacity(256 << 10, file), path)
                }
            });
        }
        let mut merged = Merged {
            heap: BinaryHeap::with_capacity(sources.len()),
            sources,
            _dir: self.dir,
        };
        for run in 0..merged.sources.len() {
            merged.advance(run)?;
        }
        Ok(merged)
    }
}

impl Default for Runs {
    fn default() -> Self {
        Runs::new()
    }
}

fn write_field(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(&(bytes.len() as u32).to_le_bytes())?;
    out.write_all(bytes)
}

enum Source {
    Memory(std::vec::IntoIter<Row>),
    File(BufReader<File>, PathBuf),
}

impl Source {
    fn next(&mut self) -> Option<Result<Row>> {
        match self {
            Source::Memory(rows) => rows.next().map(Ok),
            Source::File(reader, path) => read_row(reader)
                .map_err(|e| Error::io("read", path, e))
                .transpose(),
        }
    }
}

fn read_row(r: &mut impl Read) -> std::io::Result<Option<Row>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut key = vec![0; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut key)?;
    r.read_exact(&mut len)?;
    let mut row = vec![0; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut row)?;
    let key = String::from_utf8(key)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok(Some((key, row)))
}

/// The k-way merge of [`Runs::merged`]: a heap of each run's next row, smallest key first and,
/// for one key, the latest run first.
pub struct Merged {
    sources: Vec<Source>,
    heap: BinaryHeap<Next>,
    _dir: Option<tempfile::TempDir>,
}

/// A run's next row, ordered for a max-heap so that the top is the smallest key, and for equal
/// keys the latest run (the newest head).
struct Next {
    row: Row,
    run: usize,
}

impl Ord for Next {
    fn cmp(&self, other: &Self) -> Ordering {
        other.row.0.cmp(&self.row.0).then(self.run.cmp(&other.run))
    }
}

impl PartialOrd for Next {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Next {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Next {}

impl Merged {
    /// Put run `run`'s next row on the heap.
    fn advance(&mut self, run: usize) -> Result<()> {
        if let Some(row) = self.sources[run].next().transpose()? {
            self.heap.push(Next { row, run });
        }
        Ok(())
    }
}

impl Iterator for Merged {
    type Item = Result<Row>;

    fn next(&mut self) -> Option<Result<Row>> {
        let Next { row, run } = self.heap.pop()?;
        if let Err(e) = self.advance(run) {
            return Some(Err(e));
        }
        // Older heads of the same key, in earlier runs: skipped.
        while self.heap.peek().is_some_and(|n| n.row.0 == row.0) {
            let older = self.heap.pop().expect("peeked").run;
            if let Err(e) = self.advance(older) {
                return Some(Err(e));
            }
        }
        Some(Ok(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(k: &str, v: u8) -> Row {
        (k.to_string(), vec![v; 3])
    }

    #[test]
    fn later_runs_win_and_keys_come_in_order_from_memory_and_files() {
        let mut runs = Runs::new();
        runs.push(vec![row("c", 1), row("a", 1), row("e", 1)])
            .unwrap();
        // A run too large for memory goes to a file.
        let big: Vec<Row> = (0..(IN_MEMORY / 40))
            .map(|i| (format!("m{i:08}"), vec![0; 8]))
            .collect();
        runs.push(big.clone()).unwrap();
        runs.push(vec![row("a", 2), row("d", 2)]).unwrap();
        runs.push(vec![row("a", 3)]).unwrap();
        let merged: Vec<Row> = runs.merged().unwrap().collect::<Result<_>>().unwrap();
        assert_eq!(merged[0], row("a", 3));
        assert_eq!(merged[1], row("c", 1));
        assert_eq!(merged[2], row("d", 2));
        assert_eq!(merged[3], row("e", 1));
        assert_eq!(merged.len(), 4 + big.len());
        assert!(merged.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
