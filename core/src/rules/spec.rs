//! Rules as users write them (`"rules"` of a subscription, the body of `POST /v1/rules/test`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One rule. Every field is optional; an empty rule matches every event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Event types: exact names (`ObjectCreated:Put`), a family (`ObjectCreated:*`) or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// Bucket names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<String>,
    /// Key prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix: Vec<String>,
    /// Key suffixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suffix: Vec<String>,
    /// A regular expression the key must match (anywhere; anchor it with ^ and $).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Object size range in bytes, both ends inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<SizeSpec>,
    /// Content types: exact (`image/jpeg`) or a family (`image/*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content_type: Vec<String>,
    /// User metadata: name -> value that must equal, or `{"exists": true|false}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, ValueSpec>,
    /// Tags, as metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, ValueSpec>,
    /// Requesters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requester: Vec<String>,
    /// Every nested rule must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub all: Vec<RuleSpec>,
    /// At least one nested rule must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any: Vec<RuleSpec>,
    /// The nested rule must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<RuleSpec>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
}

/// A value to equal, or whether the name must exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ValueSpec {
    Equals(String),
    Exists { exists: bool },
}
