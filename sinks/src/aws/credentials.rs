//! AWS credentials of a sink: given in the subscription (the secret moved to the secret store,
//! or an `env:` / `file:` reference), else the standard chain of the server's environment:
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, then the shared
//! credentials file (`AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`, profile
//! `AWS_PROFILE` or `default`).

use serde::{Deserialize, Serialize};
use tidemark_core::catalog::Catalog;

use crate::{Error, Result, secrets};

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

impl Credentials {
    /// `spec`'s references resolved, or the standard chain when there is no spec.
    pub fn resolve(spec: Option<&CredentialsSpec>, catalog: &Catalog) -> Result<Credentials> {
        let Some(spec) = spec else {
            return standard_chain();
        };
        let value = |v: &str| secrets::value(catalog, v);
        Ok(Credentials {
            access_key_id: value(&spec.access_key_id)?,
            secret_access_key: value(&spec.secret_access_key)?,
            session_token: spec.session_token.as_deref().map(value).transpose()?,
        })
    }
}

fn standard_chain() -> Result<Credentials> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Ok(Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: env("AWS_SESSION_TOKEN"),
        });
    }
    let file = env("AWS_SHARED_CREDENTIALS_FILE")
        .or_else(|| env("HOME").map(|h| format!("{h}/.aws/credentials")));
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let none = || {
        Error::Config(
            "no AWS credentials: give sink.credentials, or set AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY (or a shared credentials file) for the server"
                .into(),
        )
    };
    let Some(file) = file else {
        return Err(none());
    };
    let Ok(text) = std::fs::read_to_string(&file) else {
        return Err(none());
    };
    from_shared_file(&text, &profile).ok_or_else(|| {
        Error::Config(format!(
            "no AWS credentials: profile '{profile}' of {file} has no aws_access_key_id and \
             aws_secret_access_key"
        ))
    })
}

/// A profile's keys from a shared credentials file (INI).
fn from_shared_file(text: &str, profile: &str) -> Option<Credentials> {
    let mut in_profile = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = name.trim() == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = Some(v.trim().to_string());
            match k.trim() {
                "aws_access_key_id" => id = v,
                "aws_secret_access_key" => secret = v,
                "aws_session_token" => token = v,
                _ => {}
            }
        }
    }
    Some(Credentials {
        access_key_id: id?,
        secret_access_key: secret?,
        session_token: token,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_profile_is_read_from_the_shared_file() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key = B\n\n\
                    [ci]\n# comment\naws_access_key_id=C\naws_secret_access_key=D\n\
                    aws_session_token=T\n";
        let c = super::from_shared_file(text, "ci").unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.as_str()),
            ("C", "D")
        );
        assert_eq!(c.session_token.as_deref(), Some("T"));
        assert_eq!(
            super::from_shared_file(text, "default")
                .unwrap()
                .access_key_id,
            "A"
        );
        assert!(super::from_shared_file(text, "other").is_none());
    }
}
