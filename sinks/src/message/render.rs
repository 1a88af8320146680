//! One event as one message: the body in the subscription's format, its content type, and
//! the attributes every queue sink carries beside it (event id and type, the replay job, and
//! CloudEvents attributes in binary mode).

use bytes::Bytes;
use tidemark_core::event::ObjectEvent;

use crate::sink::{Delivery, Failure, SendError};
use crate::webhook::format::{self, CONTENT_TYPE_JSON, Context, Format, Item};
use crate::{Error, Result};

/// What a message's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageFormat {
    /// The event as `log tail --json` prints it.
    Json,
    /// One of the webhook's renderings (`s3`, `cloudevents-*`, `avro`).
    Rendered(Format),
}

impl MessageFormat {
    /// Parse `text` for `field`, among the formats a destination can carry (`allowed`, by
    /// name: `json`, `s3`, `avro`, `cloudevents-structured`, `cloudevents-binary`).
    pub fn parse(field: &str, text: &str, allowed: &[&str]) -> Result<MessageFormat> {
        let format = match text {
            "json" => Some(MessageFormat::Json),
            "s3" => Some(MessageFormat::Rendered(Format::S3)),
            "avro" => Some(MessageFormat::Rendered(Format::Avro)),
            "cloudevents-structured" => {
                Some(MessageFormat::Rendered(Format::CloudeventsStructured))
            }
            "cloudevents-binary" => Some(MessageFormat::Rendered(Format::CloudeventsBinary)),
            _ => None,
        };
        match format {
            Some(f) if allowed.contains(&text) => Ok(f),
            _ => Err(Error::invalid(
                field,
                format!(
                    "'{text}' is not a format this sink carries; use {}",
                    allowed.join(", ")
                ),
            )),
        }
    }
}

/// A rendered message.
#[derive(Debug, Clone)]
pub struct Message {
    pub body: Bytes,
    pub content_type: &'static str,
    /// `tidemark_event_id`, `tidemark_event_type`, `tidemark_replay` (on re-deliveries), then
    /// the format's own attributes (`ce-*` in CloudEvents binary mode), in that order.
    pub attributes: Vec<(String, String)>,
}

/// Renders a subscription's events in its format.
#[derive(Debug, Clone)]
pub struct Renderer {
    format: MessageFormat,
    subscription: String,
    source: String,
    replay: Option<String>,
}

impl Renderer {
    pub fn new(
        format: MessageFormat,
        subscription: &str,
        source: &str,
        replay: Option<&str>,
    ) -> Renderer {
        Renderer {
            format,
            subscription: subscription.to_string(),
            source: source.to_string(),
            replay: replay.map(str::to_string),
        }
    }

    /// The replay job being re-delivered for, if any.
    pub fn replay(&self) -> Option<&str> {
        self.replay.as_deref()
    }

    /// `d` as one message.
    pub fn one(&self, d: &Delivery) -> Result<Message, SendError> {
        let mut attributes = self.attributes(d.event());
        let (body, content_type) = match self.format {
            MessageFormat::Json => (
                Bytes::from(
                    serde_json::to_vec(&d.event().to_json()).expect("JSON values serialize"),
                ),
                CONTENT_TYPE_JSON,
            ),
            MessageFormat::Rendered(f) => {
                let payload = self.render(f, vec![item(d)])?;
                for (name, value) in &payload.headers {
                    attributes.push((
                        name.as_str().to_string(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    ));
                }
                (payload.body, payload.content_type)
            }
        };
        Ok(Message {
            body,
            content_type,
            attributes,
        })
    }

    /// `batch` as one payload (S3 `Records`, a CloudEvents batch), for destinations that take
    /// several events per call (lambda); the JSON format is an array of events.
    pub fn many(&self, batch: &[std::sync::Arc<Delivery>]) -> Result<Message, SendError> {
        let (body, content_type) = match self.format {
            MessageFormat::Json => {
                let all: Vec<_> = batch.iter().map(|d| d.event().to_json()).collect();
                (
                    Bytes::from(serde_json::to_vec(&all).expect("JSON values serialize")),
                    CONTENT_TYPE_JSON,
                )
            }
            MessageFormat::Rendered(f) => {
                let payload = self.render(f, batch.iter().map(|d| item(d)).collect())?;
                (payload.body, payload.content_type)
            }
        };
        Ok(Message {
            body,
            content_type,
            attributes: Vec::new(),
        })
    }

    fn attributes(&self, e: &ObjectEvent) -> Vec<(String, String)> {
        let mut a = vec![
            ("tidemark_event_id".to_string(), e.event_id.to_string()),
            (
                "tidemark_event_type".to_string(),
                e.event_type.as_str().to_string(),
            ),
        ];
        if let Some(job) = &self.replay {
            a.push(("tidemark_replay".to_string(), job.clone()));
        }
        a
    }

    fn context(&self) -> Context<'_> {
        Context {
            subscription: &self.subscription,
            source: &self.source,
            replay: self.replay.as_deref(),
        }
    }

    fn render(&self, f: Format, items: Vec<Item<'_>>) -> Result<format::Payload, SendError> {
        format::render(f, &self.context(), &items).map_err(rejected)
    }
}

fn item(d: &Delivery) -> Item<'_> {
    Item {
        event: d.event(),
        wire: &d.wire,
        partition: d.partition,
        offset: d.offset,
    }
}

/// An event the format cannot carry: sending it again cannot help.
fn rejected(e: format::FormatError) -> SendError {
    SendError {
        failure: Failure::Reject,
        status: None,
        message: e.to_string(),
    }
}
