//! Subscriptions as users write them: the JSON `POST /v1/subscriptions` takes (see
//! PRODUCT.md). Unknown fields are refused so a typo never silently changes delivery. Each
//! sink kind's own settings live in its folder (`webhook/config.rs`, `function/config.rs`,
//! `lake/`); [`SinkSpec`] is the closed set of them.

use serde::{Deserialize, Serialize};
use tidemark_core::rules::RuleSpec;

pub use crate::amqp::AmqpSinkSpec;
pub use crate::function::FunctionSpec;
pub use crate::iceberg::IcebergSpec;
pub use crate::kafka::KafkaSinkSpec;
pub use crate::lake::ParquetSpec;
pub use crate::lambda::LambdaSinkSpec;
pub use crate::nats::NatsSinkSpec;
pub use crate::redis_stream::RedisStreamSinkSpec;
pub use crate::secrets::Secrets;
pub use crate::sqs::SqsSinkSpec;
pub use crate::webhook::WebhookSpec;
use crate::webhook::sink::endpoint_of;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSpec {
    pub name: String,
    /// `latest` (default), `earliest`, or an RFC 3339 instant.
    #[serde(default = "latest")]
    pub start: String,
    #[serde(default)]
    pub rules: RuleSpec,
    /// A WASM filter run after the rules: `NAME` (its latest version, followed as new
    /// versions are uploaded) or `NAME@VERSION` (pinned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Handed to the filter's `init` (JSON), so one module serves several subscriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_params: Option<serde_json::Value>,
    /// Consecutive filter errors after which the filter is quarantined for this
    /// subscription (delivery waits for another version).
    #[serde(default = "quarantine_after")]
    pub filter_quarantine_after: u32,
    pub sink: SinkSpec,
    #[serde(default)]
    pub retry: RetrySpec,
    #[serde(default)]
    pub batch: BatchSpec,
    #[serde(default)]
    pub delivery: DeliverySpec,
    #[serde(default)]
    pub circuit: CircuitSpec,
    /// What happens to an event the filter fails on (trap, timeout, memory limit, error
    /// code): `dead_letter` (default), `skip` (counted), or `deliver`.
    #[serde(default = "dead_letter")]
    pub on_filter_error: String,
}

fn latest() -> String {
    "latest".into()
}

fn quarantine_after() -> u32 {
    crate::filtering::DEFAULT_QUARANTINE_AFTER
}

fn dead_letter() -> String {
    "dead_letter".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkSpec {
    Webhook(WebhookSpec),
    Function(FunctionSpec),
    /// Hive-partitioned Parquet files in a directory (the lake).
    Parquet(ParquetSpec),
    /// Apache Iceberg tables (the journal of every event).
    Iceberg(IcebergSpec),
    /// A topic of the user's own Kafka cluster.
    Kafka(KafkaSinkSpec),
    /// An Amazon SQS queue (standard or FIFO).
    Sqs(SqsSinkSpec),
    /// An AWS Lambda function, invoked directly.
    Lambda(LambdaSinkSpec),
    /// Redis Streams (`XADD`).
    #[serde(rename = "redis-stream")]
    RedisStream(RedisStreamSinkSpec),
    /// NATS JetStream.
    Nats(NatsSinkSpec),
    /// A RabbitMQ (AMQP 0-9-1) exchange.
    Amqp(AmqpSinkSpec),
}

impl SinkSpec {
    /// What the endpoint's circuit breaker is keyed by and status shows: `scheme://authority`
    /// of a URL, or `process:` and the command line. Needs no secret, so status and metrics
    /// read it from the spec alone.
    pub fn endpoint(&self) -> Option<String> {
        match self {
            SinkSpec::Webhook(w) => url_endpoint(&w.url),
            SinkSpec::Function(f) => Some(f.endpoint()),
            SinkSpec::Parquet(p) if p.path.starts_with("s3://") => Some(p.path.clone()),
            SinkSpec::Parquet(p) => Some(format!("file://{}", p.path)),
            SinkSpec::Iceberg(i) if i.warehouse.starts_with("s3://") => Some(i.warehouse.clone()),
            SinkSpec::Iceberg(i) => Some(format!("file://{}", i.warehouse)),
            SinkSpec::Kafka(k) => Some(k.endpoint()),
            SinkSpec::Sqs(q) => Some(q.endpoint()),
            SinkSpec::Lambda(l) => Some(l.endpoint()),
            SinkSpec::RedisStream(r) => Some(r.endpoint()),
            SinkSpec::Nats(n) => Some(n.endpoint()),
            SinkSpec::Amqp(a) => Some(a.endpoint()),
        }
    }

    /// A stream sink's: written by partition workers that commit positions themselves, and
    /// counted in files (status `lake_files`).
    pub fn is_stream(&self) -> bool {
        matches!(self, SinkSpec::Parquet(_) | SinkSpec::Iceberg(_))
    }
}

fn url_endpoint(url: &str) -> Option<String> {
    url.parse::<http::Uri>().ok().map(|u| endpoint_of(&u))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySpec {
    /// Attempts per event including the first; then the event is dead-lettered.
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Dead-letter an event whose first attempt is older than this, whatever the count.
    pub max_age_ms: Option<u64>,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            max_attempts: 12,
            initial_backoff_ms: 200,
            max_backoff_ms: 3_600_000,
            max_age_ms: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSpec {
    pub max_events: usize,
    pub max_wait_ms: u64,
}

impl Default for BatchSpec {
    fn default() -> Self {
        BatchSpec {
            max_events: 1,
            max_wait_ms: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySpec {
    /// Deliveries in flight at once per log partition (different keys; one key is always
    /// delivered one event at a time, in order).
    pub max_in_flight: usize,
}

impl Default for DeliverySpec {
    fn default() -> Self {
        DeliverySpec { max_in_flight: 32 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitSpec {
    /// Consecutive failed attempts that open the endpoint's circuit.
    pub failure_threshold: u32,
    /// How long an open circuit waits before one probe request.
    pub open_ms: u64,
}

impl Default for CircuitSpec {
    fn default() -> Self {
        CircuitSpec {
            failure_threshold: 5,
            open_ms: 30_000,
        }
    }
}
