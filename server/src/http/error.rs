//! Errors as HTTP responses: `{"error": {"code", "message", "field"?}}` with a status that
//! follows the error's kind.

use axum::Json;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tidemark_core::{Error, ErrorKind};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn field(status: StatusCode, field: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: "invalid_field",
            message: message.into(),
            field: Some(field.to_string()),
        }
    }

    /// Body of one failed item in a batch response.
    pub fn item(e: &Error) -> serde_json::Value {
        let api = ApiError::from(e);
        serde_json::json!({"code": api.code, "message": api.message})
    }
}

pub fn status_of(kind: ErrorKind) -> (StatusCode, &'static str) {
    match kind {
        ErrorKind::BadInput => (StatusCode::BAD_REQUEST, "bad_request"),
        ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
        ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        ErrorKind::Corrupt | ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

impl From<&Error> for ApiError {
    fn from(e: &Error) -> Self {
        if let Error::Invalid { field, message } = e {
            return ApiError::field(StatusCode::BAD_REQUEST, field, message.clone());
        }
        if let Error::NotOwner(_) = e {
            return ApiError::new(StatusCode::MISDIRECTED_REQUEST, "not_owner", e.to_string());
        }
        if let Error::StorageFull(_) = e {
            return ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "storage_full",
                e.to_string(),
            );
        }
        let (status, code) = status_of(e.kind());
        ApiError::new(status, code, e.to_string())
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::from(&e)
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<Error>() {
            Ok(core) => core.into(),
            Err(e) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("{e:#}"),
            ),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "payload_too_large",
                message: "request body is larger than the server's limit (--max-body-bytes); split it into smaller requests".into(),
                field: Some("body".into()),
            }
        } else {
            ApiError::field(r.status(), "body", r.body_text())
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::field(StatusCode::BAD_REQUEST, "query", r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, "{}", self.message);
        }
        let mut error = serde_json::json!({"code": self.code, "message": self.message});
        if let Some(field) = self.field {
            error["field"] = field.into();
        }
        (self.status, Json(serde_json::json!({ "error": error }))).into_response()
    }
}

/// Parse a JSON request body, naming the field of any problem (`rule.any[0].prefixes`).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    Ok(tidemark_core::error::parse_json(body)?)
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {uri}; see the README for the API"),
    )
}

impl From<tidemark_replay::Error> for ApiError {
    fn from(e: tidemark_replay::Error) -> Self {
        match e {
            tidemark_replay::Error::Invalid { field, message } => {
                ApiError::field(StatusCode::BAD_REQUEST, &field, message)
            }
            tidemark_replay::Error::NotFound(m) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", m)
            }
            tidemark_replay::Error::Core(core) => core.into(),
            tidemark_replay::Error::Sinks(sinks) => sinks.into(),
            other => {
                let (status, code) = status_of(other.kind());
                ApiError::new(status, code, other.to_string())
            }
        }
    }
}
