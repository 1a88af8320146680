//! `--max-body-bytes` for the S3 requests whose XML body is read whole (DeleteObjects,
//! CompleteMultipartUpload, tagging, bucket configuration, CreateBucket). s3s enforces its
//! limit while reading, but answers a streamed body over it as `InternalError`; a declared
//! `Content-Length` over the limit is refused here first with S3's own code,
//! `MaxMessageLengthExceeded`, before a byte of the body is read. Object bodies (PutObject,
//! UploadPart) stream and are capped by `--max-object-bytes` instead.

use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};

/// Query sub-resources whose PUT or POST carries an XML document.
const XML_SUBRESOURCES: &[&str] = &[
    "delete",
    "tagging",
    "notification",
    "versioning",
    "acl",
    "cors",
    "lifecycle",
    "policy",
    "website",
    "logging",
    "encryption",
    "replication",
    "object-lock",
    "retention",
    "legal-hold",
    "restore",
    "ownershipControls",
    "publicAccessBlock",
    "requestPayment",
    "accelerate",
];

/// The declared length of a request whose whole body would be read, when it is over `limit`.
/// `names_key`: the request addresses an object, not a bucket.
pub fn oversized(parts: &Parts, names_key: bool, limit: usize) -> Option<u64> {
    let length: u64 = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    if length <= limit as u64 {
        return None;
    }
    let query: Vec<String> = form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .map(|(k, _)| k.into_owned())
        .collect();
    let has = |name: &str| query.iter().any(|k| k == name);
    let whole = match parts.method {
        Method::POST => {
            XML_SUBRESOURCES.iter().any(|s| has(s)) || (has("uploadId") && !has("partNumber"))
        }
        // A PUT to a bucket is CreateBucket (a configuration document) or a sub-resource.
        Method::PUT => XML_SUBRESOURCES.iter().any(|s| has(s)) || !names_key,
        _ => false,
    };
    whole.then_some(length)
}

/// S3's answer to a body over the limit.
pub fn refusal(length: u64, limit: usize) -> Response<s3s::Body> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>MaxMessageLengthExceeded\
         </Code><Message>Your request was too big: {length} bytes, more than the {limit} this \
         server takes (--max-body-bytes).</Message></Error>"
    );
    Response::builder()
        .status(StatusCode::BAD_REQUEST)
        .header(hyper::header::CONTENT_TYPE, "application/xml")
        // The body was not read: the connection cannot carry another request.
        .header(hyper::header::CONNECTION, "close")
        .body(s3s::Body::from(xml))
        .expect("static headers are valid")
}
