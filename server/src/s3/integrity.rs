//! Integrity of uploaded bytes, as S3 checks it: `Content-MD5` (RFC 1864), and the flexible
//! checksums the AWS SDKs send by default (CRC32, CRC32C, CRC64NVME, SHA-1, SHA-256) as an
//! `x-amz-checksum-*` header or as a trailer after an `aws-chunked` body. The digests are
//! computed while the body streams into the store; on a mismatch the body ends with an error
//! instead of ending, so the store keeps nothing (no blob, no part replaced) and no event is
//! appended, and the upload is refused with S3's code.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{Stream, StreamExt};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyper::HeaderMap;
use s3s::checksum::ChecksumHasher;
use s3s::crypto::{Checksum as _, Crc32, Crc32c, Crc64Nvme, Md5, Sha1, Sha256};
use s3s::{S3Error, S3Result, s3_error};

/// A flexible checksum algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

const ALL: [Algorithm; 5] = [
    Algorithm::Crc32,
    Algorithm::Crc32c,
    Algorithm::Crc64Nvme,
    Algorithm::Sha1,
    Algorithm::Sha256,
];

impl Algorithm {
    /// S3's name (`x-amz-sdk-checksum-algorithm`, `ChecksumAlgorithm`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "CRC32",
            Algorithm::Crc32c => "CRC32C",
            Algorithm::Crc64Nvme => "CRC64NVME",
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
        }
    }

    pub fn parse(name: &str) -> Option<Algorithm> {
        ALL.into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    /// The header (and trailer) that carries it.
    pub fn header(self) -> String {
        format!("x-amz-checksum-{}", self.name().to_lowercase())
    }

    /// Digest length in bytes.
    fn len(self) -> usize {
        match self {
            Algorithm::Crc32 | Algorithm::Crc32c => 4,
            Algorithm::Crc64Nvme => 8,
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
        }
    }

    fn hasher(self) -> ChecksumHasher {
        let mut h = ChecksumHasher::default();
        match self {
            Algorithm::Crc32 => h.crc32 = Some(Crc32::new()),
            Algorithm::Crc32c => h.crc32c = Some(Crc32c::new()),
            Algorithm::Crc64Nvme => h.crc64nvme = Some(Crc64Nvme::new()),
            Algorithm::Sha1 => h.sha1 = Some(Sha1::new()),
            Algorithm::Sha256 => h.sha256 = Some(Sha256::new()),
        }
        h
    }
}

/// A checksum: its algorithm and base64 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sum {
    pub algorithm: Algorithm,
    pub value: String,
}

impl Sum {
    /// The value when it is of `algorithm` (to fill the `Checksum*` fields of an answer).
    pub fn of(this: Option<&Sum>, algorithm: Algorithm) -> Option<String> {
        this.filter(|s| s.algorithm == algorithm)
            .map(|s| s.value.clone())
    }
}

/// What one upload says its bytes are.
pub struct Expected {
    /// Hex MD5 from `Content-MD5`.
    md5: Option<String>,
    algorithm: Option<Algorithm>,
    /// From the header; `None` when it comes as a trailer (or is only asked to be computed).
    value: Option<String>,
    trailer: Option<s3s::TrailingHeaders>,
    running: Mutex<Running>,
}

