use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    /// A request field is wrong; the message says how.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// No such job, subscription or bucket.
    #[error("{0}")]
    NotFound(String),
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
}
