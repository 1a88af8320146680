//! Tidemark errors as the S3 error codes clients expect.

use s3s::{S3Error, S3ErrorCode, s3_error};
use tidemark_core::Error;

/// An error of the node (index, log, blob store) as an S3 error.
pub fn from_core(e: Error) -> S3Error {
    match e {
        Error::NotFound(m) => S3Error::with_message(S3ErrorCode::NoSuchKey, m),
        Error::Conflict(m) => S3Error::with_message(S3ErrorCode::PreconditionFailed, m),
        Error::Unavailable(m) | Error::StorageFull(m) => {
            S3Error::with_message(S3ErrorCode::ServiceUnavailable, m)
        }
        Error::Invalid { field, message } => {
            S3Error::with_message(S3ErrorCode::InvalidArgument, format!("{field} {message}"))
        }
        Error::BadInput(m) => S3Error::with_message(S3ErrorCode::InvalidArgument, m),
        e => S3Error::with_message(S3ErrorCode::InternalError, e.to_string()),
    }
}

/// A bucket name S3 would refuse.
pub fn check_bucket(bucket: &str) -> Result<(), S3Error> {
    tidemark_core::ingest::validate_bucket(bucket)
        .map_err(|m| S3Error::with_message(S3ErrorCode::InvalidBucketName, m))
}

/// A key S3 would refuse: over 1024 bytes is `KeyTooLongError`, like S3.
pub fn check_key(key: &str) -> Result<(), S3Error> {
    if key.len() > tidemark_core::ingest::MAX_KEY_BYTES {
        return Err(s3_error!(
            KeyTooLongError,
            "the key is {} bytes; the limit is 1024",
            key.len()
        ));
    }
    tidemark_core::ingest::validate_key(key)
        .map_err(|m| S3Error::with_message(S3ErrorCode::InvalidArgument, format!("key {m}")))
}
