//! Publishing a batch to JetStream on a pooled connection and waiting for every
//! acknowledgement.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::proto::{Auth, Conn};
use super::{NatsSinkSpec, subject_ok};
use crate::Result;
use crate::client::Outbound;
use crate::message::{MessageFormat, Renderer, Template};
use crate::sink::{BuildCtx, Delivery, Failure, SendError, Sink};
use crate::socket::Pool;

pub(super) struct NatsSink {
    outbound: Outbound,
    host: String,
    port: u16,
    tls: bool,
    auth: Auth,
    subject: Template,
    renderer: Renderer,
    endpoint: String,
    timeout: Duration,
    idle: Pool<Conn>,
}

impl NatsSink {
    pub fn new(
        spec: &NatsSinkSpec,
        auth: Auth,
        format: MessageFormat,
        timeout: Duration,
        ctx: &BuildCtx<'_>,
    ) -> Result<NatsSink> {
        let (host, port, tls) = spec.address()?;
        Ok(NatsSink {
            outbound: ctx.outbound.clone(),
            host,
            port,
            tls,
            auth,
            subject: Template::parse("sink.subject", &spec.subject)?,
            renderer: Renderer::new(format, ctx.subscription, ctx.source, ctx.replay),
            endpoint: spec.endpoint(),
            timeout,
            idle: Pool::default(),
        })
    }

    async fn connection(&self) -> Result<Conn, SendError> {
        if let Some(c) = self.idle.take() {
            return Ok(c);
        }
        Conn::open(&self.outbound, &self.host, self.port, self.tls, &self.auth)
            .await
            .map_err(|e| SendError::retry(format!("{}: {e}", self.endpoint)))
    }

    /// Queue the batch's messages on `conn`; each message's subject, by index.
    fn publish_all(
        &self,
        conn: &mut Conn,
        batch: &[Arc<Delivery>],
    ) -> Result<Vec<String>, SendError> {
        let mut subjects = Vec::with_capacity(batch.len());
        for (i, d) in batch.iter().enumerate() {
            let m = self.renderer.one(d)?;
            let subject = self.subject.render(d.event());
            let refused = |why: String| SendError {
                failure: Failure::Reject,
                status: None,
                message: why,
            };
            if !subject_ok(&subject) {
                return Err(refused(format!(
                    "'{subject}' is not a subject to publish to (an object key with spaces or \
                     empty tokens in sink.subject?)"
                )));
            }
            if m.body.len() > conn.max_payload {
                return Err(refused(format!(
                    "a message of {} bytes is over the server's max_payload of {}",
                    m.body.len(),
                    conn.max_payload
                )));
            }
            // A replay re-delivers on purpose: an id of its own, so it is not dropped as a
            // duplicate of the live delivery.
            let msg_id = match self.renderer.replay() {
                Some(job) => format!("{}.{job}", d.event().event_id),
                None => d.event().event_id.to_string(),
            };
            let mut headers: Vec<(&str, &str)> =
                vec![("Nats-Msg-Id", &msg_id), ("Content-Type", m.content_type)];
            for (name, value) in &m.attributes {
                headers.push((name, value));
            }
            let reply = format!("{}.{i}", conn.inbox);
            conn.publish(&subject, &reply, &headers, &m.body);
            subjects.push(subject);
        }
        Ok(subjects)
    }

    async fn send_on(&self, conn: &mut Conn, batch: &[Arc<Delivery>]) -> Result<(), SendError> {
        let subjects = self.publish_all(conn, batch)?;
        conn.flush()
            .await
            .map_err(|e| SendError::retry(format!("writing to {}: {e}", self.endpoint)))?;
        let mut waiting = batch.len();
        let mut acked = vec![false; batch.len()];
        let mut first_error = None;
        while waiting > 0 {
            let reply = conn
                .next()
                .await
                .map_err(|e| SendError::retry(format!("{}: {e}", self.endpoint)))?;
            let index: Option<usize> = reply
                .subject
                .strip_prefix(&conn.inbox)
                .and_then(|s| s.strip_prefix('.'))
                .and_then(|n| n.parse().ok());
            let Some(i) = index.filter(|i| *i < acked.len() && !acked[*i]) else {
                continue;
            };
            acked[i] = true;
            waiting -= 1;
            let problem = if reply.status == Some(503) {
                Some(format!(
                    "no JetStream stream takes subject '{}' (create one whose subjects match it)",
                    subjects[i]
                ))
            } else if let Some(status) = reply.status.filter(|s| *s >= 300) {
                Some(format!("the server answered status {status}"))
            } else {
                let v: serde_json::Value =
                    serde_json::from_slice(&reply.payload).unwrap_or_default();
                if let Some(e) = v.get("error") {
                    Some(format!(
                        "JetStream refused the message: {}",
                        e["description"].as_str().unwrap_or("an error")
                    ))
                } else if v.get("stream").is_none() {
                    Some("an acknowledgement without a stream (is the subject a stream's?)".into())
                } else {
                    None
                }
            };
            if let Some(p) = problem {
                first_error.get_or_insert(p);
            }
        }
        match first_error {
            None => Ok(()),
            // Settings or the server's state (no stream, a full stream): retried, so status
            // shows it and nothing is lost once it is fixed; JetStream drops the re-sent
            // messages it already stored by their ids.
            Some(e) => Err(SendError::retry(e)),
        }
    }
}

impl Sink for NatsSink {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn send<'a>(
        &'a self,
        batch: &'a [Arc<Delivery>],
        _attempt: u32,
    ) -> BoxFuture<'a, std::result::Result<(), SendError>> {
        Box::pin(async move {
            let work = async {
                let mut conn = self.connection().await?;
                self.send_on(&mut conn, batch).await?;
                Ok::<_, SendError>(conn)
            };
            // A connection whose batch failed or timed out is dropped, not reused: replies
            // still on their way would be read as the next batch's.
            let conn = tokio::time::timeout(self.timeout, work)
                .await
                .map_err(|_| {
                    SendError::retry(format!(
                        "no acknowledgement from {} within {:?}",
                        self.endpoint, self.timeout
                    ))
                })??;
            self.idle.put(conn);
            Ok(())
        })
    }
}
