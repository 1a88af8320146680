//! Talking to a running server (`--server URL`): JSON requests, and its errors turned into
//! messages that name the problem.

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use serde_json::Value;

/// `--server` and `--token`, shared by every command that acts on a running server.
#[derive(clap::Args, Clone)]
pub struct ServerArg {
    /// URL of the Tidemark server's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:7700", value_name = "URL")]
    pub server: String,
    /// API token (`tmk_…`), for a server with access control (docs/auth.md); prefer
    /// TIDEMARK_TOKEN (other users see a flag's value in `ps`).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// A PEM file of CA certificates trusted for an https:// --server besides the web PKI
    /// roots (a server with a certificate from a private CA).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,
}

impl ServerArg {
    /// The client for --server: http://, or https:// verified against the web PKI and
    /// --ca-file.
    pub fn client(&self) -> anyhow::Result<tidemark_server::http::HttpClient> {
        tidemark_server::http::client_trusting(self.ca_file.as_deref(), "--ca-file")
    }

    /// The `Authorization` header value to send, when a token is given.
    pub fn authorization(&self) -> Option<String> {
        self.token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| format!("Bearer {t}"))
    }

    /// Send a request; a 2xx answer's JSON (Null when empty), else an error with the server's
    /// message and the field it names.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        self.send(method, path, body, "application/json").await
    }

    /// [`ServerArg::call`] with a body of another type (a `.wasm` module).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        content_type: &str,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.server.trim_end_matches('/'));
        let client = self.client()?;
        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .header("content-type", content_type)
            .header("x-tidemark-actor", actor());
        if let Some(authorization) = self.authorization() {
            req = req.header("authorization", authorization);
        }
        let req = req
            .body(Full::new(body))
            .with_context(|| format!("'{url}' is not a valid URL; check --server"))?;
        let resp = client
            .request(req)
            .await
            .map_err(|e| anyhow::anyhow!(unreachable(&self.server, &e)))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if status.is_success() {
            return Ok(value);
        }
        let err = &value["error"];
        match (err["field"].as_str(), err["message"].as_str()) {
            (Some(field), Some(message)) => bail!("{field}: {message} ({status})"),
            (None, Some(message)) => bail!("{message} ({status})"),
            _ => bail!("the server answered {status}: {value}"),
        }
    }
}

/// Why the server could not be reached, with what to check: TLS problems (an unknown CA, a
/// plain-HTTP server behind https://) say so rather than "is it running".
pub fn unreachable(server: &str, e: &hyper_util::client::legacy::Error) -> String {
    use std::error::Error;
    let mut causes = Vec::new();
    let mut source: Option<&dyn Error> = e.source();
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    let detail = causes.join(": ");
    let hint = if detail.contains("certificate") || detail.contains("UnknownIssuer") {
        "the server's certificate is not trusted: pass its CA with --ca-file (or TIDEMARK_CA_FILE)"
    } else if detail.contains("InvalidContentType") || detail.contains("corrupt message") {
        "the server does not speak TLS there: use http://"
    } else {
        "is `tidemark serve` running there? (--server)"
    };
    if detail.is_empty() {
        format!("cannot reach the server at {server}: {e}; {hint}")
    } else {
        format!("cannot reach the server at {server}: {detail}; {hint}")
    }
}

/// Who is making changes, recorded in the audit trail of the configuration: `user@host`.
fn actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!("{user}@{}", host.trim())
}

/// A JSON value as a table cell: strings bare, null as `-`.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
