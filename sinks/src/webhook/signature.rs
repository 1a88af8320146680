//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>), so receivers verify our
//! deliveries with any of that specification's libraries instead of code written for Tidemark.
//!
//! The signed content is `{msg_id}.{timestamp}.{body}`, HMAC-SHA256 keyed with the decoded
//! `whsec_` secret, sent as `v1,<standard base64>`. The message id and the timestamp are signed
//! with the body so a captured request cannot be replayed later or under another id. One request
//! may carry several signatures, space-separated: during a secret rotation we sign with the old
//! and the new secret and a receiver holding either one accepts the request.

use std::fmt;

use base64::Engine;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use http::{HeaderName, HeaderValue};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
pub const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
pub const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

pub const SECRET_PREFIX: &str = "whsec_";
/// 128 bits, the floor below which a key can be guessed. The specification asks producers to
/// generate at least 24 bytes (`generate_secret` makes 32); a shorter secret a user brings from a
/// system that issued one is still accepted down to this floor.
pub const MIN_SECRET_BYTES: usize = 16;
/// The specification's maximum (512 bits); a longer HMAC-SHA256 key is hashed down first and
/// gains nothing.
pub const MAX_SECRET_BYTES: usize = 64;

/// Secrets pasted from elsewhere sometimes lose their `=` padding; both forms decode the same.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("webhook secret must start with 'whsec_' followed by base64 (e.g. whsec_MfKQ9r8G…)")]
    MissingPrefix,
    #[error("webhook secret after 'whsec_' is not valid base64: {reason}")]
    BadBase64 { reason: String },
    #[error(
        "webhook secret decodes to {len} bytes; use {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} \
         random bytes, e.g. 'whsec_' + the output of `openssl rand -base64 32`"
    )]
    BadLength { len: usize },
    #[error("webhook message id '{id}' {reason}")]
    BadMessageId { id: String, reason: &'static str },
    #[error("no webhook secret to sign with")]
    NoSecrets,
    #[error(
        "webhook-timestamp {timestamp} is {skew}s away from now ({now}), more than the \
         {tolerance}s allowed: a replayed request, or a clock that is off"
    )]
    TimestampOutOfTolerance {
        timestamp: i64,
        now: i64,
        skew: u64,
        tolerance: u64,
    },
    #[error("webhook-signature holds no 'v1,' signature")]
    NoSignature,
    #[error("webhook-signature does not match the body with this secret")]
    Mismatch,
}

/// A `whsec_` signing secret. Holds the keyed HMAC state, not the text, and never prints it.
#[derive(Clone)]
pub struct Secret {
    /// HMAC keyed once at parse time; each signature starts from a clone of it.
    mac: HmacSha256,
    /// Decoded key length, the only thing `Debug` shows.
    len: usize,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Secret {
    /// Parses `whsec_<base64>`; surrounding whitespace (a pasted newline) is ignored.
    pub fn parse(text: &str) -> Result<Secret, SignatureError> {
        let encoded = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SignatureError::MissingPrefix)?;
        let key = SECRET_BASE64
            .decode(encoded)
            .map_err(|e| SignatureError::BadBase64 {
                reason: e.to_string(),
            })?;
        let len = key.len();
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&len) {
            return Err(SignatureError::BadLength { len });
        }
        let mac =
            HmacSha256::new_from_slice(&key).map_err(|_| SignatureError::BadLength { len })?;
        Ok(Secret { mac, len })
    }

    /// HMAC of `{msg_id}.{timestamp}.{body}`, ready to finalize or compare.
    fn mac_of(&self, msg_id: &str, timestamp_s: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        let mut digits = itoa::Buffer::new();
        mac.update(digits.format(timestamp_s).as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

/// A new `whsec_` secret of 32 random bytes (two v4 UUIDs: 244 bits from the OS-seeded CSPRNG).
pub fn generate_secret() -> String {
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(Uuid::new_v4().as_bytes());
    bytes.extend_from_slice(Uuid::new_v4().as_bytes());
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// The three Standard Webhooks headers for one request: `webhook-id`, `webhook-timestamp` (Unix
/// seconds of this attempt) and `webhook-signature` with one `v1,` signature per secret.
///
/// `msg_id` must stay the same across retries (receivers deduplicate on it) and may not contain
/// `.`, which would let the boundary between id and timestamp shift.
pub fn sign(
    msg_id: &str,
    timestamp_s: i64,
    body: &[u8],
    secrets: &[Secret],
) -> Result<[(HeaderName, HeaderValue); 3], SignatureError> {
    let id_value = message_id_header(msg_id)?;
    if secrets.is_empty() {
        return Err(SignatureError::NoSecrets);
    }
    // `v1,` and 44 characters of base64 per secret, space-separated, written in one buffer.
    let mut signatures = String::with_capacity(secrets.len() * 48);
    for secret in secrets {
        if !signatures.is_empty() {
            signatures.push(' ');
        }
        let tag = secret.mac_of(msg_id, timestamp_s, body).finalize();
        signatures.push_str("v1,");
        STANDARD.encode_string(tag.into_bytes(), &mut signatures);
    }
    let signature_value =
        HeaderValue::try_from(signatures).expect("'v1,' and base64 are visible ASCII");
    Ok([
        (WEBHOOK_ID, id_value),
        (WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp_s)),
        (WEBHOOK_SIGNATURE, signature_value),
    ])
}

fn message_id_header(msg_id: &str) -> Result<HeaderValue, SignatureError> {
    let bad = |reason| SignatureError::BadMessageId {
        id: msg_id.to_string(),
        reason,
    };
    if msg_id.is_empty() {
        return Err(bad("is empty"));
    }
    if msg_id.contains('.') {
        return Err(bad("contains '.', the separator of the signed content"));
    }
    if !msg_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("must be visible ASCII without spaces"));
    }
    HeaderValue::try_from(msg_id).map_err(|_| bad("is not a valid header value"))
}