/// The digests being computed, then the outcome.
#[derive(Default)]
struct Running {
    md5: Option<Md5>,
    hasher: Option<ChecksumHasher>,
    failure: Option<S3Error>,
    sum: Option<Sum>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

impl Expected {
    /// What the request's headers declare: `InvalidDigest` for a `Content-MD5` that is not
    /// 16 base64 bytes, `InvalidRequest` for a checksum that cannot be one.
    pub fn of(headers: &HeaderMap, trailer: Option<s3s::TrailingHeaders>) -> S3Result<Expected> {
        let md5 = match header(headers, "content-md5") {
            None => None,
            Some(text) => {
                let bytes = STANDARD
                    .decode(text)
                    .ok()
                    .filter(|b| b.len() == 16)
                    .ok_or_else(|| {
                        s3_error!(
                            InvalidDigest,
                            "the Content-MD5 you specified is not valid: '{text}' is not the \
                             base64 of 16 bytes"
                        )
                    })?;
                Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
            }
        };
        let in_headers: Vec<Algorithm> = ALL
            .into_iter()
            .filter(|a| headers.contains_key(a.header().as_str()))
            .collect();
        if in_headers.len() > 1 {
            return Err(s3_error!(
                InvalidRequest,
                "expecting a single x-amz-checksum- header; multiple checksum types are not allowed"
            ));
        }
        let from_trailer = match header(headers, "x-amz-trailer") {
            None => None,
            Some(name) => Some(
                ALL.into_iter()
                    .find(|a| a.header().eq_ignore_ascii_case(name))
                    .ok_or_else(|| {
                        s3_error!(
                            InvalidRequest,
                            "x-amz-trailer names '{name}', which is not a checksum header"
                        )
                    })?,
            ),
        };
        let declared = match header(headers, "x-amz-sdk-checksum-algorithm") {
            None => None,
            Some(name) => Some(Algorithm::parse(name).ok_or_else(|| {
                s3_error!(
                    InvalidRequest,
                    "x-amz-sdk-checksum-algorithm '{name}' is none of CRC32, CRC32C, \
                     CRC64NVME, SHA1, SHA256"
                )
            })?),
        };
        let algorithm = in_headers.first().copied().or(from_trailer).or(declared);
        if let (Some(a), Some(d)) = (algorithm, declared)
            && a != d
        {
            return Err(s3_error!(
                InvalidRequest,
                "x-amz-sdk-checksum-algorithm says {} but the checksum sent is {}",
                d.name(),
                a.name()
            ));
        }
        let value = match in_headers.first() {
            Some(a) => Some(valid_value(*a, header(headers, &a.header()).unwrap_or(""))?),
            None => None,
        };
        Ok(Expected {
            running: Mutex::new(Running {
                md5: md5.is_some().then(Md5::new),
                hasher: algorithm.map(Algorithm::hasher),
                ..Running::default()
            }),
            md5,
            algorithm,
            value,
            trailer: trailer.filter(|_| from_trailer.is_some()),
        })
    }

    /// `body` with its digests checked when it ends: a mismatch ends it with an error instead
    /// (the refusal is then [`Expected::failure`]).
    pub fn check<S>(
        self: &Arc<Self>,
        body: S,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + use<S>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let state = (Box::pin(body), self.clone(), false);
        futures::stream::unfold(state, |(mut body, me, done)| async move {
            if done {
                return None;
            }
            match body.next().await {
                Some(Ok(chunk)) => {
                    me.update(&chunk);
                    Some((Ok(chunk), (body, me, false)))
                }
                Some(Err(e)) => Some((Err(e), (body, me, true))),
                None => match me.finish() {
                    Ok(()) => None,
                    Err(refusal) => {
                        let e = std::io::Error::other(
                            refusal.message().unwrap_or("BadDigest").to_string(),
                        );
                        me.running.lock().unwrap().failure = Some(refusal);
                        Some((Err(e), (body, me, true)))
                    }
                },
            }
        })
    }

    fn update(&self, bytes: &[u8]) {
        let mut r = self.running.lock().unwrap();
        if let Some(m) = r.md5.as_mut() {
            m.update(bytes);
        }
        if let Some(h) = r.hasher.as_mut() {
            h.update(bytes);
        }
    }

    /// Why the body was refused, if it was.
    pub fn failure(&self) -> Option<S3Error> {
        self.running.lock().unwrap().failure.take()
    }

    /// The checksum computed, when one was sent or asked for (to return and keep).
    pub fn sum(&self) -> Option<Sum> {
        self.running.lock().unwrap().sum.clone()
    }

