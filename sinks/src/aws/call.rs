//! A signed call to an AWS service over the node's outbound HTTP client, and what the
//! service answered.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};

use super::CredentialSource;
use super::sigv4::{self, Unsigned};
use crate::client::HttpClient;
use crate::sink::{Failure, SendError};

/// Calls one service in one region with one set of credentials.
pub struct AwsClient {
    client: HttpClient,
    creds: Arc<CredentialSource>,
    region: String,
    service: &'static str,
    timeout: Duration,
}

/// The service's answer.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A call that got no answer.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("no answer within {0} ms")]
    Timeout(u128),
    #[error("{0}")]
    Connect(String),
    #[error("{0}")]
    Credentials(String),
}

impl From<AwsError> for SendError {
    fn from(e: AwsError) -> SendError {
        SendError::retry(e.to_string())
    }
}

impl AwsClient {
    pub fn new(
        client: HttpClient,
        creds: Arc<CredentialSource>,
        region: String,
        service: &'static str,
        timeout: Duration,
    ) -> AwsClient {
        AwsClient {
            client,
            creds,
            region,
            service,
            timeout,
        }
    }

    /// POST `body` to `uri` with `headers` (lower-case names), signed.
    pub async fn post(
        &self,
        uri: &Uri,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> Result<Answer, AwsError> {
        let creds = self.creds.get().await.map_err(AwsError::Credentials)?;
        let mut all = headers;
        all.push(("host".into(), host_header(uri)));
        let signed = sigv4::sign(
            Unsigned {
                method: "POST",
                path: uri.path(),
                headers: all,
                body: &body,
            },
            &creds,
            &self.region,
            self.service,
            chrono::Utc::now(),
        );
        let mut req = Request::builder().method(Method::POST).uri(uri.clone());
        for (name, value) in &signed {
            req = req.header(name.as_str(), value.as_str());
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| AwsError::Connect(format!("cannot build the request: {e}")))?;
        let call = async {
            let resp = self.client.request(req).await.map_err(|e| {
                let mut msg = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    msg = format!("{msg}: {s}");
                    source = s.source();
                }
                AwsError::Connect(format!("{}: {msg}", authority(uri)))
            })?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, 8 << 20)
                .collect()
                .await
                .map_err(|e| AwsError::Connect(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| AwsError::Timeout(self.timeout.as_millis()))?
    }
}

impl Answer {
    /// The AWS error code: the JSON protocol's `__type` (after `#`), or the
    /// `x-amzn-ErrorType` header (before `:`).
    pub fn error_code(&self) -> String {
        let json: Option<serde_json::Value> = serde_json::from_slice(&self.body).ok();
        if let Some(t) = json
            .as_ref()
            .and_then(|j| j.get("__type"))
            .and_then(|t| t.as_str())
        {
            return t.rsplit('#').next().unwrap_or(t).to_string();
        }
        if let Some(t) = self
            .headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
        {
            return t.split(':').next().unwrap_or(t).to_string();
        }
        String::new()
    }

    /// The error's message (`message` or `Message` of the JSON body), else the body's start.
    pub fn error_message(&self) -> String {
        let json: Option<serde_json::Value> = serde_json::from_slice(&self.body).ok();
        let from_json = json.as_ref().and_then(|j| {
            j.get("message")
                .or_else(|| j.get("Message"))
                .and_then(|m| m.as_str())
                .map(str::to_string)
        });
        from_json.unwrap_or_else(|| {
            String::from_utf8_lossy(&self.body[..self.body.len().min(300)]).into_owned()
        })
    }

    /// A failed answer as a failed attempt: `reject` says which error codes mean the events
    /// themselves were refused (sending them again cannot help); other client errors (an
    /// unknown queue or function, refused credentials) are the sink's settings, retried so
    /// the circuit breaker and status show them and nothing is lost once they are fixed.
    pub fn failed(&self, what: &str, reject: &[&str]) -> SendError {
        let code = self.error_code();
        let status = self.status.as_u16();
        let failure = if reject.contains(&code.as_str()) || status == 413 {
            Failure::Reject
        } else {
            Failure::Retry { retry_after: None }
        };
        SendError {
            failure,
            status: Some(status as i32),
            message: format!(
                "{what} answered {}{}{}: {}",
                self.status,
                if code.is_empty() { "" } else { " " },
                code,
                self.error_message().trim()
            ),
        }
    }
}

fn host_header(uri: &Uri) -> String {
    let host = uri.host().unwrap_or_default();
    match (uri.scheme_str(), uri.port_u16()) {
        (Some("http"), Some(80)) | (Some("https"), Some(443)) | (_, None) => host.to_string(),
        (_, Some(port)) => format!("{host}:{port}"),
    }
}

fn authority(uri: &Uri) -> String {
    uri.authority().map(|a| a.to_string()).unwrap_or_default()
}
