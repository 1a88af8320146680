//! AWS credentials of a sink: given in the subscription (the secret moved to the secret store,
//! or an `env:` / `file:` reference), else the standard chain of the server's environment
//! (`chain.rs`). Temporary credentials are fetched again before they expire.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tidemark_core::catalog::Catalog;

use super::chain::{self, Found};
use super::remote::Provider;
use crate::client::{Outbound, PlainClient};
use crate::{Result, secrets};

/// `sink.credentials`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsSpec {
    /// A value or a reference (`env:NAME`, `file:PATH`).
    pub access_key_id: String,
    /// A value (moved to the secret store) or a reference.
    pub secret_access_key: String,
    /// For temporary credentials; a value (moved to the secret store) or a reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
}

impl CredentialsSpec {
    /// The secret values and references it holds (moved to the store when given inline).
    pub fn secrets_mut(&mut self) -> impl Iterator<Item = &mut String> {
        std::iter::once(&mut self.secret_access_key).chain(self.session_token.as_mut())
    }

    pub fn secrets(&self) -> Vec<String> {
        std::iter::once(self.secret_access_key.clone())
            .chain(self.session_token.clone())
            .collect()
    }
}

/// Resolved credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Where a sink's credentials come from.
pub struct CredentialSource {
    kind: Kind,
}

enum Kind {
    Fixed(Arc<Credentials>),
    Fetched(Box<Fetcher>),
}

struct Fetcher {
    provider: Provider,
    client: PlainClient,
    current: tokio::sync::Mutex<Option<Current>>,
}

/// Fetched credentials and when they expire.
type Current = (Arc<Credentials>, Option<DateTime<Utc>>);

/// Fetched credentials are renewed this long before they expire (as the AWS SDKs do).
const RENEW_BEFORE: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

impl CredentialSource {
    /// `spec`'s references resolved, or the standard chain when there is no spec (`region`
    /// picks the STS endpoint of a web identity).
    pub fn resolve(
        spec: Option<&CredentialsSpec>,
        catalog: &Catalog,
        outbound: &Outbound,
        region: &str,
    ) -> Result<CredentialSource> {
        let Some(spec) = spec else {
            let kind = match chain::standard_chain(region)? {
                Found::Fixed(creds) => Kind::Fixed(Arc::new(creds)),
                Found::Fetched(provider) => Kind::Fetched(Box::new(Fetcher {
                    provider,
                    client: outbound.unguarded(),
                    current: tokio::sync::Mutex::new(None),
                })),
            };
            return Ok(CredentialSource { kind });
        };
        let value = |v: &str| secrets::value(catalog, v);
        Ok(CredentialSource::fixed(Credentials {
            access_key_id: value(&spec.access_key_id)?,
            secret_access_key: value(&spec.secret_access_key)?,
            session_token: spec.session_token.as_deref().map(value).transpose()?,
        }))
    }

    pub fn fixed(creds: Credentials) -> CredentialSource {
        CredentialSource {
            kind: Kind::Fixed(Arc::new(creds)),
        }
    }

    /// The credentials to sign with now: fetched when there are none yet or they expire
    /// within five minutes. A failed renewal keeps using credentials that still work.
    pub async fn get(&self) -> std::result::Result<Arc<Credentials>, String> {
        let fetcher = match &self.kind {
            Kind::Fixed(creds) => return Ok(creds.clone()),
            Kind::Fetched(fetcher) => fetcher,
        };
        let mut current = fetcher.current.lock().await;
        let now = Utc::now();
        if let Some((creds, expires)) = current.as_ref()
            && expires.is_none_or(|e| e - now > RENEW_BEFORE)
        {
            return Ok(creds.clone());
        }
        match fetcher.provider.fetch(&fetcher.client).await {
            Ok(fetched) => {
                let creds = Arc::new(fetched.creds);
                *current = Some((creds.clone(), fetched.expires));
                Ok(creds)
            }
            Err(e) => match current.as_ref() {
                Some((creds, Some(expires))) if *expires > now => {
                    tracing::warn!(error = %e, "renewing AWS credentials failed; using the current ones until they expire");
                    Ok(creds.clone())
                }
                _ => Err(e),
            },
        }
    }
}