/// Checks a request's signature header against `secret`: the timestamp must be within
/// `tolerance_s` of `now_s` (replay protection), and one `v1` signature must match. The
/// comparison is constant-time so a receiver cannot be used as a signing oracle.
pub fn verify(
    msg_id: &str,
    timestamp_s: i64,
    body: &[u8],
    signature_header: &str,
    secret: &Secret,
    now_s: i64,
    tolerance_s: u64,
) -> Result<(), SignatureError> {
    let skew = now_s.abs_diff(timestamp_s);
    if skew > tolerance_s {
        return Err(SignatureError::TimestampOutOfTolerance {
            timestamp: timestamp_s,
            now: now_s,
            skew,
            tolerance: tolerance_s,
        });
    }
    let expected = secret.mac_of(msg_id, timestamp_s, body);
    let mut seen_v1 = false;
    // Other schemes (`v1a,` ed25519) may sit in the same header; they are not ours to check.
    for candidate in signature_header
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
    {
        seen_v1 = true;
        let Ok(tag) = STANDARD.decode(candidate) else {
            continue;
        };
        if expected.clone().verify_slice(&tag).is_ok() {
            return Ok(());
        }
    }
    Err(if seen_v1 {
        SignatureError::Mismatch
    } else {
        SignatureError::NoSignature
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks reference vector.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1_614_265_330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn header<'h>(headers: &'h [(HeaderName, HeaderValue)], name: &HeaderName) -> &'h str {
        let (_, v) = headers.iter().find(|(n, _)| n == name).unwrap();
        v.to_str().unwrap()
    }

    #[test]
    fn matches_the_specification_vector() {
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        let headers = sign(SPEC_ID, SPEC_TS, SPEC_BODY, std::slice::from_ref(&secret)).unwrap();
        assert_eq!(header(&headers, &WEBHOOK_ID), SPEC_ID);
        assert_eq!(header(&headers, &WEBHOOK_TIMESTAMP), "1614265330");
        assert_eq!(header(&headers, &WEBHOOK_SIGNATURE), SPEC_SIGNATURE);
        verify(
            SPEC_ID,
            SPEC_TS,
            SPEC_BODY,
            SPEC_SIGNATURE,
            &secret,
            SPEC_TS,
            300,
        )
        .unwrap();
    }

    #[test]
    fn rotation_signs_with_every_secret() {
        let old = Secret::parse(SPEC_SECRET).unwrap();
        let new = Secret::parse(&generate_secret()).unwrap();
        let headers = sign(SPEC_ID, SPEC_TS, SPEC_BODY, &[new.clone(), old.clone()]).unwrap();
        let signatures = header(&headers, &WEBHOOK_SIGNATURE);
        assert_eq!(signatures.split(' ').count(), 2);
        assert!(signatures.ends_with(SPEC_SIGNATURE));
        for secret in [&old, &new] {
            verify(
                SPEC_ID, SPEC_TS, SPEC_BODY, signatures, secret, SPEC_TS, 300,
            )
            .unwrap();
        }
        let other = Secret::parse(&generate_secret()).unwrap();
        let err = verify(
            SPEC_ID, SPEC_TS, SPEC_BODY, signatures, &other, SPEC_TS, 300,
        );
        assert_eq!(err, Err(SignatureError::Mismatch));
    }

    #[test]
    fn tampering_fails() {
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        let check = |id, ts, body: &[u8]| verify(id, ts, body, SPEC_SIGNATURE, &secret, ts, 300);
        assert_eq!(
            check(SPEC_ID, SPEC_TS, br#"{"test": 2432232315}"#),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check("msg_other", SPEC_TS, SPEC_BODY),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(SPEC_ID, SPEC_TS + 1, SPEC_BODY),
            Err(SignatureError::Mismatch)
        );
        let no_v1 = verify(
            SPEC_ID, SPEC_TS, SPEC_BODY, "v1a,AAAA", &secret, SPEC_TS, 300,
        );
        assert_eq!(no_v1, Err(SignatureError::NoSignature));
        let garbage = verify(SPEC_ID, SPEC_TS, SPEC_BODY, "v1,!!!", &secret, SPEC_TS, 300);
        assert_eq!(garbage, Err(SignatureError::Mismatch));
    }

    #[test]
    fn old_or_future_timestamps_fail() {
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        let at = |now| {
            verify(
                SPEC_ID,
                SPEC_TS,
                SPEC_BODY,
                SPEC_SIGNATURE,
                &secret,
                now,
                300,
            )
        };
        assert!(at(SPEC_TS + 300).is_ok());
        let err = at(SPEC_TS + 301).unwrap_err();
        assert!(matches!(
            err,
            SignatureError::TimestampOutOfTolerance { skew: 301, .. }
        ));
        assert!(err.to_string().contains("replayed"), "{err}");
        assert!(at(SPEC_TS - 301).is_err());
        assert!(at(i64::MIN).is_err());
    }

    #[test]
    fn secrets_are_checked_and_never_printed() {
        assert_eq!(
            Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            SignatureError::MissingPrefix
        );
        assert!(matches!(
            Secret::parse("whsec_not base64!"),
            Err(SignatureError::BadBase64 { .. })
        ));
        let short = format!("whsec_{}", STANDARD.encode([7u8; 15]));
        assert_eq!(
            Secret::parse(&short).unwrap_err(),
            SignatureError::BadLength { len: 15 }
        );
        let long = format!("whsec_{}", STANDARD.encode([7u8; 65]));
        assert!(Secret::parse(&long).is_err());
        // Unpadded and newline-terminated forms are the same secret.
        let unpadded = format!(
            "whsec_{}\n",
            STANDARD.encode([7u8; 16]).trim_end_matches('=')
        );
        Secret::parse(&unpadded).unwrap();

        let secret = Secret::parse(SPEC_SECRET).unwrap();
        let shown = format!("{secret:?}");
        assert_eq!(shown, "Secret { len: 24, .. }");
        assert!(!shown.contains("MfKQ"));
    }

    #[test]
    fn generated_secrets_are_fresh_and_parse() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a, b);
        assert!(a.starts_with(SECRET_PREFIX));
        let decoded = STANDARD.decode(&a[SECRET_PREFIX.len()..]).unwrap();
        assert_eq!(decoded.len(), 32);
        Secret::parse(&a).unwrap();
    }

    #[test]
    fn message_ids_are_checked() {
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        for id in ["", "msg.1", "msg 1", "msé"] {
            let err = sign(id, SPEC_TS, SPEC_BODY, std::slice::from_ref(&secret)).unwrap_err();
            assert!(matches!(err, SignatureError::BadMessageId { .. }), "{id}");
        }
        assert_eq!(
            sign(SPEC_ID, SPEC_TS, SPEC_BODY, &[]).unwrap_err(),
            SignatureError::NoSecrets
        );
    }
}
