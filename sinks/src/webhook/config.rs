//! The `webhook` sink as a subscription writes it (`"sink": {"type": "webhook", ...}`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::format::Format;
use crate::secrets::Secrets;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    pub url: String,
    #[serde(default = "s3_format")]
    pub format: Format,
    /// Standard Webhooks signing secrets: `whsec_…` values (stored apart, replaced by a
    /// reference) or references (`env:NAME`, `file:PATH`). Two during a rotation.
    #[serde(default, skip_serializing_if = "Secrets::is_empty")]
    pub secret: Secrets,
    /// Sent as `Authorization: Bearer …`; a value or a reference, as `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<String>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "request_timeout")]
    pub timeout_ms: u64,
}

fn s3_format() -> Format {
    Format::S3
}

fn request_timeout() -> u64 {
    10_000
}
