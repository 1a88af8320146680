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
use tidemark_core::event::ObjectEvent;

use super::{KafkaSinkSpec, ValueFormat};
use crate::sink::{BuildCtx, Delivery, Failure, SendError, Sink};
use crate::webhook::format::{self, Context, Item};
use crate::{Error, Result};

/// A record key template: literal text and `{field}` placeholders.
#[derive(Debug, Clone)]
pub(super) struct KeyTemplate(Vec<Piece>);

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Bucket,
    Key,
    EventType,
    VersionId,
}

impl KeyTemplate {
    pub fn parse(text: &str) -> Result<KeyTemplate> {
        let bad = |m: String| Error::invalid("sink.key", m);
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| bad(format!("'{text}': an unclosed '{{'")))?;
            let name = &rest[open + 1..open + close];
            pieces.push(match name {
                "bucket" => Piece::Bucket,
                "key" => Piece::Key,
                "event_type" => Piece::EventType,
                "version_id" => Piece::VersionId,
                other => {
                    return Err(bad(format!(
                        "'{{{other}}}' is not a field; use {}",
                        super::PLACEHOLDERS
                            .iter()
                            .map(|p| format!("{{{p}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        if pieces.is_empty() {
            return Err(bad(
                "is empty: records need a key for per-object order".into()
            ));
        }
        Ok(KeyTemplate(pieces))
    }

    fn render(&self, e: &ObjectEvent) -> String {
        let mut out = String::with_capacity(e.bucket.len() + e.key.len() + 8);
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Bucket => out.push_str(&e.bucket),
                Piece::Key => out.push_str(&e.key),
                Piece::EventType => out.push_str(e.event_type.as_str()),
                Piece::VersionId => out.push_str(e.version_id.as_deref().unwrap_or("")),
            }
        }
        out
    }
}

pub(super) struct KafkaSink {
    producer: FutureProducer,
    topic: String,
    key: KeyTemplate,
    format: ValueFormat,
    partition: Option<i32>,
    endpoint: String,
    timeout: Duration,
    subscription: String,
    source: String,
    replay: Option<String>,
}

impl KafkaSink {
    pub fn new(
        spec: &KafkaSinkSpec,
        properties: BTreeMap<String, String>,
        format: ValueFormat,
        timeout: Duration,
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
            key: KeyTemplate::parse(&spec.key)?,
            format,
            partition: spec.partition,
            endpoint: spec.endpoint(),
            timeout,
            subscription: ctx.subscription.to_string(),
            source: ctx.source.to_string(),
            replay: ctx.replay.map(str::to_string),
        })
    }

    /// A record's value and headers.
    fn value(&self, d: &Delivery) -> std::result::Result<(Vec<u8>, OwnedHeaders), SendError> {
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "tidemark_event_id",
                value: Some(d.event.event_id.to_string().as_bytes()),
            })
            .insert(Header {
                key: "tidemark_event_type",
                value: Some(d.event.event_type.as_str().as_bytes()),
            });
        if let Some(job) = &self.replay {
            headers = headers.insert(Header {
                key: "tidemark_replay",
                value: Some(job.as_bytes()),
            });
        }
        let format = match self.format {
            ValueFormat::Json => {
                let body = serde_json::to_vec(&d.event.to_json()).expect("JSON values serialize");
                return Ok((body, headers));
            }
            ValueFormat::Rendered(f) => f,
        };
        let ctx = Context {
            subscription: &self.subscription,
            source: &self.source,
            replay: self.replay.as_deref(),
        };
        let item = Item {
            event: &d.event,
            wire: &d.wire,
            partition: d.partition,
            offset: d.offset,
        };
        let payload = format::render(format, &ctx, &[item]).map_err(|e| SendError {
            failure: Failure::Reject,
            status: None,
            message: e.to_string(),
        })?;
        headers = headers.insert(Header {
            key: "content-type",
            value: Some(payload.content_type.as_bytes()),
        });
        // CloudEvents' Kafka binding names attributes `ce_<name>`.
        for (name, value) in &payload.headers {
            let key = name.as_str().replacen("ce-", "ce_", 1);
            headers = headers.insert(Header {
                key: &key,
                value: Some(value.as_bytes()),
            });
        }
        Ok((payload.body.to_vec(), headers))
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
                let (value, headers) = self.value(d)?;
                let key = self.key.render(&d.event);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_templates_render_the_event_fields() {
        let mut e = tidemark_core::event::sample_event(3);
        e.bucket = "photos".into();
        e.key = "a/b.jpg".into();
        e.version_id = None;
        let t = KeyTemplate::parse("{bucket}/{key}").unwrap();
        assert_eq!(t.render(&e), "photos/a/b.jpg");
        let t = KeyTemplate::parse("x-{event_type}:{version_id}").unwrap();
        assert_eq!(t.render(&e), format!("x-{}:", e.event_type.as_str()));
        for bad in ["", "{bucket", "{size}"] {
            assert!(KeyTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
