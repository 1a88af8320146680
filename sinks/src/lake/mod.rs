//! The Parquet lake sink: a subscription's events as Hive-partitioned Parquet files,
//! committed exactly once.
//!
//! # Layout
//! - `columns.rs`: the column mapping of an event (Arrow schema and builders).
//! - `template.rs`: the partition directory template (`bucket={bucket}/dt={yyyy-MM-dd}/...`).
//! - `encode.rs`: Parquet options (codec, row groups, pages) and encoding a batch.
//! - `writer.rs`: segments of the log and their files; the exactly-once argument is there.
//! - `files.rs`: committing a file atomically in a local directory.
//! - `s3.rs`: committing a file with one PUT on an S3-compatible service.
//! - `stream.rs`: the lake as a stream sink: one partition's feed into segments, each
//!   written and only then committed.
//! - `backfill.rs`: rewriting a range's missing files (a replay of a lake subscription).
//!
//! [`build`] opens the lake a spec describes. The engine feeds each log partition of a lake
//! subscription to it like any stream sink (rules, filter and dead letters are the engine's);
//! errors say whether they are transient, the lake's settings, or an event's data.

mod backfill;
pub mod columns;
pub mod encode;
mod files;
mod s3;
pub mod segment_file;
mod stream;
pub mod template;
pub mod writer;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::sink::{BuildCtx, SinkKind};
use crate::{Error, Result, secrets};
pub use encode::ParquetOptions;
use files::LocalLake;
use s3::S3Lake;
pub use s3::S3Spec;
pub(crate) use s3::connect as connect_s3;
use template::Template;
pub use writer::RollSpec;

/// The `parquet` sink of a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSpec {
    /// The lake's root: a directory, or `s3://bucket/prefix`.
    pub path: String,
    /// For `s3://` paths: the endpoint, region and credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Spec>,
    /// Partition directories under it.
    #[serde(default = "default_template")]
    pub partition: String,
    #[serde(default)]
    pub roll: RollSpec,
    #[serde(default)]
    pub parquet: ParquetOptions,
}

fn default_template() -> String {
    "bucket={bucket}/dt={yyyy-MM-dd}/hour={HH}".into()
}

/// Where a lake's files go.
enum Files {
    Local(LocalLake),
    S3(S3Lake),
}

impl Files {
    fn exists(&self, dir: &str, name: &str) -> Result<bool> {
        match self {
            Files::Local(l) => l.exists(dir, name),
            Files::S3(s) => s.exists(dir, name),
        }
    }

    fn put(&self, dir: &str, name: &str, bytes: &[u8]) -> Result<()> {
        match self {
            Files::Local(l) => l.put(dir, name, bytes),
            Files::S3(s) => s.put(dir, name, bytes),
        }
    }

    fn names(&self) -> Result<Vec<String>> {
        match self {
            Files::Local(l) => l.names(),
            Files::S3(s) => s.names(),
        }
    }

    /// Temporary files a crash left (S3 has none: an object is one PUT).
    fn remove_leftovers(&self, prefix: &str) -> Result<usize> {
        match self {
            Files::Local(l) => l.remove_leftovers(prefix),
            Files::S3(_) => Ok(0),
        }
    }
}

/// A lake subscription's settings, checked and opened.
pub struct Lake {
    pub template: Template,
    pub roll: RollSpec,
    pub options: ParquetOptions,
    files: Files,
    describe: String,
}

impl Lake {
    /// Check the settings that need no destination; errors name the field.
    pub fn check(spec: &ParquetSpec) -> Result<Template> {
        let template = Template::parse(&spec.partition)
            .map_err(|e| Error::invalid("sink.partition", e.to_string()))?;
        spec.roll.check()?;
        match (spec.path.starts_with("s3://"), &spec.s3) {
            (false, Some(_)) => Err(Error::invalid("sink.s3", "only for s3:// paths")),
            _ => Ok(template),
        }
    }

    /// Check every setting and open the destination (a local directory is created and
    /// probed); `secret` is the S3 secret access key, resolved. Errors name the field.
    pub fn open(spec: &ParquetSpec, secret: Option<String>) -> Result<Lake> {
        let template = Self::check(spec)?;
        let path = |e: Error| Error::invalid("sink.path", e.to_string());
        let files = if spec.path.starts_with("s3://") {
            Files::S3(
                S3Lake::open(&spec.path, &spec.s3.clone().unwrap_or_default(), secret)
                    .map_err(path)?,
            )
        } else {
            Files::Local(LocalLake::open(&spec.path).map_err(path)?)
        };
        let describe = match &files {
            Files::Local(l) => l.describe(),
            Files::S3(s) => s.describe(),
        };
        Ok(Lake {
            template,
            roll: spec.roll,
            options: spec.parquet.clone(),
            files,
            describe,
        })
    }
}

/// The lake `spec` describes, opened, its S3 secret resolved (a stream sink).
pub fn build(spec: &ParquetSpec, ctx: &BuildCtx) -> Result<SinkKind> {
    let secret = match spec.s3.as_ref().and_then(|s| s.secret_access_key.as_ref()) {
        Some(r) => Some(secrets::resolve(ctx.catalog, r)?),
        None => None,
    };
    Ok(SinkKind::Stream(Arc::new(Lake::open(spec, secret)?)))
}
