//! The sinks crate's one error type.

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
    /// The subscription refuses work in its current state (disabled, stopping).
    #[error("{0}")]
    Unavailable(String),
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
            Error::Invalid { .. } => ErrorKind::BadInput,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Core(e) => e.kind(),
        }
    }
}