    /// At the end of the body: `BadDigest` when a digest differs.
    fn finish(&self) -> S3Result<()> {
        let mut running = self.running.lock().unwrap();
        if let (Some(md5), Some(hasher)) = (&self.md5, running.md5.take()) {
            let got: String = hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if *md5 != got {
                return Err(s3_error!(
                    BadDigest,
                    "the Content-MD5 you specified did not match what was received"
                ));
            }
        }
        let Some(algorithm) = self.algorithm else {
            return Ok(());
        };
        let computed = running
            .hasher
            .take()
            .map(ChecksumHasher::finalize)
            .and_then(|c| match algorithm {
                Algorithm::Crc32 => c.checksum_crc32,
                Algorithm::Crc32c => c.checksum_crc32c,
                Algorithm::Crc64Nvme => c.checksum_crc64nvme,
                Algorithm::Sha1 => c.checksum_sha1,
                Algorithm::Sha256 => c.checksum_sha256,
            })
            .unwrap_or_default();
        let expected = match (&self.value, &self.trailer) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(t)) => {
                let sent = t
                    .read(|h| {
                        h.get(algorithm.header().as_str())
                            .and_then(|v| v.to_str().ok())
                            .map(|v| v.trim().to_string())
                    })
                    .flatten()
                    .ok_or_else(|| {
                        s3_error!(
                            InvalidRequest,
                            "the body ended without the {} trailer it announced",
                            algorithm.header()
                        )
                    })?;
                Some(valid_value(algorithm, &sent)?)
            }
            (None, None) => None,
        };
        if let Some(expected) = expected
            && expected != computed
        {
            return Err(s3_error!(
                BadDigest,
                "the {} you specified did not match the calculated checksum",
                algorithm.name()
            ));
        }
        running.sum = Some(Sum {
            algorithm,
            value: computed,
        });
        Ok(())
    }
}

/// `value` when it is the base64 of a digest of `algorithm`'s length.
fn valid_value(algorithm: Algorithm, value: &str) -> S3Result<String> {
    match STANDARD.decode(value) {
        Ok(b) if b.len() == algorithm.len() => Ok(value.to_string()),
        _ => Err(s3_error!(
            InvalidRequest,
            "value for {} header is invalid: '{value}' is not the base64 of {} bytes",
            algorithm.header(),
            algorithm.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn run(expected: Expected, body: &'static [u8]) -> (Arc<Expected>, bool) {
        let expected = Arc::new(expected);
        let chunks = vec![
            Ok(Bytes::from_static(&body[..2])),
            Ok(Bytes::from_static(&body[2..])),
        ];
        let out: Vec<_> = futures::executor::block_on(
            expected
                .check(futures::stream::iter(chunks))
                .collect::<Vec<_>>(),
        );
        let ok = out.iter().all(|c| c.is_ok());
        (expected, ok)
    }

    #[test]
    fn digests_are_checked_against_the_body() {
        // CRC32 of "hello" is 0x3610a686; its MD5 is 5d41402abc4b2a76b9719d911017c592.
        let given = headers(&[
            ("x-amz-checksum-crc32", "NhCmhg=="),
            ("content-md5", "XUFAKrxLKna5cZ2REBfFkg=="),
        ]);
        let (e, ok) = run(Expected::of(&given, None).unwrap(), b"hello");
        assert!(ok);
        assert_eq!(e.sum().unwrap().value, "NhCmhg==");
        let bad = headers(&[("x-amz-checksum-crc32", "AAAAAA==")]);
        let (e, ok) = run(Expected::of(&bad, None).unwrap(), b"hello");
        assert!(!ok);
        assert_eq!(e.failure().unwrap().code().as_str(), "BadDigest");
        let bad = headers(&[("content-md5", "AAAAAAAAAAAAAAAAAAAAAA==")]);
        let (e, ok) = run(Expected::of(&bad, None).unwrap(), b"hello");
        assert!(!ok);
        assert_eq!(e.failure().unwrap().code().as_str(), "BadDigest");
        let e = Expected::of(&headers(&[("content-md5", "nope")]), None)
            .err()
            .unwrap();
        assert_eq!(e.code().as_str(), "InvalidDigest");
        let e = Expected::of(&headers(&[("x-amz-checksum-sha256", "AAAA")]), None)
            .err()
            .unwrap();
        assert_eq!(e.code().as_str(), "InvalidRequest");
    }
}
