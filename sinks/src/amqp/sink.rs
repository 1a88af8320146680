//! Publishing a batch on a pooled connection and waiting until the broker confirmed every
//! message of it.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::conn::{Confirm, Conn, Login, Properties};
use super::{Address, AmqpSinkSpec};
use crate::Result;
use crate::client::Outbound;
use crate::message::{MessageFormat, Renderer, Template};
use crate::sink::{BuildCtx, Delivery, SendError, Sink};
use crate::socket::Pool;

pub(super) struct AmqpSink {
    outbound: Outbound,
    address: Address,
    username: String,
    password: String,
    exchange: String,
    routing_key: Template,
    renderer: Renderer,
    endpoint: String,
    timeout: Duration,
    idle: Pool<Conn>,
}

impl AmqpSink {
    pub fn new(
        spec: &AmqpSinkSpec,
        password: String,
        format: MessageFormat,
        timeout: Duration,
        ctx: &BuildCtx<'_>,
    ) -> Result<AmqpSink> {
        Ok(AmqpSink {
            outbound: ctx.outbound.clone(),
            address: spec.address()?,
            username: spec.username.clone(),
            password,
            exchange: spec.exchange.clone(),
            routing_key: Template::parse("sink.routing_key", &spec.routing_key)?,
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
        let a = &self.address;
        let login = Login {
            host: &a.host,
            port: a.port,
            tls: a.tls,
            vhost: &a.vhost,
            username: &self.username,
            password: &self.password,
        };
        Conn::open(&self.outbound, &login)
            .await
            .map_err(|e| SendError::retry(format!("{}: {e}", self.url())))
    }

    fn url(&self) -> &str {
        self.endpoint.split('#').next().unwrap_or_default()
    }

    async fn send_on(&self, conn: &mut Conn, batch: &[Arc<Delivery>]) -> Result<(), SendError> {
        let first = conn.published + 1;
        for d in batch {
            let m = self.renderer.one(d)?;
            let e = d.event();
            let key = self.routing_key.render(e);
            let id = e.event_id.to_string();
            let props = Properties {
                content_type: m.content_type,
                message_id: &id,
                kind: e.event_type.as_str(),
                timestamp: (e.event_time.max(0) / 1_000_000) as u64,
                headers: m
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
            };
            conn.publish(&self.exchange, &key, true, &props, &m.body);
        }
        let last = conn.published;
        conn.flush()
            .await
            .map_err(|e| SendError::retry(format!("writing to {}: {e}", self.url())))?;
        // Confirms may cover several tags (`multiple`: every tag up to this one).
        let mut pending = vec![true; batch.len()];
        let mut waiting = batch.len();
        let mut problem: Option<String> = None;
        while waiting > 0 {
            let c = conn
                .confirm()
                .await
                .map_err(|e| SendError::retry(format!("{}: {e}", self.url())))?;
            let (tag, multiple, nack) = match c {
                Confirm::Ack { tag, multiple } => (tag, multiple, false),
                Confirm::Nack { tag, multiple } => (tag, multiple, true),
                Confirm::Returned { code, text } => {
                    problem.get_or_insert(format!(
                        "no queue took a message: exchange '{}' answered {code} {text} (bind a \
                         queue for the routing key)",
                        self.exchange
                    ));
                    continue;
                }
            };
            let range = match multiple {
                true => first..=tag.min(last),
                false => tag..=tag,
            };
            for t in range.filter(|t| (first..=last).contains(t)) {
                let i = (t - first) as usize;
                if std::mem::replace(&mut pending[i], false) {
                    waiting -= 1;
                    if nack {
                        problem.get_or_insert("the broker refused a message (nack)".into());
                    }
                }
            }
        }
        match problem {
            None => Ok(()),
            // Unroutable or refused messages are the broker's settings or state: retried, so
            // status shows them and nothing is dropped.
            Some(p) => Err(SendError::retry(p)),
        }
    }
}

impl Sink for AmqpSink {
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
            // A connection whose batch failed or timed out is dropped, not reused: its
            // confirms would be read as the next batch's.
            let conn = tokio::time::timeout(self.timeout, work)
                .await
                .map_err(|_| {
                    SendError::retry(format!(
                        "no confirms from {} within {:?}",
                        self.url(),
                        self.timeout
                    ))
                })??;
            self.idle.put(conn);
            Ok(())
        })
    }
}
