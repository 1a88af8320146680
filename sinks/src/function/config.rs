//! The `function` sink as a subscription writes it (`"sink": {"type": "function", ...}`).

use serde::{Deserialize, Serialize};

use crate::secrets::Secrets;
use crate::webhook::sink::endpoint_of;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    /// `http` (CloudEvents to a function URL) or `process` (a command with the event on stdin).
    pub mode: String,
    /// `http`: the function URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `process`: the name of a function the operator declared in the server's
    /// configuration (`serve --function NAME=PROGRAM ARGS...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// Only in subscriptions stored before commands had to be declared: their program and
    /// arguments. Refused in requests; such a subscription runs only while the same command
    /// is declared under some name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Wait for the function's result (`sync`, default) or only for it to start (`async`).
    #[serde(default = "sync")]
    pub invocation: String,
    #[serde(default = "function_timeout")]
    pub timeout_ms: u64,
    /// Invocations running at once for this subscription.
    #[serde(default = "function_concurrency")]
    pub concurrency: usize,
    #[serde(default, skip_serializing_if = "Secrets::is_empty")]
    pub secret: Secrets,
}

fn sync() -> String {
    "sync".into()
}

fn function_timeout() -> u64 {
    30_000
}

fn function_concurrency() -> usize {
    8
}

impl FunctionSpec {
    /// What the circuit breaker is keyed by and status shows: `scheme://authority` of the
    /// URL, or `process:` and the declared function's name. Needs no secret.
    pub fn endpoint(&self) -> String {
        match self.mode.as_str() {
            "http" => self
                .url
                .as_deref()
                .and_then(|u| u.parse::<http::Uri>().ok())
                .map(|u| endpoint_of(&u))
                .unwrap_or_default(),
            // The declared function's name; a subscription stored with an inline command
            // (before declarations) shows only its program, never its arguments.
            _ => match &self.function {
                Some(name) => format!("process:{name}"),
                None => format!(
                    "process:{}",
                    self.command.first().map(String::as_str).unwrap_or_default()
                ),
            },
        }
    }
}
