//! `/v1/tokens`: create, list, show and revoke API tokens.
//!
//! A token is a catalog entity of kind `token` named by its id (`tok_` and 12 hex digits).
//! Its secret, `tmk_<id>_<32 hex>`, is shown once, in the answer to its creation; the catalog
//! keeps only its SHA-256 (the secret is random, so a plain hash cannot be guessed back), and
//! a request's secret is checked by looking the id up and comparing hashes in constant time.
//! Revoking deletes the entity: every node refuses the token once it has applied the event.

use axum::Json;
use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tidemark_core::catalog::{Action, Catalog, Entry};
use uuid::Uuid;

use super::State;
use super::auth::{Caller, Grant, Scope};
use super::error::{ApiError, parse_json};

pub const KIND: &str = "token";
const SECRET_PREFIX: &str = "tmk_";

/// What the catalog keeps of a token.
#[derive(Serialize, Deserialize)]
struct Stored {
    scopes: Vec<String>,
    #[serde(default)]
    buckets: Vec<String>,
    #[serde(default)]
    description: Option<String>,
    /// Hex SHA-256 of the whole secret.
    sha256: String,
}

/// `POST /v1/tokens`, as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    scopes: Vec<String>,
    #[serde(default)]
    buckets: Vec<String>,
    #[serde(default)]
    description: Option<String>,
}

pub fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal secrets or hashes, compared in time that does not depend on where they differ (only
/// on their lengths, which are not secret).
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The grant of a `tmk_…` secret, or why it is refused.
pub fn verify(catalog: &Catalog, secret: &str) -> Result<Grant, String> {
    let id = secret
        .strip_prefix(SECRET_PREFIX)
        .and_then(|rest| rest.rsplit_once('_'))
        .map(|(id, _)| id)
        .filter(|id| id.starts_with("tok_"))
        .ok_or("that is not a Tidemark token (they look like tmk_tok_…_…)")?;
    let refused = || format!("token '{id}' is unknown, revoked, or its secret is wrong");
    let entry = catalog.get(KIND, id).ok_or_else(refused)?;
    let stored: Stored = serde_json::from_str(&entry.spec).map_err(|_| refused())?;
    let mut want = [0u8; 32];
    for (i, byte) in want.iter_mut().enumerate() {
        *byte = stored
            .sha256
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or_else(refused)?;
    }
    if !same_secret(&want, &sha256(secret)) {
        return Err(refused());
    }
    Ok(Grant {
        id: id.to_string(),
        scopes: stored
            .scopes
            .iter()
            .filter_map(|s| Scope::parse(s).ok())
            .collect(),
        buckets: stored.buckets,
    })
}

/// A token as listed: never its secret or hash.
fn token_json(e: &Entry) -> Value {
    let stored: Option<Stored> = serde_json::from_str(&e.spec).ok();
    json!({
        "id": e.name,
        "scopes": stored.as_ref().map(|s| s.scopes.clone()).unwrap_or_default(),
        "buckets": stored.as_ref().map(|s| s.buckets.clone()).unwrap_or_default(),
        "description": stored.and_then(|s| s.description),
        "created_at": tidemark_core::time::format_us(e.created_at),
        "created_by": e.actor,
    })
}

/// A bucket pattern: bucket-name characters and `*`.
fn check_pattern(pattern: &str) -> Result<(), String> {
    let ok = !pattern.is_empty()
        && pattern.len() <= 100
        && pattern
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'*'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{pattern}' is not a bucket pattern: use 1-100 characters from [A-Za-z0-9._-] \
             and '*' (any run of characters), e.g. photos*"
        ))
    }
}

impl CreateRequest {
    fn validate(self) -> Result<Stored, ApiError> {
        let bad = |field: &str, m: String| ApiError::field(StatusCode::BAD_REQUEST, field, m);
        if self.scopes.is_empty() {
            return Err(bad(
                "scopes",
                "name at least one scope: ingest, read, subscriptions, filters, replay, admin"
                    .into(),
            ));
        }
        for (i, s) in self.scopes.iter().enumerate() {
            Scope::parse(s).map_err(|m| bad(&format!("scopes[{i}]"), m))?;
        }
        for (i, p) in self.buckets.iter().enumerate() {
            check_pattern(p).map_err(|m| bad(&format!("buckets[{i}]"), m))?;
        }
        if self.description.as_ref().is_some_and(|d| d.len() > 500) {
            return Err(bad("description", "is longer than 500 bytes".into()));
        }
        let mut scopes = self.scopes;
        scopes.sort();
        scopes.dedup();
        Ok(Stored {
            scopes,
            buckets: self.buckets,
            description: self.description,
            sha256: String::new(),
        })
    }
}

/// `POST /v1/tokens`: the only answer that holds the secret.
pub async fn create(
    state: State,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: CreateRequest = parse_json(&body?)?;
    let mut stored = req.validate()?;
    // uuid's v4 comes from a CSPRNG: 122 random bits in the secret, 48 in the id.
    let id = format!("tok_{}", &Uuid::new_v4().simple().to_string()[..12]);
    let secret = format!("{SECRET_PREFIX}{id}_{}", Uuid::new_v4().simple());
    stored.sha256 = hex(&sha256(&secret));
    let spec = serde_json::to_string(&stored).map_err(anyhow::Error::from)?;
    let entry = state
        .node
        .catalog
        .change(KIND, &id, Action::Create, Some(spec), Some(caller.actor()))
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "lost"))?;
    let mut body = token_json(&entry);
    body["secret"] = secret.into();
    body["note"] = "store the secret now: it is not shown again".into();
    Ok((StatusCode::CREATED, Json(body)))
}

pub async fn list(state: State) -> Json<Value> {
    let tokens: Vec<Value> = state
        .node
        .catalog
        .list(KIND)
        .iter()
        .map(token_json)
        .collect();
    Json(json!({ "tokens": tokens }))
}

fn find(state: &State, id: &str) -> Result<Entry, ApiError> {
    state.node.catalog.get(KIND, id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("token '{id}' does not exist (or was revoked); `tidemark token ls` lists them"),
        )
    })
}

pub async fn get(state: State, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(token_json(&find(&state, &id)?)))
}

/// `DELETE /v1/tokens/{id}`: refused from the moment this answers.
pub async fn revoke(
    state: State,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    find(&state, &id)?;
    state
        .node
        .catalog
        .change(KIND, &id, Action::Delete, None, Some(caller.actor()))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
