//! Reconciling an external store into the log (`tidemark sync`): list the store, list the
//! index for the same bucket and prefix, merge the two key-sorted listings, and append the
//! mutations that make the index describe the store. Nothing is appended for keys that agree,
//! so a second sync of an unchanged store appends nothing.
//!
//! - `local_dir.rs`: a directory as a store (keys are relative paths with `/`).
//! - `s3_source.rs`: an S3 bucket as a store: its URL and connection.
//! - `s3_list.rs`: listing it (keys are the store's keys), through `object_store`; only with
//!   the `s3-source` feature, so crates that do not sync need no AWS client.
//! - `run.rs`: the whole reconciliation, with progress and cancellation.
//!
//! A listing source only has to produce sorted [`Entry`]s; [`diff`] and the run do the rest.

mod local_dir;
mod run;
#[cfg(feature = "s3-source")]
mod s3_list;
mod s3_source;

pub use local_dir::list_dir;
pub use run::{Progress, Source, SyncOutcome, SyncSpec, run};
#[cfg(feature = "s3-source")]
pub use s3_list::list_s3;
pub use s3_source::{S3Connection, S3Source};

/// Without the `s3-source` feature an S3 source is refused when a sync runs.
#[cfg(not(feature = "s3-source"))]
pub async fn list_s3(
    source: &S3Source,
    _prefix: &str,
    _on_total: &(dyn Fn(u64) + Sync),
    _on_entry: &(dyn Fn() + Sync),
    _cancelled: &(dyn Fn() -> bool + Sync),
) -> crate::Result<(Vec<Entry>, Skipped)> {
    Err(crate::Error::invalid(
        "source",
        format!(
            "{}: this build has no S3 source (tidemark-core's `s3-source` feature)",
            source.url()
        ),
    ))
}

use std::cmp::Ordering;

use super::{Mutation, Op};
use crate::event::{ObjectState, StringMap};

/// Store entries that cannot be objects (names not UTF-8, keys too long): (path, why).
pub type Skipped = Vec<(String, String)>;

/// One object of the external store, as its listing describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub size: i64,
    /// MD5 hex for local files; the store's ETag (unquoted) for S3.
    pub etag: Option<String>,
    pub sha256: Option<String>,
    pub content_type: Option<String>,
    /// `None`: the store has no user metadata (a directory), so it is not compared.
    pub metadata: Option<StringMap>,
}

/// What the merge found for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// In the store, not in the index.
    Create(Entry),
    /// In both, content differs (size, ETag or SHA-256).
    Update(Entry),
    /// In both, same content, different content type or metadata.
    Metadata(Entry, StringMap),
    /// In the index, gone from the store.
    Remove(String),
}

impl Change {
    pub fn key(&self) -> &str {
        match self {
            Change::Create(e) | Change::Update(e) | Change::Metadata(e, _) => &e.key,
            Change::Remove(k) => k,
        }
    }

    /// The counter this change is reported under.
    pub fn action(&self) -> &'static str {
        match self {
            Change::Create(_) => "created",
            Change::Update(_) => "updated",
            Change::Metadata(..) => "metadata",
            Change::Remove(_) => "removed",
        }
    }

    pub fn mutation(&self, bucket: &str) -> Mutation {
        match self {
            Change::Create(e) | Change::Update(e) => {
                let mut m = Mutation::new(Op::Put, bucket, &e.key);
                m.size = Some(e.size);
                m.etag = e.etag.clone();
                m.sha256 = e.sha256.clone();
                m.content_type = e.content_type.clone();
                m.metadata = e.metadata.clone();
                m
            }
            Change::Metadata(e, metadata) => {
                let mut m = Mutation::new(Op::Metadata, bucket, &e.key);
                m.metadata = Some(metadata.clone());
                m.content_type = e.content_type.clone();
                m
            }
            Change::Remove(key) => Mutation::new(Op::Delete, bucket, key),
        }
    }
}

/// Merge `store` and `index` (each sorted by key, byte order) into the changes that make the
/// index describe the store.
pub fn diff(store: &[Entry], index: &[(String, ObjectState)]) -> Vec<Change> {
    let mut out = Vec::new();
    let (mut s, mut i) = (store.iter().peekable(), index.iter().peekable());
    loop {
        let order = match (s.peek(), i.peek()) {
            (None, None) => return out,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(e), Some((k, _))) => e.key.as_bytes().cmp(k.as_bytes()),
        };
        match order {
            Ordering::Less => out.push(Change::Create(s.next().unwrap().clone())),
            Ordering::Greater => out.push(Change::Remove(i.next().unwrap().0.clone())),
            Ordering::Equal => {
                let (e, (_, state)) = (s.next().unwrap(), i.next().unwrap());
                out.extend(compare(e, state));
            }
        }
    }
}

/// The change for a key in both listings, if any.
fn compare(e: &Entry, state: &ObjectState) -> Option<Change> {
    if !same_content(e, state) {
        return Some(Change::Update(e.clone()));
    }
    let type_differs = e.content_type.is_some() && e.content_type != state.content_type;
    let meta_differs = e.metadata.as_ref().is_some_and(|m| *m != state.metadata);
    (type_differs || meta_differs).then(|| {
        let metadata = e.metadata.clone().unwrap_or_else(|| state.metadata.clone());
        Change::Metadata(e.clone(), metadata)
    })
}

/// Same size, and every digest both sides know agrees. When the store offers a digest the
/// index cannot check against, the content is taken as changed, so the index learns it.
fn same_content(e: &Entry, state: &ObjectState) -> bool {
    let unquote = |t: &Option<String>| t.as_deref().map(|t| t.trim_matches('"').to_string());
    let pairs = [
        (unquote(&e.etag), unquote(&state.etag)),
        (e.sha256.clone(), state.sha256.clone()),
    ];
    let mut compared = false;
    for (store, index) in pairs {
        match (store, index) {
            (Some(a), Some(b)) if a != b => return false,
            (Some(_), Some(_)) => compared = true,
            _ => {}
        }
    }
    let offered = e.etag.is_some() || e.sha256.is_some();
    e.size == state.size && (compared || !offered)
}

#[cfg(test)]
mod tests;
