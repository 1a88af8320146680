//! Settings of the Kafka log backend.

use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// Extra librdkafka properties (`security.protocol`, `sasl.*`, `compression.type`, ...),
    /// applied to every client.
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
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.request_timeout_ms))
    }

    /// A librdkafka client configuration with the shared settings.
    pub(super) fn client(&self) -> rdkafka::ClientConfig {
        self.client_with(|_| {})
    }

    /// The shared settings, then the client's own, then the user's `properties`, which win.
    pub(super) fn client_with(
        &self,
        own: impl FnOnce(&mut rdkafka::ClientConfig),
    ) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", "tidemark")
            .set(
                "socket.timeout.ms",
                self.request_timeout_ms.max(1000).to_string(),
            );
        own(&mut c);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}
