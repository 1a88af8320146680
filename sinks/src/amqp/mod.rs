//! The `amqp` sink: a subscription's events published to a RabbitMQ (AMQP 0-9-1) exchange as
//! persistent messages, each counted as delivered only once the broker confirmed it
//! (publisher confirms); a request sink: the engine's retries, circuit breaker and dead
//! letters apply.
//!
//! Each event is one message with the routing key its template gives (`{bucket}` by
//! default), `message_id` = the event id, `type` = the event type, headers
//! `tidemark_event_id`, `tidemark_event_type` (`tidemark_replay` on re-deliveries). Messages
//! are published `mandatory`: one no queue takes comes back, and the batch is retried (status
//! says so) instead of being dropped by the broker.
//!
//! # Layout
//! - `mod.rs`: [`AmqpSinkSpec`], its checks, and building the sink.
//! - `frame.rs`: AMQP 0-9-1 frames and field types.
//! - `conn.rs`: a connection with one channel in confirm mode.
//! - `sink.rs`: publishing a batch and waiting for its confirms.

mod conn;
mod frame;
mod sink;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::message::{MessageFormat, Template};
use crate::sink::{BuildCtx, SinkKind};
use crate::socket::parse_server_url;
use crate::{Error, Result, secrets};

/// The `amqp` sink of a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSinkSpec {
    /// `amqp://host[:port][/vhost]`, or `amqps://` for TLS; the virtual host URL-encoded
    /// (`%2F` is `/`, the default).
    pub url: String,
    /// The exchange; `""` is the default exchange, which routes by queue name.
    #[serde(default)]
    pub exchange: String,
    /// The routing key, a template of event fields.
    #[serde(default = "default_routing_key")]
    pub routing_key: String,
    #[serde(default = "default_user")]
    pub username: String,
    /// A value (moved to the secret store) or a reference (`env:NAME`, `file:PATH`).
    #[serde(default = "default_user")]
    pub password: String,
    /// `json`, `s3`, `cloudevents-structured` or `avro`.
    #[serde(default = "default_format")]
    pub format: String,
    /// How long a batch may wait for its confirms.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_routing_key() -> String {
    "{bucket}".into()
}

/// RabbitMQ's default account (which it accepts from loopback only).
fn default_user() -> String {
    "guest".into()
}

fn default_format() -> String {
    "json".into()
}

fn default_timeout() -> u64 {
    10_000
}

const FORMATS: &[&str] = &["json", "s3", "cloudevents-structured", "avro"];

/// Host, port, TLS, virtual host.
pub(crate) struct Address {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub vhost: String,
}

impl AmqpSinkSpec {
    /// What status and the circuit breaker name the destination by.
    pub fn endpoint(&self) -> String {
        format!("{}#{}", self.url, self.exchange)
    }

    pub(crate) fn address(&self) -> Result<Address> {
        let u = parse_server_url(
            "sink.url",
            &self.url,
            ("amqp://", "amqps://"),
            (5672, 5671),
            "sink.username and sink.password",
        )?;
        let vhost = match u.path.as_str() {
            "" => "/".to_string(),
            v => percent_decode(v)
                .ok_or_else(|| Error::invalid("sink.url", format!("'{v}' is not URL-encoded")))?,
        };
        Ok(Address {
            host: u.host,
            port: u.port,
            tls: u.tls,
            vhost,
        })
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// Refuse settings that can never work, naming the field.
pub fn check(spec: &AmqpSinkSpec) -> Result<()> {
    spec.address()?;
    if spec.exchange.len() > 255 {
        return Err(Error::invalid("sink.exchange", "at most 255 bytes"));
    }
    let key = Template::parse("sink.routing_key", &spec.routing_key)?;
    if key.sample("x").len() > 255 {
        return Err(Error::invalid(
            "sink.routing_key",
            "a routing key is at most 255 bytes",
        ));
    }
    MessageFormat::parse("sink.format", &spec.format, FORMATS)?;
    if !(100..=300_000).contains(&spec.timeout_ms) {
        return Err(Error::invalid(
            "sink.timeout_ms",
            format!("{} is outside 100..=300000", spec.timeout_ms),
        ));
    }
    Ok(())
}

/// The sink `spec` describes, its password resolved.
pub fn build(spec: &AmqpSinkSpec, ctx: &BuildCtx<'_>) -> Result<SinkKind> {
    check(spec)?;
    let password = secrets::value(ctx.catalog, &spec.password)?;
    let sink = sink::AmqpSink::new(
        spec,
        password,
        MessageFormat::parse("sink.format", &spec.format, FORMATS)?,
        Duration::from_millis(spec.timeout_ms),
        ctx,
    )?;
    Ok(SinkKind::Request(Arc::new(sink)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_port_and_virtual_host() {
        let spec = |url: &str| AmqpSinkSpec {
            url: url.into(),
            exchange: String::new(),
            routing_key: default_routing_key(),
            username: default_user(),
            password: default_user(),
            format: default_format(),
            timeout_ms: default_timeout(),
        };
        let a = spec("amqp://mq.internal").address().unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.tls, a.vhost.as_str()),
            ("mq.internal", 5672, false, "/")
        );
        let a = spec("amqps://mq:5000/prod%2Feu").address().unwrap();
        assert_eq!((a.port, a.tls, a.vhost.as_str()), (5000, true, "prod/eu"));
        assert!(spec("amqp://u:p@mq").address().is_err());
        assert!(spec("http://mq").address().is_err());
    }
}
