//! The `lambda` sink: an AWS Lambda function (or a Lambda-compatible service at a custom
//! endpoint) invoked with a subscription's events, as S3 invokes one for its notifications
//! (a request sink: the engine's retries, circuit breaker and dead letters apply).
//!
//! A batch is one invocation: its payload in the chosen format (`s3`: one `Records` entry per
//! event, as S3's own notifications). `RequestResponse` (the default) waits for the function:
//! an error it raised (`X-Amz-Function-Error`) fails the attempt, which is retried. `Event`
//! hands the payload to Lambda's own queue: delivered once Lambda accepted it.
//!
//! # Layout
//! - `mod.rs`: [`LambdaSinkSpec`], its checks, and building the sink.
//! - `sink.rs`: the Invoke call and what its answer means.

mod sink;

use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use serde::{Deserialize, Serialize};

use crate::aws::{AwsClient, CredentialSource, CredentialsSpec};
use crate::message::MessageFormat;
use crate::sink::{BuildCtx, SinkKind};
use crate::{Error, Result};

/// The `lambda` sink of a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LambdaSinkSpec {
    /// A function name (`thumbnails`, `thumbnails:live` with a version or alias) or ARN.
    pub function: String,
    /// `RequestResponse` (wait for the function; its error is a failed attempt) or `Event`.
    #[serde(default = "default_invocation")]
    pub invocation_type: String,
    /// The region; by default the ARN's, else `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The service's URL, for Lambda-compatible services (`http://127.0.0.1:9001`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Without it, the server's own (`AWS_ACCESS_KEY_ID`…, the shared credentials file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsSpec>,
    /// `s3` (S3 event notification records), `cloudevents-structured` or `json`.
    #[serde(default = "default_format")]
    pub format: String,
    /// How long one invocation may take.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_invocation() -> String {
    "RequestResponse".into()
}

fn default_format() -> String {
    "s3".into()
}

fn default_timeout() -> u64 {
    60_000
}

const FORMATS: &[&str] = &["s3", "cloudevents-structured", "json"];

impl LambdaSinkSpec {
    /// What status and the circuit breaker name the destination by.
    pub fn endpoint(&self) -> String {
        format!("lambda://{}", self.function)
    }

    fn region(&self) -> String {
        self.region
            .clone()
            .or_else(|| {
                let parts: Vec<&str> = self.function.split(':').collect();
                (parts.len() >= 7 && parts[0] == "arn").then(|| parts[3].to_string())
            })
            .unwrap_or_else(|| "us-east-1".into())
    }

    /// The Invoke URL: `{endpoint}/2015-03-31/functions/{function}/invocations`.
    pub fn invoke_url(&self) -> Result<Uri> {
        let base = match &self.endpoint {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => format!("https://lambda.{}.amazonaws.com", self.region()),
        };
        let name: String = self
            .function
            .bytes()
            .map(|b| match b {
                b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') => {
                    (b as char).to_string()
                }
                b => format!("%{b:02X}"),
            })
            .collect();
        let url = format!("{base}/2015-03-31/functions/{name}/invocations");
        let uri: Uri = url
            .parse()
            .map_err(|e| Error::invalid("sink.endpoint", format!("'{base}': {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(Error::invalid(
                "sink.endpoint",
                format!("'{base}' is not an http(s):// URL with a host"),
            ));
        }
        Ok(uri)
    }
}

/// Refuse settings that can never work, naming the field.
pub fn check(spec: &LambdaSinkSpec) -> Result<()> {
    let f = &spec.function;
    let plain = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    };
    let qualifier_ok = |q: &str| {
        !q.is_empty()
            && q.len() <= 128
            && q.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'$'))
    };
    let ok = if f.starts_with("arn:") {
        let p: Vec<&str> = f.split(':').collect();
        (7..=8).contains(&p.len())
            && p[2] == "lambda"
            && p[5] == "function"
            && plain(p[6])
            && p.get(7).is_none_or(|q| qualifier_ok(q))
    } else {
        match f.split_once(':') {
            Some((name, q)) => plain(name) && qualifier_ok(q),
            None => plain(f),
        }
    };
    if !ok || f.len() > 170 {
        return Err(Error::invalid(
            "sink.function",
            format!(
                "'{f}' is not a function name (1-64 letters, digits, '-', '_', optionally \
                 ':VERSION' or ':ALIAS') or a function ARN"
            ),
        ));
    }
    if !matches!(spec.invocation_type.as_str(), "RequestResponse" | "Event") {
        return Err(Error::invalid(
            "sink.invocation_type",
            format!("'{}' is not RequestResponse or Event", spec.invocation_type),
        ));
    }
    MessageFormat::parse("sink.format", &spec.format, FORMATS)?;
    spec.invoke_url()?;
    if !(1_000..=900_000).contains(&spec.timeout_ms) {
        return Err(Error::invalid(
            "sink.timeout_ms",
            format!("{} is outside 1000..=900000", spec.timeout_ms),
        ));
    }
    Ok(())
}

/// The sink `spec` describes, its credentials resolved.
pub fn build(spec: &LambdaSinkSpec, ctx: &BuildCtx<'_>) -> Result<SinkKind> {
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
        "lambda",
        Duration::from_millis(spec.timeout_ms),
    );
    let format = MessageFormat::parse("sink.format", &spec.format, FORMATS)?;
    let sink = sink::LambdaSink::new(spec, client, format, ctx)?;
    Ok(SinkKind::Request(Arc::new(sink)))
}
