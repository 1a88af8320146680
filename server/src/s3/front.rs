//! What every S3 request gets around s3s: a request id (the `x-amz-request-id` header of every
//! answer, and the `<RequestId>` of every error body, as S3 gives them), SigV4 signed with a
//! `Date` header instead of `x-amz-date` (which SigV4 allows and s3s does not read), and the
//! seven-day ceiling of presigned URLs.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use s3s::{S3Error, S3ErrorCode};

/// The id of one request, in its extensions (the events' request id when the SDK sent none).
#[derive(Clone)]
pub struct RequestId(pub String);

impl RequestId {
    /// 16 upper-case hex digits, the form of S3's ids.
    pub fn new() -> RequestId {
        let u = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
        RequestId(u[..16].to_string())
    }
}

/// The longest a presigned URL may be valid, in seconds (SigV4's limit).
const MAX_PRESIGNED_SECS: u64 = 604_800;

/// Checks and normalises `parts` before s3s sees them; an answer when the request is refused.
pub fn prepare(parts: &mut Parts, id: &RequestId) -> Option<Response<s3s::Body>> {
    let presigned_expiry = form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "X-Amz-Expires")
        .map(|(_, v)| v.into_owned());
    if let Some(expires) = presigned_expiry {
        let ok = expires
            .parse::<u64>()
            .is_ok_and(|s| (1..=MAX_PRESIGNED_SECS).contains(&s));
        if !ok {
            return Some(error(
                S3ErrorCode::Custom("AuthorizationQueryParametersError".into()),
                StatusCode::BAD_REQUEST,
                format!(
                    "X-Amz-Expires must be a number of seconds from 1 to {MAX_PRESIGNED_SECS} \
                     (seven days), got '{expires}'"
                ),
                id,
            ));
        }
    }
    let sigv4 = parts
        .headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256"));
    if sigv4
        && !parts.headers.contains_key("x-amz-date")
        && let Some(date) = parts
            .headers
            .get(hyper::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
    {
        // The signature covers `date` (when signed); the timestamp of the string to sign is
        // the same instant in SigV4's form, which s3s takes from `x-amz-date`.
        let amz = date.with_timezone(&chrono::Utc).format("%Y%m%dT%H%M%SZ");
        if let Ok(v) = amz.to_string().parse() {
            parts.headers.insert("x-amz-date", v);
        }
    }
    None
}

/// Whether a request carries a body (which an early refusal may leave unread).
pub fn has_body(parts: &Parts) -> bool {
    let declared = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0");
    declared || parts.headers.contains_key(hyper::header::TRANSFER_ENCODING)
}

/// `answer` with the request id: in the headers, and in an error's XML body. An error to a
/// request with a body also closes the connection: a refusal may come before the body was
/// read (or, with `Expect: 100-continue`, sent), and the connection cannot then tell where
/// the next request starts.
pub async fn finish(
    answer: Response<s3s::Body>,
    id: &RequestId,
    method: &Method,
    had_body: bool,
) -> Response<s3s::Body> {
    let (mut parts, body) = answer.into_parts();
    if let Ok(v) = id.0.parse() {
        parts.headers.insert("x-amz-request-id", v);
    }
    if had_body && parts.status.as_u16() >= 400 {
        parts.headers.insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    let is_xml = parts
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/xml"));
    if parts.status.as_u16() < 400 || *method == Method::HEAD || !is_xml {
        return Response::from_parts(parts, body);
    }
    let Ok(collected) = body.collect().await else {
        return Response::from_parts(parts, s3s::Body::empty());
    };
    let bytes = collected.to_bytes();
    let body = with_request_id(&bytes, &id.0);
    parts.headers.remove(hyper::header::CONTENT_LENGTH);
    if let Ok(v) = body.len().to_string().parse() {
        parts.headers.insert(hyper::header::CONTENT_LENGTH, v);
    }
    Response::from_parts(parts, s3s::Body::from(body))
}

/// An error document with `<RequestId>` (unless it has one).
fn with_request_id(xml: &Bytes, id: &str) -> Bytes {
    let text = String::from_utf8_lossy(xml);
    if text.contains("<RequestId>") {
        return xml.clone();
    }
    match text.rfind("</Error>") {
        Some(at) => Bytes::from(format!(
            "{}<RequestId>{id}</RequestId>{}",
            &text[..at],
            &text[at..]
        )),
        None => xml.clone(),
    }
}

/// An S3 error answer built here, before s3s.
pub fn error(
    code: S3ErrorCode,
    status: StatusCode,
    message: String,
    id: &RequestId,
) -> Response<s3s::Body> {
    let mut e = S3Error::with_message(code, message);
    e.set_status_code(status);
    e.set_request_id(id.0.clone());
    match e.to_http_response() {
        Ok(r) => r,
        Err(_) => Response::builder()
            .status(status)
            .body(s3s::Body::empty())
            .expect("a bare status is a valid answer"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_bodies_get_the_request_id() {
        let xml = bytes::Bytes::from_static(
            b"<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code></Error>",
        );
        let out = super::with_request_id(&xml, "ABC");
        assert!(
            String::from_utf8_lossy(&out).ends_with("<RequestId>ABC</RequestId></Error>"),
            "{out:?}"
        );
    }
}
