//! The replay crate's one error type. [`Error::kind`] says how a caller reacts, as in the
//! other crates; a job's failure keeps the kind of what stopped it (a sink's transient,
//! configuration or data problem, a log that is unavailable, ...).

use thiserror::Error;
use tidemark_core::ErrorKind;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    /// A request field is wrong; the message says how.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// No such job, subscription or bucket.
    #[error("{0}")]
    NotFound(String),
    /// A job stopped part way: what stopped it, and how far it got.
    #[error("{source} (after {done} of {total} records)")]
    Stopped {
        done: u64,
        total: u64,
        #[source]
        source: Box<Error>,
    },
    /// The task running a job failed (a bug: it panicked).
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Core(#[from] tidemark_core::Error),
    #[error(transparent)]
    Sinks(#[from] tidemark_sinks::Error),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid { .. } => ErrorKind::BadInput,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Stopped { source, .. } => source.kind(),
            Error::Internal(_) => ErrorKind::Internal,
            Error::Core(e) => e.kind(),
            Error::Sinks(e) => e.kind(),
        }
    }
}
