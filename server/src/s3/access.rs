//! Who reads and who is refused: `ObjectAccessed:Get` / `Head` events for reads of buckets
//! that turned them on (`PATCH /v1/buckets/{bucket}` with `access_events`; off by default),
//! and `ObjectAccess:Denied` for every request to an existing bucket that authentication
//! refused (unknown access key, bad signature, expired presigned URL, anonymous).
//!
//! Also the virtual-host addressing of `--s3-domain`: `BUCKET.DOMAIN` names the bucket.

use std::borrow::Cow;
use std::net::SocketAddr;

use hyper::http::request::Parts;
use s3s::S3Result;
use s3s::host::{S3Host, VirtualHost};
use tidemark_core::event::{EventType, ObjectState};
use tidemark_core::ingest::RequestContext;

use crate::http::AppState;

/// Record a read of `bucket/key` when the bucket asks for it. The event is appended in the
/// background: a read does not wait for an fsync, and a failed append is logged, not
/// answered.
pub fn read(
    app: &std::sync::Arc<AppState>,
    bucket: &str,
    key: &str,
    event_type: EventType,
    ctx: RequestContext,
    seen: &ObjectState,
) {
    if !app.node.access_events(bucket) {
        return;
    }
    let (app, bucket, key, seen) = (
        app.clone(),
        bucket.to_string(),
        key.to_string(),
        seen.clone(),
    );
    tokio::spawn(async move {
        let appended = app
            .node
            .ingestor
            .append_notice(&bucket, &key, event_type, &ctx, Some(seen))
            .await;
        if let Err(e) = appended {
            tracing::warn!("{event_type} event for {bucket}/{key} not recorded: {e}");
        }
    });
}

/// The bucket and key a request names, read before s3s takes it: `BUCKET.DOMAIN` hosts
/// when a domain is configured, else the first path segment.
pub struct Target {
    bucket: String,
    key: String,
    ctx: RequestContext,
}

impl Target {
    /// The request addresses an object (not only a bucket).
    pub fn names_key(&self) -> bool {
        !self.key.is_empty()
    }

    pub fn of(req: &Parts, domain: Option<&str>, peer: SocketAddr) -> Option<Target> {
        let host = req
            .headers
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(strip_port);
        let path = req.uri.path().strip_prefix('/').unwrap_or(req.uri.path());
        let vhost_bucket = domain
            .zip(host)
            .and_then(|(d, h)| h.strip_suffix(d)?.strip_suffix('.'));
        let (bucket, key) = match vhost_bucket {
            Some(b) => (b, path),
            None => path.split_once('/').unwrap_or((path, "")),
        };
        if bucket.is_empty() {
            return None;
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        Some(Target {
            bucket: decode(bucket),
            key: decode(key),
            ctx: RequestContext {
                requester: claimed_access_key(req),
                source_ip: Some(peer.ip().to_string()),
                request_id: super::invocation_id(&req.headers),
                user_agent: req
                    .headers
                    .get(hyper::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                interface: tidemark_core::ingest::Interface::S3,
            },
        })
    }
}

/// Append `ObjectAccess:Denied` for a refused request, if it named an existing bucket (a
/// request for a bucket that does not exist has no subscriber to tell). Waits until it is
/// durable, so the refusal is answered after it is on record.
pub async fn denied(app: &AppState, target: Target) {
    if app
        .node
        .catalog
        .get(crate::node::buckets::KIND, &target.bucket)
        .is_none()
    {
        return;
    }
    let appended = app
        .node
        .ingestor
        .append_notice(
            &target.bucket,
            &target.key,
            EventType::ObjectAccessDenied,
            &target.ctx,
            None,
        )
        .await;
    if let Err(e) = appended {
        tracing::warn!(
            "ObjectAccess:Denied event for {}/{} not recorded: {e}",
            target.bucket,
            target.key
        );
    }
}

/// The access key a request says it signs with, which is what a refused request can be
/// attributed to: the `Credential` of a SigV4 header or presigned URL, or the key of a SigV2
/// header (`AWS KEY:SIGNATURE`) or presigned URL (`AWSAccessKeyId`).
fn claimed_access_key(req: &Parts) -> Option<String> {
    let header = req
        .headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let from_header = header.and_then(|a| match a.split_once("Credential=") {
        Some((_, c)) => c.split(['/', ',']).next(),
        None => a.strip_prefix("AWS ")?.split(':').next(),
    });
    let from_query = || {
        form_urlencoded::parse(req.uri.query()?.as_bytes()).find_map(|(k, v)| match &*k {
            "X-Amz-Credential" => v.split('/').next().map(str::to_string),
            "AWSAccessKeyId" => Some(v.into_owned()),
            _ => None,
        })
    };
    from_header
        .map(str::to_string)
        .or_else(from_query)
        .filter(|k| !k.is_empty())
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Virtual-host addressing: `BUCKET.DOMAIN[:PORT]` names the bucket; any other host name
/// (`localhost`, the bare domain) is path-style. Unlike s3s's `SingleDomain`, the port is
/// ignored and unknown hosts are not taken as bucket names.
pub struct Domain(pub String);

impl S3Host for Domain {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        let name = strip_port(host);
        let bucket = name
            .strip_suffix(self.0.as_str())
            .and_then(|b| b.strip_suffix('.'));
        let vh = VirtualHost::new(Cow::Borrowed(self.0.as_str()));
        Ok(match bucket {
            Some(b) if !b.is_empty() => vh.with_bucket(b),
            _ => vh,
        })
    }
}
