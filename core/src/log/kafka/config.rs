//! Settings of the Kafka log backend. `Debug` and `Serialize` show no secret: the named ones
//! are [`Secret`](super::Secret)s, and extra properties whose key names a password, a secret or
//! the OAUTHBEARER configuration show `<redacted>`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::security::{Security, is_secret_property};

#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub brokers: String,
    /// Replication factor of topics Tidemark creates.
    pub replication_factor: i32,
    /// `linger.ms`: how long the producer waits to fill a batch.
    pub linger_ms: u32,
    /// `batch.size` in bytes.
    pub batch_size: u32,
    /// `message.timeout.ms`: after this long without a delivery report an append fails (and the
    /// mutation is not acknowledged).
    pub delivery_timeout_ms: u32,
    /// How long metadata, watermark, offset and admin requests may take.
    pub request_timeout_ms: u32,
    /// `session.timeout.ms` of group members: how soon a dead member's partitions move on.
    pub session_timeout_ms: u32,
    /// `group.instance.id` of this process's group members (static membership): a restarted
    /// node with the same id takes its partitions back without waiting for its old session
    /// to time out. Not a setting: the node keeps it in its data directory.
    #[serde(skip)]
    pub instance_id: Option<String>,
    /// TLS and SASL: `--kafka-security-protocol`, `--kafka-sasl-*`, `--kafka-ssl-*`.
    pub security: Security,
    /// Extra librdkafka properties (`compression.type`, `ssl.endpoint.identification.algorithm`,
    /// ...), applied to every client after everything else, so they win over the named settings.
    #[serde(serialize_with = "serialize_redacted")]
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            replication_factor: 1,
            linger_ms: 5,
            batch_size: 1 << 20,
            delivery_timeout_ms: 30_000,
            request_timeout_ms: 10_000,
            session_timeout_ms: 10_000,
            instance_id: None,
            security: Security::default(),
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.request_timeout_ms))
    }
}

/// `properties` as shown: secret values replaced.
fn redacted(properties: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    properties
        .iter()
        .map(|(k, v)| {
            let shown = if is_secret_property(k) {
                "<redacted>"
            } else {
                v.as_str()
            };
            (k.as_str(), shown)
        })
        .collect()
}

fn serialize_redacted<S: serde::Serializer>(
    properties: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&redacted(properties), s)
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("replication_factor", &self.replication_factor)
            .field("linger_ms", &self.linger_ms)
            .field("batch_size", &self.batch_size)
            .field("delivery_timeout_ms", &self.delivery_timeout_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("session_timeout_ms", &self.session_timeout_ms)
            .field("instance_id", &self.instance_id)
            .field("security", &self.security)
            .field("properties", &redacted(&self.properties))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{SaslMechanism, Secret, SecurityProtocol};
    use super::*;

    #[test]
    fn debug_and_serialize_show_no_secret() {
        let config = KafkaConfig {
            security: Security {
                protocol: Some(SecurityProtocol::SaslSsl),
                sasl_mechanism: Some(SaslMechanism::Plain),
                sasl_username: Some("tidemark".into()),
                sasl_password: Some(Secret::new("named-pw-1")),
                ssl_key_password: Some(Secret::new("named-pw-2")),
                ..Security::default()
            },
            properties: [
                ("sasl.password", "prop-pw-3"),
                ("ssl.keystore.password", "prop-pw-4"),
                ("sasl.oauthbearer.client.secret", "prop-pw-5"),
                ("sasl.oauthbearer.config", "principal=x prop-pw-6"),
                ("compression.type", "lz4"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..KafkaConfig::default()
        };
        let debug = format!("{config:?}");
        let json = serde_json::to_string(&config).unwrap();
        for shown in [debug, json] {
            assert!(!shown.contains("pw-"), "{shown}");
            assert!(
                shown.contains("lz4") && shown.contains("tidemark"),
                "{shown}"
            );
        }
    }
}
