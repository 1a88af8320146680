//! Temporary credentials fetched from where AWS hands them to a workload: the EC2 instance
//! metadata service (IMDSv2), the ECS/EKS container credentials endpoint, and STS
//! `AssumeRoleWithWebIdentity` with a projected token file (EKS service accounts).
//!
//! Their addresses come from the server's environment, set by the operator or the platform,
//! so they are reached without the address guard (the metadata service is link-local, which
//! the guard refuses for users' destinations).

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

use super::Credentials;
use crate::client::PlainClient;

/// One way of fetching temporary credentials.
#[derive(Debug, Clone)]
pub enum Provider {
    /// IMDSv2 at `endpoint` (`http://169.254.169.254` unless overridden).
    Instance { endpoint: String },
    /// The container endpoint, with the authorization token from a file (read each time:
    /// the platform rotates it) or a value.
    Container {
        uri: String,
        token_file: Option<String>,
        token: Option<String>,
    },
    /// STS at `endpoint`, the role assumed with the token in `token_file` (read each time).
    WebIdentity {
        endpoint: String,
        role_arn: String,
        session_name: String,
        token_file: String,
    },
}

/// Credentials and when they stop working.
pub struct Fetched {
    pub creds: Credentials,
    pub expires: Option<DateTime<Utc>>,
}

const IMDS_TIMEOUT: Duration = Duration::from_secs(2);
const CONTAINER_TIMEOUT: Duration = Duration::from_secs(5);
const STS_TIMEOUT: Duration = Duration::from_secs(10);

impl Provider {
    /// What it is, for errors and logs.
    pub fn describe(&self) -> String {
        match self {
            Provider::Instance { endpoint } => {
                format!("the instance metadata service at {endpoint}")
            }
            Provider::Container { uri, .. } => format!("the container credentials endpoint {uri}"),
            Provider::WebIdentity {
                endpoint, role_arn, ..
            } => format!("STS at {endpoint} (role {role_arn}, web identity)"),
        }
    }

    pub async fn fetch(&self, client: &PlainClient) -> Result<Fetched, String> {
        let result = match self {
            Provider::Instance { endpoint } => instance(client, endpoint).await,
            Provider::Container {
                uri,
                token_file,
                token,
            } => container(client, uri, token_file.as_deref(), token.as_deref()).await,
            Provider::WebIdentity {
                endpoint,
                role_arn,
                session_name,
                token_file,
            } => web_identity(client, endpoint, role_arn, session_name, token_file).await,
        };
        result.map_err(|e| format!("no AWS credentials from {}: {e}", self.describe()))
    }
}

async fn instance(client: &PlainClient, endpoint: &str) -> Result<Fetched, String> {
    let token = call(
        client,
        Method::PUT,
        &format!("{endpoint}/latest/api/token"),
        &[("x-aws-ec2-metadata-token-ttl-seconds", "21600".into())],
        Bytes::new(),
        IMDS_TIMEOUT,
    )
    .await?;
    let token = String::from_utf8_lossy(&token).trim().to_string();
    let auth = [("x-aws-ec2-metadata-token", token)];
    let base = format!("{endpoint}/latest/meta-data/iam/security-credentials/");
    let roles = call(
        client,
        Method::GET,
        &base,
        &auth,
        Bytes::new(),
        IMDS_TIMEOUT,
    )
    .await?;
    let roles = String::from_utf8_lossy(&roles);
    let role = roles
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or("the instance has no IAM role (no instance profile attached)")?;
    let body = call(
        client,
        Method::GET,
        &format!("{base}{role}"),
        &auth,
        Bytes::new(),
        IMDS_TIMEOUT,
    )
    .await?;
    from_json(&body)
}

async fn container(
    client: &PlainClient,
    uri: &str,
    token_file: Option<&str>,
    token: Option<&str>,
) -> Result<Fetched, String> {
    let token = match token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the authorization token file {path}: {e}"))?
                .trim()
                .to_string(),
        ),
        None => token.map(str::to_string),
    };
    let headers: Vec<(&str, String)> = token.into_iter().map(|t| ("authorization", t)).collect();
    let body = call(
        client,
        Method::GET,
        uri,
        &headers,
        Bytes::new(),
        CONTAINER_TIMEOUT,
    )
    .await?;
    from_json(&body)
}

