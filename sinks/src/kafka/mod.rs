//! The `kafka` sink: a subscription's events produced to a topic of the user's own Kafka
//! cluster (a request sink: the engine's retries, circuit breaker and dead letters apply).
//!
//! Each event is one record: its key from a template (`{bucket}/{key}` by default, so one
//! object's events go to one partition in order, with librdkafka's `murmur2_random`
//! partitioner, which is the Java client's for keyed records), its value in the chosen format.
//! The producer is idempotent (`acks=all`), and a batch counts as delivered only once the
//! broker acknowledged every record of it.
//!
//! # Layout
//! - `mod.rs`: [`KafkaSinkSpec`], its checks, and building the sink.
//! - `sink.rs`: rendering records and producing them.

mod registry;
mod sink;

pub use registry::RegistrySpec;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::message::{MessageFormat, Template};
use crate::sink::{BuildCtx, SinkKind};
use crate::{Error, Result, secrets};

/// The `kafka` sink of a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkSpec {
    /// `host:port[,host:port...]` of the user's cluster.
    pub brokers: String,
    pub topic: String,
    /// The record key: a template of `{bucket}`, `{key}`, `{event_type}`, `{version_id}` and
    /// text.
    #[serde(default = "default_key")]
    pub key: String,
    /// `json` (the event as `log tail --json` prints it), `avro` (the log's Confluent-framed
    /// Avro record, schema ids of Tidemark's registry), `cloudevents-structured`,
    /// `cloudevents-binary` (attributes as `ce_*` headers) or `s3`.
    #[serde(default = "default_format")]
    pub format: String,
    /// A fixed partition for every record instead of the key's hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// librdkafka producer properties (TLS, SASL: `security.protocol`, `sasl.mechanism`, …).
    /// A secret one (`sasl.password`, `ssl.key.password`, …) is moved to the secret store, or
    /// given as `env:NAME` / `file:PATH`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    /// How long a batch may wait for the broker's acknowledgement.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// With `format` `avro`: the user's own schema registry, where the log's schemas are
    /// registered and whose ids the records carry (instead of Tidemark's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_registry: Option<RegistrySpec>,
}

fn default_key() -> String {
    "{bucket}/{key}".into()
}

fn default_format() -> String {
    "json".into()
}

fn default_timeout() -> u64 {
    30_000
}

/// Producer properties a subscription may set: TLS and SASL with in-line PEM (never a path on
/// the server, never a command such as `sasl.kerberos.kinit.cmd`), compression and batching
/// within librdkafka's bounded defaults.
const ALLOWED_PROPERTIES: &[&str] = &[
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.pem",
    "ssl.certificate.pem",
    "ssl.key.pem",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
    "compression.type",
    "compression.codec",
    "linger.ms",
    "batch.num.messages",
    "batch.size",
    "request.timeout.ms",
];

/// Properties Tidemark sets itself: the user cannot turn the guarantees off.
const OWN_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "partitioner",
    "message.timeout.ms",
    "delivery.timeout.ms",
];

/// The formats a record's value may be in.
const FORMATS: &[&str] = &[
    "json",
    "avro",
    "cloudevents-structured",
    "cloudevents-binary",
    "s3",
];

impl KafkaSinkSpec {
    /// What status and the circuit breaker name the destination by.
    pub fn endpoint(&self) -> String {
        format!("kafka://{}/{}", self.brokers, self.topic)
    }

    fn value_format(&self) -> Result<MessageFormat> {
        MessageFormat::parse("sink.format", &self.format, FORMATS)
    }
}

/// Refuse settings that can never work, naming the field.
pub fn check(spec: &KafkaSinkSpec) -> Result<()> {
    if spec.brokers.split(',').any(|b| {
        let b = b.trim();
        b.is_empty() || !b.contains(':')
    }) {
        return Err(Error::invalid(
            "sink.brokers",
            format!("'{}': give host:port[,host:port...]", spec.brokers),
        ));
    }
    let topic_ok = !spec.topic.is_empty()
        && spec.topic.len() <= 249
        && spec.topic != "."
        && spec.topic != ".."
        && spec
            .topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !topic_ok {
        return Err(Error::invalid(
            "sink.topic",
            format!(
                "'{}' is not a Kafka topic name (1-249 of letters, digits, '.', '_', '-')",
                spec.topic
            ),
        ));
    }
    Template::parse("sink.key", &spec.key)?;
    spec.value_format()?;
    if spec.partition.is_some_and(|p| p < 0) {
        return Err(Error::invalid("sink.partition", "must be 0 or more"));
    }
    for k in spec.properties.keys() {
        if OWN_PROPERTIES.contains(&k.as_str()) {
            return Err(Error::invalid(
                format!("sink.properties.{k}"),
                "is set by Tidemark (brokers, idempotence, acks, partitioner, timeouts have \
                 their own settings)",
            ));
        }
        if !ALLOWED_PROPERTIES.contains(&k.as_str()) {
            return Err(Error::invalid(
                format!("sink.properties.{k}"),
                format!(
                    "is not a property a subscription may set; allowed: {}",
                    ALLOWED_PROPERTIES.join(", ")
                ),
            ));
        }
    }
    if let Some(r) = &spec.schema_registry {
        if spec.format != "avro" {
            return Err(Error::invalid(
                "sink.schema_registry",
                "a schema registry is for the avro format",
            ));
        }
        if r.password.is_some() && r.username.is_none() {
            return Err(Error::invalid(
                "sink.schema_registry.username",
                "a password needs a username",
            ));
        }
    }
    if !(1_000..=600_000).contains(&spec.timeout_ms) {
        return Err(Error::invalid(
            "sink.timeout_ms",
            format!("{} is outside 1000..=600000", spec.timeout_ms),
        ));
    }
    Ok(())
}

/// Whether a property holds a secret (moved to the secret store when given inline).
pub fn is_secret_property(key: &str) -> bool {
    key.contains("password") || key.contains("secret") || key.ends_with(".key.pem")
}

/// The sink `spec` describes, its secret properties resolved.
pub fn build(spec: &KafkaSinkSpec, ctx: &BuildCtx<'_>) -> Result<SinkKind> {
    check(spec)?;
    let mut properties = BTreeMap::new();
    for (k, v) in &spec.properties {
        let value = match is_secret_property(k) || secrets::is_reference(v) {
            true => secrets::resolve(ctx.catalog, v)?,
            false => v.clone(),
        };
        properties.insert(k.clone(), value);
    }
    let registry = match &spec.schema_registry {
        Some(r) => {
            let password = r
                .password
                .as_deref()
                .map(|p| secrets::value(ctx.catalog, p))
                .transpose()?;
            Some(registry::UserRegistry::new(
                r,
                &spec.topic,
                password,
                ctx.client.clone(),
                ctx.codec.clone(),
            ))
        }
        None => None,
    };
    let sink = sink::KafkaSink::new(
        spec,
        properties,
        spec.value_format()?,
        Duration::from_millis(spec.timeout_ms),
        registry,
        ctx,
    )?;
    Ok(SinkKind::Request(Arc::new(sink)))
}
