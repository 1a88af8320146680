//! Invoking a function: one sink for both modes, with its concurrency slots and the record
//! of every invocation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::Semaphore;

use super::{Declared, FunctionSpec, Invocation, Invocations, process};
use crate::client::HttpClient;
use crate::sink::{Delivery, SendError, Sink};
use crate::webhook::format::Format;
use crate::webhook::signature::Secret;
use crate::webhook::sink::WebhookSink;
use crate::{Error, Result};

enum Target {
    Http(Box<WebhookSink>),
    Process { command: Vec<String> },
}

pub struct FunctionSink(Arc<Inner>);

struct Inner {
    target: Target,
    endpoint: String,
    sync: bool,
    timeout: Duration,
    slots: Arc<Semaphore>,
    invocations: Arc<Invocations>,
    subscription: String,
}

impl FunctionSink {
    /// `process`: the declared function a process-mode spec resolved to.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spec: &FunctionSpec,
        process: Option<Declared>,
        client: HttpClient,
        secrets: Vec<Secret>,
        subscription: String,
        source: String,
        replay: Option<String>,
        invocations: Arc<Invocations>,
    ) -> Result<FunctionSink> {
        let timeout = Duration::from_millis(spec.timeout_ms);
        let target = match spec.mode.as_str() {
            "http" => {
                let url = spec.url.as_deref().unwrap_or_default();
                let uri: http::Uri = url
                    .parse()
                    .map_err(|e| Error::invalid("sink.url", format!("'{url}': {e}")))?;
                let sink = WebhookSink {
                    client,
                    uri,
                    endpoint: spec.endpoint(),
                    format: Format::CloudeventsBinary,
                    secrets,
                    bearer: None,
                    headers: Vec::new(),
                    timeout,
                    subscription: subscription.clone(),
                    source,
                    replay,
                };
                Target::Http(Box::new(sink))
            }
            _ => Target::Process {
                command: process
                    .ok_or_else(|| Error::invalid("sink.function", "no declared function"))?
                    .command,
            },
        };
        Ok(FunctionSink(Arc::new(Inner {
            target,
            endpoint: spec.endpoint(),
            sync: spec.invocation != "async",
            timeout,
            slots: Arc::new(Semaphore::new(spec.concurrency)),
            invocations,
            subscription,
        })))
    }
}

impl Inner {
    /// Run one invocation to its end and record it (the caller holds a slot).
    async fn invoke(&self, batch: &[Arc<Delivery>], attempt: u32) -> Result<(), SendError> {
        let started = Instant::now();
        let (result, status, output, stderr) = match &self.target {
            Target::Http(sink) => {
                let (r, status, body) = sink.call(batch).await;
                (r, status.map(i32::from), body, String::new())
            }
            Target::Process { command } => {
                let run =
                    process::run(command, batch, &self.subscription, attempt, self.timeout).await;
                (run.result, run.exit_code, run.stdout, run.stderr)
            }
        };
        let outcome = match &result {
            Ok(()) => "ok",
            Err(e)
                if e.message.starts_with("no response within")
                    || e.message.starts_with("timed out") =>
            {
                "timeout"
            }
            Err(_) => "failed",
        };
        self.invocations.record(Invocation {
            at: tidemark_core::time::format_us(tidemark_core::time::now_us()),
            event_ids: batch
                .iter()
                .map(|d| d.event().event_id.to_string())
                .collect(),
            attempt,
            outcome,
            status,
            duration_ms: started.elapsed().as_millis() as u64,
            output,
            stderr,
            error: result.as_ref().err().map(|e| e.message.clone()),
        });
        result
    }
}

impl Sink for FunctionSink {
    fn endpoint(&self) -> &str {
        &self.0.endpoint
    }

    fn send<'a>(
        &'a self,
        batch: &'a [Arc<Delivery>],
        attempt: u32,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        async move {
            let slot = self
                .0
                .slots
                .clone()
                .acquire_owned()
                .await
                .expect("never closed");
            if self.0.sync {
                let result = self.0.invoke(batch, attempt).await;
                drop(slot);
                return result;
            }
            // Async: the invocation has its slot and has started; its outcome is recorded.
            let (inner, batch) = (self.0.clone(), batch.to_vec());
            tokio::spawn(async move {
                let _ = inner.invoke(&batch, attempt).await;
                drop(slot);
            });
            Ok(())
        }
        .boxed()
    }
}
