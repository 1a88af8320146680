//! The core crate's one error type: a kind callers match on, plus a message naming the thing
//! that failed.

/// How a caller should react to an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request was wrong; retrying it unchanged fails again.
    BadInput,
    /// The named thing does not exist.
    NotFound,
    /// The request conflicts with current state (precondition, incompatible schema).
    Conflict,
    /// A transient condition (overload, shutdown in progress); retrying may succeed.
    Unavailable,
    /// Storage is damaged or an invariant broke; needs an operator.
    Corrupt,
    /// An I/O or internal failure.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadInput(String),
    /// Bad input in a named field of a request (`mutations[3].key`).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// No space left on a disk Tidemark writes (the log's, the index's): writes are refused
    /// until space is free again; reads go on. The message names the directory.
    #[error("{0}")]
    StorageFull(String),
    /// Another node writes this partition of `objects` now.
    #[error("partition {0} is written by another node")]
    NotOwner(u32),
    /// The runtime is shutting down; background work stops quietly on it.
    #[error("shutting down")]
    Shutdown,
    #[error("{0}")]
    Corrupt(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("index {context}: {source}")]
    Index {
        context: &'static str,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("avro: {0}")]
    Avro(String),
    /// A schema registry error with its Confluent error code (40401, 42201, 409, ...).
    #[error("{message}")]
    Registry { code: u32, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::BadInput(_) | Error::Invalid { .. } => ErrorKind::BadInput,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Unavailable(_)
            | Error::Shutdown
            | Error::NotOwner(_)
            | Error::StorageFull(_) => ErrorKind::Unavailable,
            Error::Corrupt(_) => ErrorKind::Corrupt,
            Error::Registry { code, .. } => match code / 100 {
                404 => ErrorKind::NotFound,
                422 => ErrorKind::BadInput,
                4 => ErrorKind::Conflict,
                _ => ErrorKind::Internal,
            },
            Error::Io { .. } | Error::Index { .. } | Error::Avro(_) => ErrorKind::Internal,
        }
    }

    /// The code the HTTP API answers for this error (`{"error": {"code": ...}}`), also how a
    /// forwarded mutation's refusal travels between nodes ([`Error::from_code`]).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Invalid { .. } => "invalid_field",
            Error::NotOwner(_) => "not_owner",
            Error::StorageFull(_) => "storage_full",
            e => match e.kind() {
                ErrorKind::BadInput => "bad_request",
                ErrorKind::NotFound => "not_found",
                ErrorKind::Conflict => "conflict",
                ErrorKind::Unavailable => "unavailable",
                ErrorKind::Corrupt | ErrorKind::Internal => "internal",
            },
        }
    }

    /// The error a code stands for, with the message that came with it (another node's
    /// answer); an unknown code is `Corrupt`, so it is never mistaken for a retryable one.
    pub fn from_code(code: &str, message: String, field: Option<&str>) -> Error {
        match code {
            "invalid_field" => Error::invalid(field.unwrap_or("body"), message),
            "bad_request" => Error::BadInput(message),
            "not_found" => Error::NotFound(message),
            "conflict" => Error::Conflict(message),
            "unavailable" => Error::Unavailable(message),
            "storage_full" => Error::StorageFull(message),
            "not_owner" => {
                let partition = message
                    .split_whitespace()
                    .find_map(|w| w.parse().ok())
                    .unwrap_or(0);
                Error::NotOwner(partition)
            }
            _ => Error::Corrupt(message),
        }
    }

    /// An I/O error on a path, with what we were doing. A full disk is [`Error::StorageFull`],
    /// naming the path.
    pub fn io(what: &str, path: &std::path::Path, source: std::io::Error) -> Self {
        if matches!(
            source.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        ) {
            return Error::StorageFull(format!(
                "no space left on the disk: cannot {what} {} ({source})",
                path.display()
            ));
        }
        Error::Io {
            context: format!("{what} {}", path.display()),
            source,
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn index(context: &'static str, source: impl Into<redb::Error>) -> Self {
        Error::Index {
            context,
            source: Box::new(source.into()),
        }
    }
}

/// Parse a JSON document, naming the field of any problem (`mutations[3].size`,
/// `rule.any[0].prefixes`); syntax errors and problems of the whole document name `body`.
pub fn parse_json<'de, T: serde::Deserialize<'de>>(body: &'de [u8]) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            Error::invalid("body", format!("malformed JSON: {inner}"))
        } else if path == "." {
            Error::invalid("body", inner.to_string())
        } else {
            Error::invalid(path, inner.to_string())
        }
    })
}

/// Attach a path and an action to I/O results.
pub trait IoContext<T> {
    fn ctx(self, what: &str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: &str, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io(what, path, e))
    }
}
