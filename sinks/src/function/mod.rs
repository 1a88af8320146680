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
//!
//! # Layout
//! - `config.rs`: [`FunctionSpec`], the sink as a subscription writes it.
//! - `declared.rs`: the process functions the operator declares, and resolving a spec to one.
//! - `sink.rs`: [`FunctionSink`]: one invocation (either mode), slots, records.
//! - `process.rs`: running a declared function as a process.
//!
//! [`build`] turns a spec into the running sink (a request sink).

mod config;
mod declared;
mod process;
mod sink;

pub use config::FunctionSpec;
pub use declared::{Declared, Functions, parse_flag};
pub use sink::FunctionSink;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::sink::{BuildCtx, SinkKind};
use crate::webhook::sink::parse_secrets;
use crate::{Error, Result, secrets};

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

/// The function sink `spec` describes, secrets resolved. A process function must be one
/// `functions` declares; `invocations` is where its invocations are recorded.
pub fn build(
    spec: &FunctionSpec,
    ctx: &BuildCtx,
    functions: &Functions,
    invocations: Arc<Invocations>,
) -> Result<SinkKind> {
    let bad = |field: &str, e: String| Error::invalid(field, e);
    let values = secrets::resolve_all(ctx.catalog, &spec.secret.list())?;
    let process = match spec.mode.as_str() {
        "process" => Some(
            functions
                .resolve(spec)
                .map_err(|e| bad("sink.function", e))?,
        ),
        _ => None,
    };
    Ok(SinkKind::Request(Arc::new(FunctionSink::new(
        spec,
        process,
        ctx.client.clone(),
        parse_secrets(&values).map_err(|e| bad("sink.secret", e))?,
        ctx.subscription.to_string(),
        ctx.source.to_string(),
        ctx.replay.map(str::to_string),
        invocations,
    )?)))
}
