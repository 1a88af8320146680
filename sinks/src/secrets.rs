//! Secrets by reference. A subscription never holds a secret value: values given inline are
//! stored apart (a `secret` entry of the catalog, which the API never returns) and the
//! subscription keeps a reference to them. References may also point outside Tidemark, so a
//! secret need not enter the log at all:
//!
//! - `secret:ID` — a value stored by Tidemark;
//! - `env:NAME` — an environment variable of the server process;
//! - `file:PATH` — a file on the server (trailing newline trimmed).
//!
//! [`Secrets`] is how a sink spec holds one or a list of them (webhook and function sinks).

use serde::{Deserialize, Serialize};
use tidemark_core::catalog::{Action, Catalog};
use uuid::Uuid;

use crate::{Error, Result};

/// Catalog kind of stored secret values.
pub const SECRET_KIND: &str = "secret";

/// Is `text` a reference rather than a value?
pub fn is_reference(text: &str) -> bool {
    ["secret:", "env:", "file:"]
        .iter()
        .any(|p| text.starts_with(p))
}

/// Store `value` for `owner` and return its reference.
pub async fn store(catalog: &Catalog, owner: &str, value: &str) -> Result<String> {
    let id = format!("{owner}.{}", Uuid::now_v7().simple());
    let spec = serde_json::json!({ "owner": owner, "value": value }).to_string();
    catalog
        .change(SECRET_KIND, &id, Action::Create, Some(spec), None)
        .await?;
    Ok(format!("secret:{id}"))
}

/// Remove the values stored for `references` (those that are `secret:` references).
pub async fn forget(catalog: &Catalog, references: &[String]) {
    for r in references {
        if let Some(id) = r.strip_prefix("secret:")
            && catalog.get(SECRET_KIND, id).is_some()
            && let Err(e) = catalog
                .change(SECRET_KIND, id, Action::Delete, None, None)
                .await
        {
            tracing::warn!(secret = id, "cannot remove a stored secret: {e}");
        }
    }
}

/// Check that a reference resolves now (at create time, so a typo fails the request).
pub fn check(catalog: &Catalog, field: &str, reference: &str) -> Result<()> {
    resolve(catalog, reference)
        .map(|_| ())
        .map_err(|e| match e {
            Error::Invalid { message, .. } => Error::invalid(field, message),
            other => other,
        })
}

/// The value a reference points to.
pub fn resolve(catalog: &Catalog, reference: &str) -> Result<String> {
    let bad = |message: String| Error::invalid("secret", message);
    if let Some(id) = reference.strip_prefix("secret:") {
        let entry = catalog
            .get(SECRET_KIND, id)
            .ok_or_else(|| bad(format!("stored secret '{id}' does not exist")))?;
        let v: serde_json::Value = serde_json::from_str(&entry.spec)
            .map_err(|e| bad(format!("stored secret '{id}' is unreadable: {e}")))?;
        return v["value"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| bad(format!("stored secret '{id}' has no value")));
    }
    if let Some(name) = reference.strip_prefix("env:") {
        return std::env::var(name).map_err(|_| {
            bad(format!(
                "environment variable {name} of the server is not set"
            ))
        });
    }
    if let Some(path) = reference.strip_prefix("file:") {
        return std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| bad(format!("cannot read secret file {path}: {e}")));
    }
    Err(bad(
        "expected a reference secret:ID, env:NAME or file:PATH".into()
    ))
}

/// Resolve every reference of a list.
/// `text` itself, or what it refers to when it is a reference (settings that take either).
pub fn value(catalog: &Catalog, text: &str) -> Result<String> {
    match is_reference(text) {
        true => resolve(catalog, text),
        false => Ok(text.to_string()),
    }
}

pub fn resolve_all(catalog: &Catalog, references: &[String]) -> Result<Vec<String>> {
    references.iter().map(|r| resolve(catalog, r)).collect()
}

/// One secret or a list of them, as a sink spec holds them (values before they are stored,
/// references after).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Secrets {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Secrets {
    pub fn is_empty(&self) -> bool {
        self.list().is_empty()
    }

    pub fn list(&self) -> Vec<String> {
        match self {
            Secrets::None => Vec::new(),
            Secrets::One(s) => vec![s.clone()],
            Secrets::Many(v) => v.clone(),
        }
    }
}
