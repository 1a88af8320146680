//! The function trigger sink: invoke a function per event (or batch).
//!
//! - `http`: a CloudEvents (binary mode) POST to a function URL, the way Knative, OpenFaaS and
//!   cloud function URLs are invoked; 2xx is success.
//! - `process` (`process.rs`): a function the operator declared (`declared.rs`), run with the
//!   event JSON on stdin; exit code 0 is success; killed at the timeout.
//!
//! `sync` invocations count as delivered when the function succeeded (and are retried like
//! webhooks otherwise). `async` ones count as delivered once the function started; their
//! outcome is only recorded. Either way each invocation is recorded (status, duration, a
//! bounded excerpt of its output) for `GET /v1/subscriptions/NAME/invocations`, and at most
//! `concurrency` run at once.

mod declared;
mod process;

pub use declared::{Declared, Functions, parse_flag};

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::client::HttpClient;
use crate::sink::{Delivery, SendError, Sink};
use crate::subscription::spec::FunctionSpec;
use crate::webhook::format::Format;
use crate::webhook::signature::Secret;
use crate::webhook::sink::WebhookSink;
use crate::{Error, Result};

/// How many invocations are kept per subscription.
const KEEP: usize = 200;
/// Bytes of output kept per invocation.
pub const EXCERPT_BYTES: usize = 1024;

/// One recorded invocation.
#[derive(Debug, Clone, Serialize)]
pub struct Invocation {
    pub at: String,
    pub event_ids: Vec<String>,
    pub attempt: u32,
    /// `ok`, `failed` or `timeout`.
    pub outcome: &'static str,
    /// HTTP status (http) or exit code (process).
    pub status: Option<i32>,
    pub duration_ms: u64,
    pub output: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stderr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The most recent invocations of one subscription.
#[derive(Default)]
pub struct Invocations {
    recent: Mutex<VecDeque<Invocation>>,
}

impl Invocations {
    pub fn record(&self, i: Invocation) {
        let mut r = self.recent.lock().unwrap();
        if r.len() == KEEP {
            r.pop_front();
        }
        r.push_back(i);
    }

    /// Newest first.
    pub fn to_json(&self) -> serde_json::Value {
        let r = self.recent.lock().unwrap();
        serde_json::json!({ "invocations": r.iter().rev().collect::<Vec<_>>() })
    }
}

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
            event_ids: batch.iter().map(|d| d.event.event_id.to_string()).collect(),
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
