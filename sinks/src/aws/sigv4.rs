//! AWS Signature Version 4 for the services we call with a body (SQS's JSON protocol,
//! Lambda's Invoke): every header given is signed, and the payload's SHA-256 is part of the
//! signature. Paths are encoded once more for the canonical request, as AWS does for every
//! service but S3.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::Credentials;

/// Where a request goes and what it carries, before signing.
pub struct Unsigned<'a> {
    pub method: &'a str,
    /// The path as sent (already percent-encoded), no query.
    pub path: &'a str,
    /// Lower-case names; must include `host`.
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
}

/// The headers to send: those given, `x-amz-date`, `x-amz-security-token` (temporary
/// credentials) and `authorization`.
pub fn sign(
    mut req: Unsigned<'_>,
    creds: &Credentials,
    region: &str,
    service: &str,
    now: DateTime<Utc>,
) -> Vec<(String, String)> {
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let day = &amz_date[..8];
    req.headers.push(("x-amz-date".into(), amz_date.clone()));
    if let Some(token) = &creds.session_token {
        req.headers
            .push(("x-amz-security-token".into(), token.clone()));
    }
    req.headers.sort();
    let signed_headers = req
        .headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let mut canonical = format!("{}\n{}\n\n", req.method, canonical_path(req.path));
    for (name, value) in &req.headers {
        canonical.push_str(name);
        canonical.push(':');
        canonical.push_str(&value.split_whitespace().collect::<Vec<_>>().join(" "));
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&signed_headers);
    canonical.push('\n');
    canonical.push_str(&hex(&Sha256::digest(req.body)));

    let scope = format!("{day}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(
        format!("AWS4{}", creds.secret_access_key).as_bytes(),
        day.as_bytes(),
    );
    for part in [region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex(&hmac(&key, to_sign.as_bytes()));
    req.headers.push((
        "authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, \
             Signature={signature}",
            creds.access_key_id
        ),
    ));
    req.headers
}

/// Every byte but unreserved ones and `/` percent-encoded (so `%` of the sent path becomes
/// `%25`).
fn canonical_path(path: &str) -> String {
    let path = if path.is_empty() { "/" } else { path };
    let mut out = String::with_capacity(path.len() + 16);
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    fn signature(headers: &[(String, String)]) -> String {
        let auth = &headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .unwrap()
            .1;
        auth.rsplit("Signature=").next().unwrap().to_string()
    }

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2015-08-30T12:36:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// AWS's `get-vanilla` example of its Signature Version 4 test suite.
    #[test]
    fn the_aws_example_request_signs_as_documented() {
        let req = Unsigned {
            method: "GET",
            path: "/",
            headers: vec![("host".into(), "example.amazonaws.com".into())],
            body: b"",
        };
        let headers = sign(req, &example(), "us-east-1", "service", at());
        assert_eq!(
            signature(&headers),
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    /// The same request signed by botocore (`SigV4Auth`, 1.43): an ARN in the path is
    /// encoded twice in the canonical request.
    #[test]
    fn an_encoded_path_signs_as_botocore_does() {
        let req = Unsigned {
            method: "POST",
            path: "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A1%3Afunction%3Af/invocations",
            headers: vec![
                ("host".into(), "lambda.us-east-1.amazonaws.com".into()),
                ("content-type".into(), "application/json".into()),
            ],
            body: br#"{"a":1}"#,
        };
        let headers = sign(req, &example(), "us-east-1", "service", at());
        assert_eq!(
            signature(&headers),
            "a348dcc92b0290ce4981a60c37f93013a225199b52721c01e5c08210603306a0"
        );
    }
}
