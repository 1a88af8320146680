//! The sinks crate's one error type.
//!
//! A sink that writes (the lake now) says what kind of problem stopped it, so its worker and
//! the jobs that run it can tell one that passes from one that needs someone:
//! [`Error::Transient`] (retry), [`Error::Config`] (the sink's settings or credentials are
//! wrong) and [`Error::Data`] (an event cannot be written as it is).

use tidemark_core::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input in a named field of a subscription (`sink.url`, `rules.regex`).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A named field asks for more than the server has room for (the filter memory budget).
    #[error("{field}: {message}")]
    OverBudget { field: String, message: String },
    /// The subscription refuses work in its current state (disabled, stopping).
    #[error("{0}")]
    Unavailable(String),
    /// A destination failed now (unreachable, busy, a write cut short): retrying may succeed.
    #[error("{0}")]
    Transient(String),
    /// A sink's settings or credentials are wrong (found when it runs, not when it was
    /// created): retrying fails the same way until they are changed.
    #[error("{0}")]
    Config(String),
    /// An event cannot be written as it is (the destination's format refuses it): retrying
    /// the same event fails the same way.
    #[error("{0}")]
    Data(String),
    #[error(transparent)]
    Core(#[from] tidemark_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid { .. } | Error::Config(_) => ErrorKind::BadInput,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Conflict(_) | Error::OverBudget { .. } => ErrorKind::Conflict,
            Error::Unavailable(_) | Error::Transient(_) => ErrorKind::Unavailable,
            // Like damaged data, it does not pass by itself: someone has to look.
            Error::Data(_) => ErrorKind::Corrupt,
            Error::Core(e) => e.kind(),
        }
    }

    /// The same problem, its message prefixed with what was being done (`writing the lake:
    /// cannot write ...`). An error of another variant keeps its kind: settings and bad
    /// input become [`Error::Config`], damage [`Error::Data`], the rest [`Error::Transient`].
    pub fn context(self, doing: &str) -> Error {
        let message = |m: &dyn std::fmt::Display| format!("{doing}: {m}");
        match self {
            Error::Transient(m) => Error::Transient(message(&m)),
            Error::Config(m) => Error::Config(message(&m)),
            Error::Data(m) => Error::Data(message(&m)),
            other => match other.kind() {
                ErrorKind::BadInput => Error::Config(message(&other)),
                ErrorKind::Corrupt => Error::Data(message(&other)),
                _ => Error::Transient(message(&other)),
            },
        }
    }
}
