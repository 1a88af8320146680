//! The standard AWS credentials chain of the server's environment, in the AWS SDKs' order:
//! 1. `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`;
//! 2. the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`,
//!    profile `AWS_PROFILE` or `default`);
//! 3. a web identity: `AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN` (EKS service accounts),
//!    STS at `AWS_ENDPOINT_URL_STS` / `AWS_ENDPOINT_URL` or the region's;
//! 4. the container endpoint: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` or `_FULL_URI` (ECS,
//!    EKS Pod Identity), with `AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]`;
//! 5. the EC2 instance metadata service (IMDSv2) at `AWS_EC2_METADATA_SERVICE_ENDPOINT` or
//!    `http://169.254.169.254`, unless `AWS_EC2_METADATA_DISABLED=true`.

use std::net::IpAddr;

use super::Credentials;
use super::remote::Provider;
use crate::{Error, Result};

pub enum Found {
    Fixed(Credentials),
    Fetched(Provider),
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

pub fn standard_chain(region: &str) -> Result<Found> {
    if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Ok(Found::Fixed(Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: env("AWS_SESSION_TOKEN"),
        }));
    }
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let file = env("AWS_SHARED_CREDENTIALS_FILE")
        .or_else(|| env("HOME").map(|h| format!("{h}/.aws/credentials")));
    if let Some(file) = &file
        && let Ok(text) = std::fs::read_to_string(file)
    {
        if let Some(creds) = from_shared_file(&text, &profile) {
            return Ok(Found::Fixed(creds));
        }
        if env("AWS_PROFILE").is_some() {
            return Err(Error::Config(format!(
                "no AWS credentials: profile '{profile}' of {file} has no aws_access_key_id \
                 and aws_secret_access_key"
            )));
        }
    }
    if let (Some(token_file), Some(role_arn)) =
        (env("AWS_WEB_IDENTITY_TOKEN_FILE"), env("AWS_ROLE_ARN"))
    {
        let endpoint = env("AWS_ENDPOINT_URL_STS")
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"));
        let session_name = env("AWS_ROLE_SESSION_NAME")
            .unwrap_or_else(|| format!("tidemark-{}", chrono::Utc::now().timestamp_millis()));
        return Ok(Found::Fetched(Provider::WebIdentity {
            endpoint,
            role_arn,
            session_name,
            token_file,
        }));
    }
    let container = match (
        env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
        env("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
    ) {
        (Some(relative), _) => Some(format!("http://169.254.170.2{relative}")),
        (None, Some(full)) => Some(check_container_uri(&full)?),
        (None, None) => None,
    };
    if let Some(uri) = container {
        return Ok(Found::Fetched(Provider::Container {
            uri,
            token_file: env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
            token: env("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
        }));
    }
    if env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(Error::Config(
            "no AWS credentials: give sink.credentials, or give the server AWS_ACCESS_KEY_ID \
             and AWS_SECRET_ACCESS_KEY, a shared credentials file, a web identity or a \
             container credentials endpoint (the instance metadata service is disabled)"
                .into(),
        ));
    }
    let endpoint = env("AWS_EC2_METADATA_SERVICE_ENDPOINT").unwrap_or_else(|| {
        match env("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE") {
            Some(m) if m.eq_ignore_ascii_case("ipv6") => "http://[fd00:ec2::254]".into(),
            _ => "http://169.254.169.254".into(),
        }
    });
    Ok(Found::Fetched(Provider::Instance {
        endpoint: endpoint.trim_end_matches('/').to_string(),
    }))
}

/// A full container URI may be plain HTTP only to loopback or the ECS/EKS agent's
/// link-local addresses, as the AWS SDKs require (credentials never cross a network in clear).
fn check_container_uri(uri: &str) -> Result<String> {
    let bad =
        |why: &str| Error::Config(format!("AWS_CONTAINER_CREDENTIALS_FULL_URI '{uri}' {why}"));
    let parsed: http::Uri = uri.parse().map_err(|_| bad("is not a URL"))?;
    let host = parsed.host().ok_or_else(|| bad("has no host"))?;
    match parsed.scheme_str() {
        Some("https") => Ok(uri.to_string()),
        Some("http") => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let allowed = match host.parse::<IpAddr>() {
                Ok(ip) => {
                    ip.is_loopback()
                        || ["169.254.170.2", "169.254.170.23", "fd00:ec2::23"]
                            .iter()
                            .any(|a| a.parse::<IpAddr>().ok() == Some(ip))
                }
                Err(_) => host == "localhost",
            };
            match allowed {
                true => Ok(uri.to_string()),
                false => Err(bad(
                    "is plain HTTP to a host that is neither loopback nor the container agent",
                )),
            }
        }
        _ => Err(bad("is neither http nor https")),
    }
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
    fn container_uris_in_clear_stay_on_the_host() {
        assert!(super::check_container_uri("http://127.0.0.1:9/creds").is_ok());
        assert!(super::check_container_uri("http://169.254.170.23/v1/credentials").is_ok());
        assert!(super::check_container_uri("https://creds.example.com/x").is_ok());
        let err = super::check_container_uri("http://10.0.0.5/creds")
            .err()
            .unwrap();
        assert!(err.to_string().contains("neither loopback"), "{err}");
    }

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
