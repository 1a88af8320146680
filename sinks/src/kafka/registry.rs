//! The user's own schema registry for `avro` values: the log's writer schemas are registered
//! there (under `{topic}-value` by default, Confluent's TopicNameStrategy) and each record is
//! re-framed with the id that registry gave, so consumers pointed at it decode the records.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use serde::{Deserialize, Serialize};
use tidemark_core::codec::EventCodec;

use crate::client::HttpClient;
use crate::sink::{Failure, SendError};

/// `sink.schema_registry`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySpec {
    /// The registry's base URL (`https://registry.internal:8081`).
    pub url: String,
    /// The subject the schemas go under; by default `{topic}-value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// HTTP basic authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A value (moved to the secret store) or a reference (`env:NAME`, `file:PATH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

pub(super) struct UserRegistry {
    client: HttpClient,
    /// `{url}/subjects/{subject}/versions`.
    register: String,
    auth: Option<HeaderValue>,
    codec: Arc<EventCodec>,
    /// The log's schema id -> the user's registry's.
    ids: Mutex<HashMap<u32, u32>>,
}

impl UserRegistry {
    pub fn new(
        spec: &RegistrySpec,
        topic: &str,
        password: Option<String>,
        client: HttpClient,
        codec: Arc<EventCodec>,
    ) -> UserRegistry {
        let subject = spec
            .subject
            .clone()
            .unwrap_or_else(|| format!("{topic}-value"));
        let auth = spec.username.as_ref().map(|user| {
            use base64::Engine;
            let pair = format!("{user}:{}", password.unwrap_or_default());
            let token = base64::engine::general_purpose::STANDARD.encode(pair);
            HeaderValue::from_str(&format!("Basic {token}")).expect("base64 is a header value")
        });
        UserRegistry {
            client,
            register: format!(
                "{}/subjects/{}/versions",
                spec.url.trim_end_matches('/'),
                encode_segment(&subject)
            ),
            auth,
            codec,
            ids: Mutex::new(HashMap::new()),
        }
    }

    /// `value` (Confluent wire format with the log's schema id) with the user's id instead.
    pub async fn reframe(&self, mut value: Vec<u8>) -> Result<Vec<u8>, SendError> {
        if value.len() < 5 || value[0] != 0 {
            return Err(SendError {
                failure: Failure::Reject,
                status: None,
                message: "a record that is not in Confluent wire format".into(),
            });
        }
        let ours = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
        let cached = self.ids.lock().unwrap().get(&ours).copied();
        let theirs = match cached {
            Some(id) => id,
            None => {
                let id = self.register(ours).await?;
                self.ids.lock().unwrap().insert(ours, id);
                id
            }
        };
        value[1..5].copy_from_slice(&theirs.to_be_bytes());
        Ok(value)
    }

    /// Register the log's schema `ours`; the id the registry answers (the existing one when
    /// it has the schema already).
    async fn register(&self, ours: u32) -> Result<u32, SendError> {
        let schema = self.codec.schema_json(ours).ok_or_else(|| SendError {
            failure: Failure::Reject,
            status: None,
            message: format!("schema id {ours} of a record is not in Tidemark's registry"),
        })?;
        let body = serde_json::to_vec(&serde_json::json!({ "schema": schema }))
            .expect("JSON values serialize");
        let mut req = Request::post(&self.register)
            .header(
                header::CONTENT_TYPE,
                "application/vnd.schemaregistry.v1+json",
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SendError::retry(format!("the schema registry URL: {e}")))?;
        if let Some(a) = &self.auth {
            req.headers_mut().insert(header::AUTHORIZATION, a.clone());
        }
        let call = async {
            let resp = self.client.request(req).await.map_err(|e| {
                SendError::retry(format!("the schema registry {}: {e}", self.register))
            })?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), 64 << 10)
                .collect()
                .await
                .map_err(|e| SendError::retry(format!("reading the schema registry: {e}")))?
                .to_bytes();
            Ok::<_, SendError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .map_err(|_| SendError::retry("the schema registry did not answer within 30 s"))??;
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if !status.is_success() {
            // Refused (incompatible, unauthorized) or failing: the sink's settings or the
            // registry's state; retried, so status shows it and nothing is lost.
            return Err(SendError {
                failure: Failure::Retry { retry_after: None },
                status: Some(status.as_u16() as i32),
                message: format!(
                    "the schema registry refused schema {ours} under {}: {status} {}",
                    self.register,
                    v["message"].as_str().unwrap_or_default()
                ),
            });
        }
        v["id"]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| SendError::retry(format!("the schema registry answered no id: {v}")))
    }
}

/// A URL path segment: unreserved characters as they are, the rest percent-encoded.
fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}
