//! The `nats` sink: a subscription's events published to NATS JetStream, each counted as
//! delivered once the stream acknowledged it (a request sink: the engine's retries, circuit
//! breaker and dead letters apply).
//!
//! Each event is one message on the subject its template gives (`tidemark.{bucket}` by
//! default), with `Nats-Msg-Id` = the event id (JetStream drops a re-sent one within its
//! duplicate window), and headers `tidemark_event_id`, `tidemark_event_type`, `Content-Type`
//! (`tidemark_replay` on re-deliveries, whose id is made distinct so they are not dropped).
//! A batch is published at once and waited for as a whole.
//!
//! # Layout
//! - `mod.rs`: [`NatsSinkSpec`], its checks, and building the sink.
//! - `proto.rs`: the NATS protocol, as far as the sink speaks it.
//! - `sink.rs`: publishing a batch and reading its acknowledgements.

mod proto;
mod sink;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::message::{MessageFormat, Template};
use crate::sink::{BuildCtx, SinkKind};
use crate::socket::parse_server_url;
use crate::{Error, Result, secrets};

/// The `nats` sink of a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkSpec {
    /// `nats://host[:port]`, or `tls://host[:port]` for TLS.
    pub url: String,
    /// The subject, a template of event fields.
    #[serde(default = "default_subject")]
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A value (moved to the secret store) or a reference (`env:NAME`, `file:PATH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// An authentication token (moved to the secret store), instead of user and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// `json`, `s3`, `cloudevents-structured` or `avro`.
    #[serde(default = "default_format")]
    pub format: String,
    /// How long a batch may wait for its acknowledgements.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_subject() -> String {
    "tidemark.{bucket}".into()
}

fn default_format() -> String {
    "json".into()
}

fn default_timeout() -> u64 {
    10_000
}

const FORMATS: &[&str] = &["json", "s3", "cloudevents-structured", "avro"];

impl NatsSinkSpec {
    /// What status and the circuit breaker name the destination by.
    pub fn endpoint(&self) -> String {
        self.url.clone()
    }

    /// Host, port, TLS.
    pub fn address(&self) -> Result<(String, u16, bool)> {
        let u = parse_server_url(
            "sink.url",
            &self.url,
            ("nats://", "tls://"),
            (4222, 4222),
            "sink.username and sink.password, or sink.token",
        )?;
        if !u.path.is_empty() {
            return Err(Error::invalid(
                "sink.url",
                format!("'{}': a NATS URL has no path", self.url),
            ));
        }
        Ok((u.host, u.port, u.tls))
    }

    /// The secret values and references it holds.
    pub fn secrets_mut(&mut self) -> impl Iterator<Item = &mut String> {
        self.password.iter_mut().chain(self.token.iter_mut())
    }

    pub fn secrets(&self) -> Vec<String> {
        self.password
            .iter()
            .chain(self.token.iter())
            .cloned()
            .collect()
    }
}

/// Whether `subject` can be published to: tokens of printable characters, no wildcards.
pub(crate) fn subject_ok(subject: &str) -> bool {
    !subject.is_empty()
        && subject.len() <= 4096
        && subject.split('.').all(|t| {
            !t.is_empty() && t != "*" && t != ">" && t.bytes().all(|b| b.is_ascii_graphic())
        })
}

/// Refuse settings that can never work, naming the field.
pub fn check(spec: &NatsSinkSpec) -> Result<()> {
    spec.address()?;
    let subject = Template::parse("sink.subject", &spec.subject)?;
    if !subject_ok(&subject.sample("x")) {
        return Err(Error::invalid(
            "sink.subject",
            format!(
                "'{}' is not a subject to publish to (tokens separated by '.', no spaces, no \
                 wildcards)",
                spec.subject
            ),
        ));
    }
    MessageFormat::parse("sink.format", &spec.format, FORMATS)?;
    if spec.token.is_some() && (spec.username.is_some() || spec.password.is_some()) {
        return Err(Error::invalid(
            "sink.token",
            "give a token, or a username and password, not both",
        ));
    }
    if spec.username.is_some() != spec.password.is_some() {
        return Err(Error::invalid(
            "sink.password",
            "a username and a password go together",
        ));
    }
    if !(100..=300_000).contains(&spec.timeout_ms) {
        return Err(Error::invalid(
            "sink.timeout_ms",
            format!("{} is outside 100..=300000", spec.timeout_ms),
        ));
    }
    Ok(())
}

/// The sink `spec` describes, its secrets resolved.
pub fn build(spec: &NatsSinkSpec, ctx: &BuildCtx<'_>) -> Result<SinkKind> {
    check(spec)?;
    let resolve = |v: &Option<String>| {
        v.as_deref()
            .map(|p| secrets::value(ctx.catalog, p))
            .transpose()
    };
    let auth = proto::Auth {
        username: spec.username.clone(),
        password: resolve(&spec.password)?,
        token: resolve(&spec.token)?,
    };
    let sink = sink::NatsSink::new(
        spec,
        auth,
        MessageFormat::parse("sink.format", &spec.format, FORMATS)?,
        Duration::from_millis(spec.timeout_ms),
        ctx,
    )?;
    Ok(SinkKind::Request(Arc::new(sink)))
}
