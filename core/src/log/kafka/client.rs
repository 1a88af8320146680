//! Making librdkafka clients. Every client of one log (the producer, the admin client, the
//! metadata, reader and group consumers) gets the same settings: brokers and timeouts, the
//! security settings with their secrets resolved, then the client's own, then the operator's
//! `--kafka-property` values, which win. And the same [`Context`], so whichever client meets
//! a broker's refusal, the log's errors can name it.
//!
//! Also here: waiting for the cluster at start, which ends early on a refusal.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::{FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, ClientContext};

use super::KafkaConfig;
use super::broker_errors::{BrokerError, BrokerErrors, Context};
use super::security::{PROPERTY_FLAGS, is_secret_property};
use crate::{Error, Result};

pub(super) type Producer = FutureProducer<Context>;
pub(super) type Consumer = BaseConsumer<Context>;

#[derive(Clone)]
pub(super) struct Clients {
    /// The shared settings, secrets resolved: never printed.
    shared: Vec<(&'static str, String)>,
    /// The operator's extra properties, applied last.
    properties: BTreeMap<String, String>,
    context: Context,
}

impl Clients {
    /// Check the settings, resolve the secrets (once: a file changed later is not read again).
    pub fn new(config: &KafkaConfig) -> Result<Clients> {
        config.security.validate(&config.properties)?;
        let resolved = config.security.resolve()?;
        warn_overridden(&resolved.properties, &config.properties);
        let mut shared = vec![
            ("bootstrap.servers", config.brokers.clone()),
            ("client.id", "tidemark".to_string()),
            (
                "socket.timeout.ms",
                config.request_timeout_ms.max(1000).to_string(),
            ),
            // Messages name the broker already; the thread name would say it twice.
            ("log.thread.name", "false".to_string()),
        ];
        shared.extend(resolved.properties);
        let mut secrets = resolved.secrets;
        secrets.extend(
            config
                .properties
                .iter()
                .filter(|(k, _)| is_secret_property(k))
                .map(|(_, v)| v.clone()),
        );
        Ok(Clients {
            shared,
            properties: config.properties.clone(),
            context: Context {
                errors: BrokerErrors::new(secrets),
            },
        })
    }

    pub fn errors(&self) -> &Arc<BrokerErrors> {
        &self.context.errors
    }

    /// The shared settings, then the client's own, then the operator's properties.
    pub fn config(&self, own: impl FnOnce(&mut ClientConfig)) -> ClientConfig {
        let mut c = ClientConfig::new();
        // librdkafka reports some connection failures at info ("Disconnected" from a listener
        // that expects TLS); the context keeps them, and logs other info lines at debug.
        c.set_log_level(RDKafkaLogLevel::Info);
        for (k, v) in &self.shared {
            c.set(*k, v);
        }
        own(&mut c);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// Start a client (`what`: "producer", "admin client", ...) with the shared context.
    pub fn create<T: FromClientConfigAndContext<Context>>(
        &self,
        what: &str,
        config: &ClientConfig,
    ) -> Result<T> {
        self.create_with(what, config, self.context.clone())
    }

    /// Start a client with a context of its own (one that forwards to [`Self::errors`]).
    pub fn create_with<C: ClientContext, T: FromClientConfigAndContext<C>>(
        &self,
        what: &str,
        config: &ClientConfig,
        context: C,
    ) -> Result<T> {
        config
            .create_with_context(context)
            .map_err(|e| self.creation_error(what, &e))
    }

    /// librdkafka refuses settings by property name (`ssl.ca.location failed: ...`); the hint
    /// names the flag.
    fn creation_error(&self, what: &str, e: &KafkaError) -> Error {
        let message = self.context.errors.scrub(&e.to_string());
        let hint = match PROPERTY_FLAGS.iter().find(|(p, _)| message.contains(p)) {
            // A key librdkafka cannot load may be encrypted with another password.
            Some(("ssl.key.location", flag)) => {
                format!("; check {flag} and --kafka-ssl-key-password")
            }
            Some((_, flag)) => format!("; check {flag}"),
            None => String::new(),
        };
        Error::BadInput(format!("cannot start the Kafka {what}: {message}{hint}"))
    }
}

/// `--kafka-property` wins over a flag; say so, since the flag then does nothing.
fn warn_overridden(named: &[(&str, String)], properties: &BTreeMap<String, String>) {
    for (property, flag) in PROPERTY_FLAGS {
        let is_named = named.iter().any(|(k, _)| *k == property);
        if is_named && properties.contains_key(property) {
            tracing::warn!("--kafka-property {property} overrides {flag}");
        }
    }
}

/// Wait until a broker answers a metadata request: at most the request timeout, less when a
/// broker refuses us (TLS, SASL), since the same settings will be refused again.
pub(super) fn wait_for_cluster(
    clients: &Clients,
    meta: &Consumer,
    config: &KafkaConfig,
    start: Instant,
) -> Result<()> {
    let deadline = start + config.request_timeout();
    loop {
        let attempt_start = Instant::now();
        let attempt = deadline
            .saturating_duration_since(attempt_start)
            .min(Duration::from_millis(500));
        let result = meta.fetch_metadata(None, attempt);
        drain_events(meta);
        let error = match result {
            Ok(_) => {
                clients.errors().answered();
                return Ok(());
            }
            Err(e) => e,
        };
        let reported = clients.errors().since(start);
        if reported.as_ref().is_some_and(|r| r.cause.is_refusal()) || Instant::now() >= deadline {
            return Err(unreachable(config, reported, &error));
        }
        // An attempt can fail at once (no broker up): do not spin.
        let pause = Duration::from_millis(100).saturating_sub(attempt_start.elapsed());
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
    }
}

fn unreachable(config: &KafkaConfig, reported: Option<BrokerError>, error: &KafkaError) -> Error {
    Error::Unavailable(match reported {
        Some(r) => format!(
            "cannot reach the Kafka brokers at {}: {}; {}",
            config.brokers,
            r.message,
            r.cause.hint()
        ),
        None => format!(
            "cannot reach the Kafka brokers at {} ({error}); check --kafka-brokers and that the \
             cluster is up",
            config.brokers
        ),
    })
}

/// Serve a consumer's queued events (librdkafka's logs and errors go to its queue), so its
/// context records them. For consumers that are not otherwise polled.
pub(super) fn drain_events(consumer: &Consumer) {
    // Bounded: events queue up while we serve them.
    for _ in 0..1000 {
        if consumer.poll(Duration::ZERO).is_none() {
            return;
        }
    }
}
