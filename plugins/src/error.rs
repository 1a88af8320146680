//! The plugins crate's one error type: why a module was refused at upload, or why one
//! evaluation failed. [`Error::kind`] is how a caller reacts (as in the other crates);
//! [`Error::label`] names an evaluation failure for a subscription's policy and metrics.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The module breaks the ABI or a limit; refused at upload.
    #[error("{0}")]
    Invalid(String),
    /// A WebAssembly trap (`unreachable`, out-of-bounds access, stack overflow, ...).
    #[error("the filter trapped: {0}")]
    Trap(String),
    #[error("the filter used all its fuel ({0} units) on one event")]
    OutOfFuel(u64),
    #[error("the filter ran past its deadline of {0} ms on one event")]
    Timeout(u64),
    #[error("the filter tried to grow its memory past the limit of {0} bytes")]
    MemoryLimit(usize),
    /// `filter` returned a negative code of the module's own.
    #[error("the filter returned error code {0}")]
    Module(i32),
    #[error("the filter returned {0}, which is not a verdict (1 keep, 0 drop, < 0 error)")]
    BadVerdict(i32),
    #[error("the filter's init failed with code {0}")]
    Init(i32),
    /// No such filter or version.
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with the current state (a version in use).
    #[error("{0}")]
    Conflict(String),
    /// The server has no room for it now (the filter memory budget, instance slots): not the
    /// filter's fault; whoever asked waits and tries again.
    #[error("{0}")]
    Capacity(String),
    /// The catalog or the artifact directory failed.
    #[error(transparent)]
    Core(#[from] tidemark_core::Error),
}

impl Error {
    /// A short name for counting errors by kind (`trap`, `fuel`, `timeout`, ...): the
    /// `error_kind` of test results and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Invalid(_) => "invalid",
            Error::Trap(_) => "trap",
            Error::OutOfFuel(_) => "fuel",
            Error::Timeout(_) => "timeout",
            Error::MemoryLimit(_) => "memory",
            Error::Module(_) => "module",
            Error::BadVerdict(_) => "verdict",
            Error::Init(_) => "init",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::Capacity(_) => "capacity",
            Error::Core(_) => "internal",
        }
    }
}

impl PartialEq for Error {
    /// Same label and message (tests compare verdicts; the catalog's errors are not `Eq`).
    fn eq(&self, other: &Self) -> bool {
        self.label() == other.label() && self.to_string() == other.to_string()
    }
}

impl Error {
    /// How a caller should react to it (the same accessor as the other crates' errors).
    pub fn kind(&self) -> tidemark_core::ErrorKind {
        use tidemark_core::ErrorKind;
        match self {
            Error::Invalid(_) => ErrorKind::BadInput,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Capacity(_) => ErrorKind::Unavailable,
            Error::Core(e) => e.kind(),
            _ => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
