//! Appending a batch: one pipelined round trip of `XADD`s on a pooled connection.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::resp::{Conn, Reply};
use super::{Address, RedisStreamSinkSpec};
use crate::Result;
use crate::client::Outbound;
use crate::message::{MessageFormat, Renderer, Template};
use crate::sink::{BuildCtx, Delivery, SendError, Sink};
use crate::socket::Pool;

pub(super) struct RedisSink {
    outbound: Outbound,
    address: Address,
    username: Option<String>,
    password: Option<String>,
    stream: Template,
    maxlen: Option<String>,
    renderer: Renderer,
    endpoint: String,
    timeout: Duration,
    idle: Pool<Conn>,
}

impl RedisSink {
    pub fn new(
        spec: &RedisStreamSinkSpec,
        password: Option<String>,
        format: MessageFormat,
        timeout: Duration,
        ctx: &BuildCtx<'_>,
    ) -> Result<RedisSink> {
        Ok(RedisSink {
            outbound: ctx.outbound.clone(),
            address: spec.address()?,
            username: spec.username.clone(),
            password,
            stream: Template::parse("sink.stream", &spec.stream)?,
            maxlen: spec.maxlen.map(|n| n.to_string()),
            renderer: Renderer::new(format, ctx.subscription, ctx.source, ctx.replay),
            endpoint: spec.endpoint(),
            timeout,
            idle: Pool::default(),
        })
    }

    /// An idle connection, else a new one: connected, authenticated, on its database.
    async fn connection(&self) -> Result<Conn, String> {
        if let Some(c) = self.idle.take() {
            return Ok(c);
        }
        let a = &self.address;
        let stream =
            crate::socket::connect(&self.outbound, &a.host, a.port, a.tls, self.timeout).await?;
        let mut conn = Conn::new(stream);
        let io = |e: std::io::Error| e.to_string();
        if let Some(password) = &self.password {
            let reply = match &self.username {
                Some(user) => conn.call(&["AUTH", user, password]).await,
                None => conn.call(&["AUTH", password]).await,
            }
            .map_err(io)?;
            expect_ok(reply, "AUTH")?;
        }
        if a.db != 0 {
            let reply = conn
                .call(&["SELECT", &a.db.to_string()])
                .await
                .map_err(io)?;
            expect_ok(reply, "SELECT")?;
        }
        Ok(conn)
    }

    /// Queue the `XADD` of `d` on `conn`.
    fn xadd(&self, conn: &mut Conn, d: &Delivery) -> Result<(), SendError> {
        let m = self.renderer.one(d)?;
        let e = d.event();
        let stream = self.stream.render(e);
        let mut args: Vec<&[u8]> = vec![b"XADD", stream.as_bytes()];
        if let Some(n) = &self.maxlen {
            args.extend([b"MAXLEN".as_slice(), b"~", n.as_bytes()]);
        }
        args.push(b"*");
        // The message's attributes: tidemark_event_id, tidemark_event_type, tidemark_replay.
        for (name, value) in &m.attributes {
            let field = name.strip_prefix("tidemark_").unwrap_or(name);
            args.extend([field.as_bytes(), value.as_bytes()]);
        }
        args.extend([
            b"bucket".as_slice(),
            e.bucket.as_bytes(),
            b"key",
            e.key.as_bytes(),
            b"content_type",
            m.content_type.as_bytes(),
            b"data",
            &m.body,
        ]);
        conn.command(&args);
        Ok(())
    }

    async fn append(&self, conn: &mut Conn, batch: &[Arc<Delivery>]) -> Result<(), SendError> {
        for d in batch {
            self.xadd(conn, d)?;
        }
        conn.flush()
            .await
            .map_err(|e| SendError::retry(format!("writing to {}: {e}", self.endpoint)))?;
        // Every reply is read (the connection stays in step); the first error fails the batch.
        let mut first_error = None;
        for _ in batch {
            match conn.reply().await {
                Ok(Reply::Bulk(Some(_))) => {}
                Ok(Reply::Error(e)) => {
                    first_error.get_or_insert(format!("{} refused XADD: {e}", self.endpoint));
                }
                Ok(other) => {
                    first_error.get_or_insert(format!("XADD answered {other:?}"));
                }
                Err(e) => {
                    return Err(SendError::retry(format!(
                        "reading from {}: {e}",
                        self.endpoint
                    )));
                }
            }
        }
        match first_error {
            None => Ok(()),
            // Refusals here are the server's state or settings (a key of another type, no
            // memory, no permission): retried, so status shows them and nothing is lost.
            Some(e) => Err(SendError::retry(e)),
        }
    }
}

fn expect_ok(reply: Reply, command: &str) -> Result<(), String> {
    match reply {
        Reply::Simple(s) if s == "OK" => Ok(()),
        Reply::Error(e) => Err(format!("{command} was refused: {e}")),
        other => Err(format!("{command} answered {other:?}")),
    }
}

impl Sink for RedisSink {
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
                let mut conn = self
                    .connection()
                    .await
                    .map_err(|e| SendError::retry(format!("{}: {e}", self.endpoint)))?;
                self.append(&mut conn, batch).await?;
                Ok::<_, SendError>(conn)
            };
            // A connection whose batch failed or timed out is dropped, not reused.
            let conn = tokio::time::timeout(self.timeout, work)
                .await
                .map_err(|_| {
                    SendError::retry(format!(
                        "no answer from {} within {:?}",
                        self.endpoint, self.timeout
                    ))
                })??;
            self.idle.put(conn);
            Ok(())
        })
    }
}
