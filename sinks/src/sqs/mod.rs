//! The `sqs` sink: a subscription's events sent to an Amazon SQS queue (standard or FIFO), or
//! an SQS-compatible service, with `SendMessageBatch` (a request sink: the engine's retries,
//! circuit breaker and dead letters apply).
//!
//! Each event is one message: its body in the chosen format (`s3`, the S3 event notification
//! format, by default), attributes `tidemark_event_id`, `tidemark_event_type`,
//! `tidemark_bucket`, `tidemark_key` (and `tidemark_replay` on re-deliveries). On a FIFO
//! queue (its name ends in `.fifo`) the message group is `{bucket}/{key}` (one object's events
//! in order) and the deduplication id the event id. A batch is sent as requests of up to ten
//! entries; entries the service failed on its side are sent again on their own.
//!
//! # Layout
//! - `mod.rs`: [`SqsSinkSpec`], its checks, and building the sink.
//! - `sink.rs`: the requests and what their answers mean.

mod sink;

use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use serde::{Deserialize, Serialize};

use crate::aws::{AwsClient, CredentialSource, CredentialsSpec, region_of_host};
use crate::message::{MessageFormat, Template};
use crate::sink::{BuildCtx, SinkKind};
use crate::{Error, Result};

/// The `sqs` sink of a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsSinkSpec {
    /// `https://sqs.REGION.amazonaws.com/ACCOUNT/NAME` (a FIFO queue's name ends in `.fifo`).
    pub queue_url: String,
    /// The service's region; by default the queue URL's, else `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The service's URL, for SQS-compatible services; by default the queue URL's origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Without it, the server's own (`AWS_ACCESS_KEY_ID`…, the shared credentials file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsSpec>,
    /// `s3` (S3 event notification records), `json` or `cloudevents-structured`.
    #[serde(default = "default_format")]
    pub format: String,
    /// A FIFO queue's message group, a template of event fields.
    #[serde(default = "default_group")]
    pub message_group: String,
    /// How long one request may take.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_format() -> String {
    "s3".into()
}

fn default_group() -> String {
    "{bucket}/{key}".into()
}

fn default_timeout() -> u64 {
    30_000
}

/// Message bodies are text: no `avro`, and no CloudEvents binary mode (SQS has no binding).
const FORMATS: &[&str] = &["s3", "json", "cloudevents-structured"];

impl SqsSinkSpec {
    /// What status and the circuit breaker name the destination by.
    pub fn endpoint(&self) -> String {
        self.queue_url.clone()
    }

    pub fn is_fifo(&self) -> bool {
        self.queue_url.ends_with(".fifo")
    }

    /// Where requests go: the endpoint, else the queue URL's origin.
    pub fn service_url(&self) -> Result<Uri> {
        let queue = parse_url("sink.queue_url", &self.queue_url)?;
        let base = match &self.endpoint {
            Some(e) => parse_url("sink.endpoint", e)?,
            None => queue,
        };
        format!(
            "{}://{}/",
            base.scheme_str().unwrap_or("https"),
            base.authority().map(|a| a.as_str()).unwrap_or_default()
        )
        .parse()
        .map_err(|e| Error::invalid("sink.endpoint", format!("{e}")))
    }

    fn region(&self) -> String {
        self.region
            .clone()
            .or_else(|| {
                parse_url("sink.queue_url", &self.queue_url)
                    .ok()
                    .and_then(|u| u.host().and_then(|h| region_of_host(h, "sqs")))
            })
            .unwrap_or_else(|| "us-east-1".into())
    }
}

fn parse_url(field: &str, url: &str) -> Result<Uri> {
    let uri: Uri = url
        .parse()
        .map_err(|e| Error::invalid(field, format!("'{url}' is not a URL: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(Error::invalid(
            field,
            format!("'{url}' is not an http(s):// URL with a host"),
        ));
    }
    Ok(uri)
}

/// Refuse settings that can never work, naming the field.
pub fn check(spec: &SqsSinkSpec) -> Result<()> {
    let queue = parse_url("sink.queue_url", &spec.queue_url)?;
    let name = queue.path().rsplit('/').next().unwrap_or_default();
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    let name_ok = !base.is_empty()
        && name.len() <= 80
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if queue.path().trim_matches('/').split('/').count() != 2 || !name_ok {
        return Err(Error::invalid(
            "sink.queue_url",
            format!(
                "'{}' is not a queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME, a name \
                 of 1-80 letters, digits, '-', '_', '.fifo' for FIFO queues)",
                spec.queue_url
            ),
        ));
    }
    spec.service_url()?;
    if let Some(r) = &spec.region
        && (r.is_empty()
            || !r
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
    {
        return Err(Error::invalid(
            "sink.region",
            format!("'{r}' is not a region name (such as eu-west-1)"),
        ));
    }
    MessageFormat::parse("sink.format", &spec.format, FORMATS)?;
    Template::parse("sink.message_group", &spec.message_group)?;
    if !(1_000..=600_000).contains(&spec.timeout_ms) {
        return Err(Error::invalid(
            "sink.timeout_ms",
            format!("{} is outside 1000..=600000", spec.timeout_ms),
        ));
    }
    Ok(())
}

/// The sink `spec` describes, its credentials resolved.
pub fn build(spec: &SqsSinkSpec, ctx: &BuildCtx<'_>) -> Result<SinkKind> {
    check(spec)?;
    let creds = CredentialSource::resolve(
        spec.credentials.as_ref(),
        ctx.catalog,
        ctx.outbound,
        &spec.region(),
    )?;
    let client = AwsClient::new(
        ctx.client.clone(),
        Arc::new(creds),
        spec.region(),
        "sqs",
        Duration::from_millis(spec.timeout_ms),
    );
    let format = MessageFormat::parse("sink.format", &spec.format, FORMATS)?;
    let sink = sink::SqsSink::new(spec, client, format, ctx)?;
    Ok(SinkKind::Request(Arc::new(sink)))
}
