//! Producing a batch of events to the user's topic and waiting for the broker's
//! acknowledgement of every record.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::KafkaSinkSpec;
use super::registry::UserRegistry;
use crate::message::{MessageFormat, Renderer, Template};
use crate::sink::{BuildCtx, Delivery, Failure, SendError, Sink};
use crate::{Error, Result};

pub(super) struct KafkaSink {
    producer: FutureProducer,
    topic: String,
    key: Template,
    renderer: Renderer,
    partition: Option<i32>,
    endpoint: String,
    timeout: Duration,
    /// The user's schema registry (avro values re-framed with its ids).
    registry: Option<UserRegistry>,
}

impl KafkaSink {
    pub fn new(
        spec: &KafkaSinkSpec,
        properties: BTreeMap<String, String>,
        format: MessageFormat,
        timeout: Duration,
        registry: Option<UserRegistry>,
        ctx: &BuildCtx<'_>,
    ) -> Result<KafkaSink> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &spec.brokers)
            .set("client.id", format!("tidemark-{}", ctx.subscription))
            // Idempotent: acks=all, no duplicates or reordering from the producer's retries.
            .set("enable.idempotence", "true")
            // The Java client's partitioner for keyed records.
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", timeout.as_millis().to_string());
        for (k, v) in &properties {
            config.set(k, v);
        }
        let producer: FutureProducer = config.create().map_err(|e| {
            Error::invalid(
                "sink.properties",
                format!("the Kafka producer cannot be created: {e}"),
            )
        })?;
        Ok(KafkaSink {
            producer,
            topic: spec.topic.clone(),
            key: Template::parse("sink.key", &spec.key)?,
            renderer: Renderer::new(format, ctx.subscription, ctx.source, ctx.replay),
            partition: spec.partition,
            endpoint: spec.endpoint(),
            timeout,
            registry,
        })
    }

    /// A record's value and headers: the message's attributes, CloudEvents ones named
    /// `ce_<name>` as the CloudEvents Kafka binding has them.
    fn value(&self, d: &Delivery) -> std::result::Result<(Vec<u8>, OwnedHeaders), SendError> {
        let message = self.renderer.one(d)?;
        let mut headers = OwnedHeaders::new_with_capacity(message.attributes.len() + 1);
        for (name, value) in &message.attributes {
            let key = match name.strip_prefix("ce-") {
                Some(rest) => format!("ce_{rest}"),
                None => name.clone(),
            };
            headers = headers.insert(Header {
                key: &key,
                value: Some(value.as_bytes()),
            });
        }
        headers = headers.insert(Header {
            key: "content-type",
            value: Some(message.content_type.as_bytes()),
        });
        Ok((message.body.to_vec(), headers))
    }
}

/// Whether trying the same records again can help.
fn failure_of(e: &KafkaError) -> Failure {
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidMessage,
        ) => Failure::Reject,
        _ => Failure::Retry { retry_after: None },
    }
}

impl Sink for KafkaSink {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn send<'a>(
        &'a self,
        batch: &'a [Arc<Delivery>],
        _attempt: u32,
    ) -> BoxFuture<'a, std::result::Result<(), SendError>> {
        Box::pin(async move {
            let mut pending = Vec::with_capacity(batch.len());
            for d in batch {
                let (mut value, headers) = self.value(d)?;
                if let Some(r) = &self.registry {
                    value = r.reframe(value).await?;
                }
                let key = self.key.render(d.event());
                let mut record = FutureRecord::to(&self.topic)
                    .key(&key)
                    .payload(&value)
                    .headers(headers);
                if let Some(p) = self.partition {
                    record = record.partition(p);
                }
                // Queued in order; a full local queue waits up to the timeout.
                match self.producer.send_result(record) {
                    Ok(delivery) => pending.push(delivery),
                    Err((e, _)) => {
                        return Err(SendError {
                            failure: failure_of(&e),
                            status: None,
                            message: format!("producing to {}: {e}", self.topic),
                        });
                    }
                }
            }
            // Delivered only once the broker acknowledged every record.
            for delivery in pending {
                match tokio::time::timeout(self.timeout + Duration::from_secs(5), delivery).await {
                    Ok(Ok(Ok(_))) => {}
                    Ok(Ok(Err((e, _)))) => {
                        return Err(SendError {
                            failure: failure_of(&e),
                            status: None,
                            message: format!(
                                "the broker did not take a record for {}: {e}",
                                self.topic
                            ),
                        });
                    }
                    Ok(Err(_)) => return Err(SendError::retry("the producer was dropped")),
                    Err(_) => {
                        return Err(SendError::retry(format!(
                            "no acknowledgement from {} within {:?}",
                            self.endpoint, self.timeout
                        )));
                    }
                }
            }
            Ok(())
        })
    }
}
