//! Sending one webhook request: render, sign, POST, classify the answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use http::{HeaderName, HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};

use super::format::{self, Context, Format, Item};
use super::signature::{self, Secret};
use crate::client::HttpClient;
use crate::sink::{Delivery, Failure, SendError, Sink};

/// A webhook endpoint with everything resolved (secrets are values here, never in specs).
#[derive(Clone)]
pub struct WebhookSink {
    pub client: HttpClient,
    pub uri: http::Uri,
    /// `scheme://authority`: the circuit breaker's key and what logs name.
    pub endpoint: String,
    pub format: Format,
    pub secrets: Vec<Secret>,
    pub bearer: Option<HeaderValue>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub timeout: Duration,
    pub subscription: String,
    /// CloudEvents `source` base.
    pub source: String,
    /// Replay job id, when this sink re-delivers for a replay.
    pub replay: Option<String>,
}

/// What the payload formats render of a delivery.
fn item(d: &Delivery) -> Item<'_> {
    Item {
        event: d.event(),
        wire: &d.wire,
        partition: d.partition,
        offset: d.offset,
    }
}

/// `scheme://authority` of a URL.
pub fn endpoint_of(uri: &http::Uri) -> String {
    format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("http"),
        uri.authority().map(|a| a.as_str()).unwrap_or("")
    )
}

/// The `webhook-id` of a request: the event id for one event (the idempotency key receivers
/// deduplicate on); for a batch, the first id and the count, stable across retries.
pub fn message_id(batch: &[Arc<Delivery>]) -> String {
    match batch {
        [one] => one.event().event_id.to_string(),
        _ => format!(
            "{}_{}",
            batch
                .first()
                .map(|d| d.event().event_id)
                .unwrap_or_default(),
            batch.len()
        ),
    }
}

impl WebhookSink {
    fn request(&self, batch: &[Arc<Delivery>]) -> Result<Request<Full<Bytes>>, SendError> {
        // One event (the common case) needs no vector of items.
        let (one, many);
        let items: &[Item] = match batch {
            [d] => {
                one = item(d);
                std::slice::from_ref(&one)
            }
            _ => {
                many = batch.iter().map(|d| item(d)).collect::<Vec<_>>();
                &many
            }
        };
        let ctx = Context {
            subscription: &self.subscription,
            source: &self.source,
            replay: self.replay.as_deref(),
        };
        let payload = format::render(self.format, &ctx, items).map_err(|e| SendError {
            failure: Failure::Reject,
            status: None,
            message: e.to_string(),
        })?;
        let mut req = Request::post(self.uri.clone())
            .header(header::CONTENT_TYPE, payload.content_type)
            .header(header::USER_AGENT, "tidemark-webhooks/1")
            .body(Full::new(payload.body.clone()))
            .expect("a request from a checked URI");
        let h = req.headers_mut();
        for (name, value) in payload.headers {
            h.append(name, value);
        }
        for (name, value) in &self.headers {
            h.append(name, value.clone());
        }
        let id = message_id(batch);
        let now = chrono::Utc::now().timestamp();
        if self.secrets.is_empty() {
            // Unsigned requests still carry the id and time, for deduplication and logs.
            if let Ok(v) = HeaderValue::from_str(&id) {
                h.insert(signature::WEBHOOK_ID, v);
            }
            h.insert(signature::WEBHOOK_TIMESTAMP, HeaderValue::from(now));
        } else {
            let signed =
                signature::sign(&id, now, &payload.body, &self.secrets).map_err(|e| SendError {
                    failure: Failure::Reject,
                    status: None,
                    message: format!("cannot sign the request: {e}"),
                })?;
            for (name, value) in signed {
                h.insert(name, value);
            }
        }
        if let Some(b) = &self.bearer {
            h.insert(header::AUTHORIZATION, b.clone());
        }
        Ok(req)
    }

    /// Send once; the outcome, and the answer's status and the start of its body (for the
    /// invocation records of function sinks).
    pub async fn call(
        &self,
        batch: &[Arc<Delivery>],
    ) -> (Result<(), SendError>, Option<u16>, String) {
        let req = match self.request(batch) {
            Ok(r) => r,
            Err(e) => return (Err(e), None, String::new()),
        };
        let sent = tokio::time::timeout(self.timeout, async {
            let resp = self.client.request(req).await?;
            let status = resp.status();
            let retry_after = retry_after(resp.headers());
            // Read (a bounded part of) the body so the connection goes back to the pool.
            let body = Limited::new(resp.into_body(), 64 << 10).collect().await;
            let excerpt: String = body
                .map(|b| {
                    String::from_utf8_lossy(&b.to_bytes()[..])
                        .chars()
                        .take(1024)
                        .collect()
                })
                .unwrap_or_default();
            Ok::<_, hyper_util::client::legacy::Error>((status, retry_after, excerpt))
        })
        .await;
        match sent {
            Err(_) => (
                Err(SendError::retry(format!(
                    "no response within {} ms",
                    self.timeout.as_millis()
                ))),
                None,
                String::new(),
            ),
            Ok(Err(e)) => (
                Err(SendError::retry(connect_error(&e))),
                None,
                String::new(),
            ),
            Ok(Ok((status, retry_after, excerpt))) => {
                let short: String = excerpt.chars().take(200).collect();
                (
                    classify(status, retry_after, &short),
                    Some(status.as_u16()),
                    excerpt,
                )
            }
        }
    }
}

/// What an HTTP answer means for the events it answered.
pub fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    excerpt: &str,
) -> Result<(), SendError> {
    if status.is_success() {
        return Ok(());
    }
    let failure = match status.as_u16() {
        410 => Failure::Gone,
        408 | 425 | 429 => Failure::Retry { retry_after },
        s if s >= 500 => Failure::Retry { retry_after },
        _ => Failure::Reject,
    };
    let mut message = format!("endpoint answered {status}");
    if !excerpt.trim().is_empty() {
        message.push_str(": ");
        message.push_str(excerpt.trim());
    }
    Err(SendError {
        failure,
        status: Some(status.as_u16() as i32),
        message,
    })
}

/// hyper's error chain, down to the cause a user can act on (refused, guard, DNS).
fn connect_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

/// `Retry-After` in seconds (the HTTP-date form is rare for webhooks and read as absent).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(86_400)))
}

impl Sink for WebhookSink {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn send<'a>(
        &'a self,
        batch: &'a [Arc<Delivery>],
        _attempt: u32,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        async move { self.call(batch).await.0 }.boxed()
    }
}

/// Parse the signing secrets (already resolved from references).
pub fn parse_secrets(values: &[String]) -> Result<Vec<Secret>, String> {
    values
        .iter()
        .map(|v| Secret::parse(v).map_err(|e| e.to_string()))
        .collect()
}
