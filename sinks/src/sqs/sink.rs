//! Sending a batch as `SendMessageBatch` requests (SQS's JSON protocol) of up to ten entries,
//! and entries that failed on the service's side again on their own.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http::Uri;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::SqsSinkSpec;
use crate::Result;
use crate::aws::AwsClient;
use crate::message::{MessageFormat, Renderer, Template};
use crate::sink::{BuildCtx, Delivery, Failure, SendError, Sink};

/// SQS's limits of one `SendMessageBatch`.
const MAX_ENTRIES: usize = 10;
const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// How often entries the service failed on its side are sent again within one attempt.
const ENTRY_RETRIES: u32 = 3;

/// Error codes that mean the messages themselves were refused.
const REJECTED: &[&str] = &[
    "BatchRequestTooLong",
    "InvalidMessageContents",
    "InvalidBatchEntryId",
    "TooManyEntriesInBatchRequest",
    "InvalidParameterValue",
];

pub(super) struct SqsSink {
    client: AwsClient,
    url: Uri,
    queue_url: String,
    fifo: bool,
    group: Template,
    renderer: Renderer,
}

/// One message, ready to send.
struct Entry {
    body: String,
    attributes: Value,
    group: Option<String>,
    dedupe: Option<String>,
    size: usize,
}

impl SqsSink {
    pub fn new(
        spec: &SqsSinkSpec,
        client: AwsClient,
        format: MessageFormat,
        ctx: &BuildCtx<'_>,
    ) -> Result<SqsSink> {
        Ok(SqsSink {
            client,
            url: spec.service_url()?,
            queue_url: spec.queue_url.clone(),
            fifo: spec.is_fifo(),
            group: Template::parse("sink.message_group", &spec.message_group)?,
            renderer: Renderer::new(format, ctx.subscription, ctx.source, ctx.replay),
        })
    }

    fn entry(&self, d: &Delivery) -> Result<Entry, SendError> {
        let message = self.renderer.one(d)?;
        let body = String::from_utf8(message.body.to_vec()).map_err(|_| SendError {
            failure: Failure::Reject,
            status: None,
            message: "an SQS message body must be text".into(),
        })?;
        let mut attributes = serde_json::Map::new();
        let mut size = body.len();
        let e = d.event();
        let fields = message
            .attributes
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .chain([
                ("tidemark_bucket", e.bucket.as_str()),
                ("tidemark_key", e.key.as_str()),
            ]);
        for (name, value) in fields {
            size += name.len() + value.len() + 6;
            attributes.insert(
                name.to_string(),
                json!({"DataType": "String", "StringValue": value}),
            );
        }
        let (group, dedupe) = if self.fifo {
            let dedupe = match self.renderer.replay() {
                // A replay re-delivers on purpose: not a duplicate of the live delivery.
                Some(job) => format!("{}.{job}", e.event_id),
                None => e.event_id.to_string(),
            };
            (Some(fifo_id(&self.group.render(e))), Some(fifo_id(&dedupe)))
        } else {
            (None, None)
        };
        Ok(Entry {
            body,
            attributes: Value::Object(attributes),
            group,
            dedupe,
            size,
        })
    }

