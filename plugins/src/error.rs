//! The plugins crate's one error type: why a module was refused at upload, or why one
//! evaluation failed. Evaluation errors have a kind a subscription's policy and metrics use.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
}

impl Error {
    /// A short name for counting errors by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Invalid(_) => "invalid",
            Error::Trap(_) => "trap",
            Error::OutOfFuel(_) => "fuel",
            Error::Timeout(_) => "timeout",
            Error::MemoryLimit(_) => "memory",
            Error::Module(_) => "module",
            Error::BadVerdict(_) => "verdict",
            Error::Init(_) => "init",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
