//! Command-line settings shared by `serve` and the commands that read a node's data: where
//! the data directory is, and where the log is (embedded segments or Kafka, with its TLS and
//! SASL settings). The CLI layers a config file and `TIDEMARK_*` variables onto them.

use std::path::PathBuf;
use std::time::Duration;

use tidemark_core::log::embedded::{FsyncPolicy, LogConfig};
use tidemark_core::log::kafka::{KafkaConfig, SaslMechanism, Secret, Security, SecurityProtocol};

use crate::node::LogChoice;

/// `--data-dir` and `--config`, shared by every command that works on a node's data.
#[derive(clap::Args, Clone)]
pub struct DataDir {
    /// Data directory of a Tidemark node.
    #[arg(long, default_value = "./tidemark-data")]
    pub data_dir: PathBuf,
    /// TOML file with settings (keys are the long flags' names with `_`, docs/CONFIG.md);
    /// flags override it, and `TIDEMARK_*` environment variables override both.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Where the log is: shared by `serve` and the commands that read the log.
#[derive(clap::Args, Clone)]
pub struct LogArgs {
    /// An external Confluent-compatible schema registry (`http://host:8081`) instead of the
    /// built-in one; the node's own registry paths then point there.
    #[arg(long, value_name = "URL")]
    pub schema_registry: Option<String>,
    /// `embedded` (segment files under --data-dir) or `kafka` (topics on --kafka-brokers).
    #[arg(long = "log", value_enum, default_value_t = Backend::Embedded)]
    pub backend: Backend,
    /// Kafka bootstrap servers, `host:port[,host:port...]` (with --log kafka).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Replication factor of the topics Tidemark creates on Kafka.
    #[arg(long, default_value_t = 1)]
    pub kafka_replication_factor: i32,
    /// Producer `linger.ms`: how long to wait to fill a batch.
    #[arg(long, default_value_t = 5)]
    pub kafka_linger_ms: u32,
    /// Producer `batch.size` in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub kafka_batch_size: u32,
    /// After this long without a delivery report an append fails and the mutation gets a 503.
    #[arg(long, default_value_t = 30_000)]
    pub kafka_delivery_timeout_ms: u32,
    /// How long metadata, offset and admin requests may take (and connecting at start).
    #[arg(long, default_value_t = 10_000)]
    pub kafka_request_timeout_ms: u32,
    /// How soon the partitions of a node that stopped answering move to the others.
    #[arg(long, default_value_t = 10_000)]
    pub kafka_session_timeout_ms: u32,
    /// Static group membership (`group.instance.id`, kept in the data directory): a restarted
    /// node takes its partitions back at once instead of after its old session times out.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub kafka_static_membership: bool,
    /// `PLAINTEXT` (the default), `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`.
    #[arg(long, value_name = "PROTOCOL")]
    pub kafka_security_protocol: Option<SecurityProtocol>,
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER` (with a SASL protocol).
    #[arg(long, value_name = "MECHANISM")]
    pub kafka_sasl_mechanism: Option<SaslMechanism>,
    /// The SASL user (PLAIN, SCRAM).
    #[arg(long, value_name = "NAME")]
    pub kafka_sasl_username: Option<String>,
    /// The SASL password: a value, `env:NAME` or `file:PATH` (read at start; prefer these, a
    /// value on the command line is visible to other local users).
    #[arg(long, value_name = "SECRET")]
    pub kafka_sasl_password: Option<Secret>,
    /// PEM file (or directory) of the CA certificates that signed the brokers' certificates;
    /// the system's CAs when not set (SSL, SASL_SSL).
    #[arg(long, value_name = "FILE")]
    pub kafka_ssl_ca_file: Option<PathBuf>,
    /// This client's certificate (PEM), for brokers that require one (SSL, SASL_SSL).
    #[arg(long, value_name = "FILE")]
    pub kafka_ssl_cert_file: Option<PathBuf>,
    /// The private key (PEM) of --kafka-ssl-cert-file.
    #[arg(long, value_name = "FILE")]
    pub kafka_ssl_key_file: Option<PathBuf>,
    /// The password of an encrypted --kafka-ssl-key-file: a value, `env:NAME` or `file:PATH`.
    #[arg(long, value_name = "SECRET")]
    pub kafka_ssl_key_password: Option<Secret>,
    /// An extra librdkafka property, `key=value` (repeatable), e.g. `compression.type=lz4`;
    /// it wins over the flags above.
    #[arg(long = "kafka-property", value_parser = parse_property)]
    pub kafka_properties: Vec<(String, String)>,
    /// Embedded log: when to fsync. `always`: an acknowledged mutation survives power loss;
    /// `interval`: it survives a crash of the process, fsync every --fsync-interval-ms.
    #[arg(long, value_enum, default_value_t = Fsync::Always)]
    pub fsync: Fsync,
    /// Embedded log, `--fsync interval`: milliseconds between fsyncs.
    #[arg(long, default_value_t = 100)]
    pub fsync_interval_ms: u64,
    /// Embedded log: roll segments at this size.
    #[arg(long, default_value_t = 128 << 20)]
    pub segment_bytes: u64,
    /// Embedded log: how often segments past the retention (--retention-ms) are deleted.
    #[arg(long, default_value_t = 60_000)]
    pub retention_check_ms: u64,
    /// Embedded log: how often the compacted topics (`_config`, dead letters) drop records a
    /// newer one for the same key replaced, reclaiming their disk space.
    #[arg(long, default_value_t = 600_000)]
    pub compaction_check_ms: u64,
    /// Embedded log: how long a deleted catalog entity's tombstone stays in `_config`, so a
    /// node that was behind still sees the delete (Kafka's `delete.retention.ms`).
    #[arg(long, default_value_t = 86_400_000)]
    pub tombstone_retention_ms: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Embedded,
    Kafka,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fsync {
    Always,
    Interval,
}

pub fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("'{s}' is not key=value"))
}

impl LogArgs {
    pub fn choice(&self) -> LogChoice {
        match self.backend {
            Backend::Embedded => LogChoice::Embedded(LogConfig {
                fsync: match self.fsync {
                    Fsync::Always => FsyncPolicy::Always,
                    Fsync::Interval => {
                        FsyncPolicy::Interval(Duration::from_millis(self.fsync_interval_ms))
                    }
                },
                segment_bytes: self.segment_bytes,
                retention_check: Duration::from_millis(self.retention_check_ms.max(1)),
                compaction_check: Duration::from_millis(self.compaction_check_ms.max(1)),
                tombstone_retention: Duration::from_millis(self.tombstone_retention_ms),
                ..LogConfig::default()
            }),
            Backend::Kafka => LogChoice::Kafka(KafkaConfig {
                brokers: self.kafka_brokers.clone(),
                replication_factor: self.kafka_replication_factor,
                linger_ms: self.kafka_linger_ms,
                batch_size: self.kafka_batch_size,
                delivery_timeout_ms: self.kafka_delivery_timeout_ms,
                request_timeout_ms: self.kafka_request_timeout_ms,
                session_timeout_ms: self.kafka_session_timeout_ms,
                instance_id: None,
                security: self.kafka_security(),
                properties: self.kafka_properties.iter().cloned().collect(),
            }),
        }
    }

    /// The named TLS and SASL settings (checked, and secrets resolved, when the log connects).
    fn kafka_security(&self) -> Security {
        Security {
            protocol: self.kafka_security_protocol,
            sasl_mechanism: self.kafka_sasl_mechanism,
            sasl_username: self.kafka_sasl_username.clone(),
            sasl_password: self.kafka_sasl_password.clone(),
            ssl_ca_file: self.kafka_ssl_ca_file.clone(),
            ssl_cert_file: self.kafka_ssl_cert_file.clone(),
            ssl_key_file: self.kafka_ssl_key_file.clone(),
            ssl_key_password: self.kafka_ssl_key_password.clone(),
        }
    }
}