    /// Send `entries` (one request); the indexes (into `entries`) that failed on the service's
    /// side, or the attempt's error.
    async fn send_batch(&self, entries: &[&Entry]) -> Result<Vec<usize>, SendError> {
        let list: Vec<Value> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let mut v = json!({
                    "Id": i.to_string(),
                    "MessageBody": e.body,
                    "MessageAttributes": e.attributes,
                });
                if let Some(g) = &e.group {
                    v["MessageGroupId"] = json!(g);
                }
                if let Some(d) = &e.dedupe {
                    v["MessageDeduplicationId"] = json!(d);
                }
                v
            })
            .collect();
        let body = serde_json::to_vec(&json!({"QueueUrl": self.queue_url, "Entries": list}))
            .expect("JSON values serialize");
        let headers = vec![
            (
                "content-type".to_string(),
                "application/x-amz-json-1.0".to_string(),
            ),
            (
                "x-amz-target".to_string(),
                "AmazonSQS.SendMessageBatch".to_string(),
            ),
        ];
        let answer = self.client.post(&self.url, headers, body.into()).await?;
        if !answer.status.is_success() {
            return Err(answer.failed("SQS", REJECTED));
        }
        let v: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| SendError::retry(format!("SQS answered with no JSON: {e}")))?;
        let mut failed = Vec::new();
        let mut refused = Vec::new();
        for f in v["Failed"].as_array().into_iter().flatten() {
            let i: usize = f["Id"].as_str().and_then(|i| i.parse().ok()).unwrap_or(0);
            if f["SenderFault"].as_bool() == Some(true) {
                refused.push(format!(
                    "{}: {}",
                    f["Code"].as_str().unwrap_or(""),
                    f["Message"].as_str().unwrap_or("")
                ));
            } else {
                failed.push(i);
            }
        }
        if !refused.is_empty() {
            return Err(SendError {
                failure: Failure::Reject,
                status: None,
                message: format!(
                    "SQS refused {} of {} messages: {}",
                    refused.len(),
                    entries.len(),
                    refused.join("; ")
                ),
            });
        }
        Ok(failed)
    }

    /// Send `entries` in one request, then what failed on the service's side again on its
    /// own, a few times.
    async fn send_chunk(&self, entries: &[Entry]) -> Result<(), SendError> {
        let mut pending: Vec<&Entry> = entries.iter().collect();
        for round in 0..=ENTRY_RETRIES {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(100 << round)).await;
            }
            let failed = self.send_batch(&pending).await?;
            if failed.is_empty() {
                return Ok(());
            }
            pending = failed
                .into_iter()
                .filter_map(|i| pending.get(i).copied())
                .collect();
        }
        Err(SendError::retry(format!(
            "SQS kept failing {} messages on its side",
            pending.len()
        )))
    }
}

/// A FIFO message group or deduplication id: at most 128 characters of ASCII punctuation and
/// alphanumerics; text that does not fit is replaced by its SHA-256 (the same id for the same
/// text, so per-group order holds).
fn fifo_id(text: &str) -> String {
    if !text.is_empty() && text.len() <= 128 && text.bytes().all(|b| (33..=126).contains(&b)) {
        return text.to_string();
    }
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256-{hex}")
}

impl Sink for SqsSink {
    fn endpoint(&self) -> &str {
        &self.queue_url
    }

    fn send<'a>(
        &'a self,
        batch: &'a [Arc<Delivery>],
        _attempt: u32,
    ) -> BoxFuture<'a, std::result::Result<(), SendError>> {
        Box::pin(async move {
            let entries = batch
                .iter()
                .map(|d| self.entry(d))
                .collect::<Result<Vec<_>, _>>()?;
            // In order, requests of up to ten entries within the request size limit.
            let mut start = 0;
            while start < entries.len() {
                let mut end = start;
                let mut bytes = 0;
                while end < entries.len()
                    && end - start < MAX_ENTRIES
                    && (end == start || bytes + entries[end].size <= MAX_REQUEST_BYTES)
                {
                    bytes += entries[end].size;
                    end += 1;
                }
                self.send_chunk(&entries[start..end]).await?;
                start = end;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn group_ids_fit_the_fifo_limits() {
        assert_eq!(super::fifo_id("photos/a.jpg"), "photos/a.jpg");
        let long = super::fifo_id(&"k".repeat(200));
        assert!(long.starts_with("sha256-") && long.len() <= 128, "{long}");
        let spaced = super::fifo_id("photos/a b.jpg");
        assert_eq!(spaced, super::fifo_id("photos/a b.jpg"));
        assert_ne!(spaced, super::fifo_id("photos/a c.jpg"));
    }
}
