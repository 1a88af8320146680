//! The `redis-stream` sink: a subscription's events appended to Redis Streams with `XADD` (a
//! request sink: the engine's retries, circuit breaker and dead letters apply).
//!
//! Each event is one stream entry with the fields `event_id`, `event_type`, `bucket`, `key`,
//! `content_type`, `replay` (on re-deliveries only) and `data` (the event in the chosen
//! format), appended to the stream its name template gives (`tidemark:{bucket}` by default,
//! so one object's events are in one stream in order). A batch is one pipelined round trip;
//! `maxlen` trims streams approximately (`MAXLEN ~`).
//!
//! # Layout
//! - `mod.rs`: [`RedisStreamSinkSpec`], its checks, and building the sink.
//! - `resp.rs`: the Redis protocol, as far as the sink speaks it.
//! - `sink.rs`: connections, authentication, the pipelined `XADD`s.

mod resp;
mod sink;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::message::{MessageFormat, Template};
use crate::sink::{BuildCtx, SinkKind};
use crate::socket::parse_server_url;
use crate::{Error, Result, secrets};

/// The `redis-stream` sink of a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisStreamSinkSpec {
    /// `redis://host[:port][/db]`, or `rediss://` for TLS.
    pub url: String,
    /// An ACL user (Redis 6+); without it, `AUTH password` alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A value (moved to the secret store) or a reference (`env:NAME`, `file:PATH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The stream's name, a template of event fields.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// `json`, `s3`, `cloudevents-structured` or `avro` (the log's Confluent-framed record).
    #[serde(default = "default_format")]
    pub format: String,
    /// Trim each stream to about this many entries (`XADD … MAXLEN ~ n`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxlen: Option<u64>,
    /// How long one batch's round trip may take.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_stream() -> String {
    "tidemark:{bucket}".into()
}

fn default_format() -> String {
    "json".into()
}

fn default_timeout() -> u64 {
    10_000
}

const FORMATS: &[&str] = &["json", "s3", "cloudevents-structured", "avro"];

/// Where a server is: host, port, TLS, database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Address {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub db: u32,
}

impl RedisStreamSinkSpec {
    /// What status and the circuit breaker name the destination by.
    pub fn endpoint(&self) -> String {
        self.url.clone()
    }

    pub(crate) fn address(&self) -> Result<Address> {
        let u = parse_server_url(
            "sink.url",
            &self.url,
            ("redis://", "rediss://"),
            (6379, 6379),
            "sink.username and sink.password",
        )?;
        let db = match u.path.as_str() {
            "" => 0,
            d => d.parse().map_err(|_| {
                Error::invalid("sink.url", format!("'{d}' is not a database number"))
            })?,
        };
        Ok(Address {
            host: u.host,
            port: u.port,
            tls: u.tls,
            db,
        })
    }
}

/// Refuse settings that can never work, naming the field.
pub fn check(spec: &RedisStreamSinkSpec) -> Result<()> {
    spec.address()?;
    let stream = Template::parse("sink.stream", &spec.stream)?;
    if stream.sample("x").len() > 4096 {
        return Err(Error::invalid("sink.stream", "a stream name is too long"));
    }
    MessageFormat::parse("sink.format", &spec.format, FORMATS)?;
    if spec.maxlen == Some(0) {
        return Err(Error::invalid(
            "sink.maxlen",
            "0 would empty every stream; give at least 1, or leave it out to keep all",
        ));
    }
    if spec.username.is_some() && spec.password.is_none() {
        return Err(Error::invalid(
            "sink.password",
            "sink.username needs a password",
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

/// The sink `spec` describes, its password resolved.
pub fn build(spec: &RedisStreamSinkSpec, ctx: &BuildCtx<'_>) -> Result<SinkKind> {
    check(spec)?;
    let password = spec
        .password
        .as_deref()
        .map(|p| secrets::value(ctx.catalog, p))
        .transpose()?;
    let sink = sink::RedisSink::new(
        spec,
        password,
        MessageFormat::parse("sink.format", &spec.format, FORMATS)?,
        Duration::from_millis(spec.timeout_ms),
        ctx,
    )?;
    Ok(SinkKind::Request(Arc::new(sink)))
}