async fn web_identity(
    client: &PlainClient,
    endpoint: &str,
    role_arn: &str,
    session_name: &str,
    token_file: &str,
) -> Result<Fetched, String> {
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| format!("cannot read the web identity token file {token_file}: {e}"))?;
    let form = [
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", role_arn),
        ("RoleSessionName", session_name),
        ("WebIdentityToken", token.trim()),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={}", form_encode(v)))
    .collect::<Vec<_>>()
    .join("&");
    // The request is not signed: the token is what authenticates it.
    let body = call(
        client,
        Method::POST,
        &format!("{}/", endpoint.trim_end_matches('/')),
        &[(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8".into(),
        )],
        Bytes::from(form),
        STS_TIMEOUT,
    )
    .await?;
    let text = String::from_utf8_lossy(&body);
    let field = |tag: &str| {
        xml_text(&text, tag).ok_or_else(|| format!("STS answered without <{tag}>: {text:.300}"))
    };
    Ok(Fetched {
        creds: Credentials {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: field("SecretAccessKey")?,
            session_token: Some(field("SessionToken")?),
        },
        expires: Some(expiration(&field("Expiration")?)?),
    })
}

/// The JSON the metadata service and the container endpoint both answer with.
fn from_json(body: &[u8]) -> Result<Fetched, String> {
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the answer is not credentials JSON ({e}): {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )
    })?;
    if let Some(code) = json.get("Code").and_then(|c| c.as_str())
        && code != "Success"
    {
        let message = json.get("Message").and_then(|m| m.as_str()).unwrap_or("");
        return Err(format!("answered {code}: {message}"));
    }
    let field = |name: &str| {
        json.get(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("the answer has no {name}"))
    };
    Ok(Fetched {
        creds: Credentials {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: field("SecretAccessKey")?,
            session_token: field("Token").ok(),
        },
        expires: field("Expiration")
            .ok()
            .map(|e| expiration(&e))
            .transpose()?,
    })
}

fn expiration(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("Expiration '{text}' is not an RFC 3339 time: {e}"))
}

/// The text of the first `<tag>…</tag>`, entities decoded.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let len = xml[start..].find(&format!("</{tag}>"))?;
    Some(
        xml[start..start + len]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// `application/x-www-form-urlencoded`: unreserved bytes as they are, the rest `%XX`.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// One request; the body of a 2xx answer, else an error naming the status and body.
async fn call(
    client: &PlainClient,
    method: Method,
    url: &str,
    headers: &[(&str, String)],
    body: Bytes,
    timeout: Duration,
) -> Result<Bytes, String> {
    let mut req = Request::builder().method(method.clone()).uri(url);
    for (name, value) in headers {
        req = req.header(*name, value.as_str());
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| format!("cannot build the request to {url}: {e}"))?;
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg = format!("{msg}: {s}");
                source = s.source();
            }
            format!("{method} {url}: {msg}")
        })?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|e| format!("{method} {url}: reading the answer: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let (status, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{method} {url}: no answer within {} s", timeout.as_secs()))??;
    if status != StatusCode::OK {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
        let detail = xml_text(&text, "Message").unwrap_or_else(|| text.trim().to_string());
        return Err(format!("{method} {url} answered {status}: {detail}"));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sts_and_metadata_answers_are_read() {
        let xml = "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult>\
                   <Credentials><AccessKeyId>ASIA1</AccessKeyId>\
                   <SecretAccessKey>s/k&amp;1</SecretAccessKey>\
                   <SessionToken>tok</SessionToken>\
                   <Expiration>2026-12-06T06:00:00Z</Expiration></Credentials>\
                   </AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";
        assert_eq!(
            super::xml_text(xml, "SecretAccessKey").as_deref(),
            Some("s/k&1")
        );
        let json = br#"{"Code":"Success","AccessKeyId":"ASIA2","SecretAccessKey":"s",
                        "Token":"t","Expiration":"2026-12-06T06:00:00Z"}"#;
        let f = super::from_json(json).unwrap();
        assert_eq!(f.creds.session_token.as_deref(), Some("t"));
        assert_eq!(f.expires.unwrap().to_rfc3339(), "2026-12-06T06:00:00+00:00");
        let err = super::from_json(br#"{"Code":"AssumeRoleUnauthorizedAccess","Message":"no"}"#)
            .err()
            .unwrap();
        assert!(err.contains("AssumeRoleUnauthorizedAccess"), "{err}");
        assert_eq!(super::form_encode("a b/c=d"), "a%20b%2Fc%3Dd");
    }
}
