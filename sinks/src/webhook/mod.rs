//! The webhook sink: HTTP POST of events to a user's endpoint (a request sink).
//!
//! # Layout
//! - `config.rs`: [`WebhookSpec`], the sink as a subscription writes it.
//! - `format.rs`: request bodies (CloudEvents binary/structured/batch, Avro; S3 records from
//!   `s3.rs`).
//! - `signature.rs`: Standard Webhooks signing secrets and signatures.
//! - `sink.rs`: sending one request and classifying the answer.
//!
//! [`build`] turns a spec into the running sink, secrets resolved.

mod config;
pub mod format;
mod s3;
pub mod signature;
pub mod sink;

pub use config::WebhookSpec;

use std::sync::Arc;
use std::time::Duration;

use crate::sink::{BuildCtx, SinkKind};
use crate::{Error, Result, secrets};
use sink::{WebhookSink, endpoint_of, parse_secrets};

/// The webhook sink `spec` describes, its secrets and token resolved; errors name the field.
pub fn build(spec: &WebhookSpec, ctx: &BuildCtx) -> Result<SinkKind> {
    let bad = |field: &str, e: String| Error::invalid(field, e);
    let uri: http::Uri = spec
        .url
        .parse()
        .map_err(|e| bad("sink.url", format!("{e}")))?;
    let values = secrets::resolve_all(ctx.catalog, &spec.secret.list())?;
    let bearer = match &spec.bearer_token {
        Some(r) => Some(
            http::HeaderValue::from_str(&format!("Bearer {}", secrets::resolve(ctx.catalog, r)?))
                .map_err(|_| bad("sink.bearer_token", "not a valid header value".into()))?,
        ),
        None => None,
    };
    let mut headers = Vec::new();
    for (k, v) in &spec.headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| bad("sink.headers", e.to_string()))?;
        let value =
            http::HeaderValue::from_str(v).map_err(|e| bad("sink.headers", e.to_string()))?;
        headers.push((name, value));
    }
    Ok(SinkKind::Request(Arc::new(WebhookSink {
        client: ctx.client.clone(),
        endpoint: endpoint_of(&uri),
        uri,
        format: spec.format,
        secrets: parse_secrets(&values).map_err(|e| bad("sink.secret", e))?,
        bearer,
        headers,
        timeout: Duration::from_millis(spec.timeout_ms),
        subscription: ctx.subscription.to_string(),
        source: ctx.source.to_string(),
        replay: ctx.replay.map(str::to_string),
    })))
}
