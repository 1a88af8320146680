//! What the AWS sinks (sqs, lambda) share: credentials (given by reference, or the standard
//! chain of the server's environment), Signature Version 4, and a signed call over the node's
//! outbound HTTP client (so the address guard applies as for webhooks).
//!
//! # Layout
//! - `credentials.rs`: [`CredentialsSpec`] and the [`CredentialSource`] it resolves to.
//! - `chain.rs`: the standard chain of the server's environment.
//! - `remote.rs`: fetching temporary credentials (instance metadata, container, web identity).
//! - `sigv4.rs`: signing a request.
//! - `call.rs`: [`AwsClient`], a signed POST and the service's error, classified.

mod call;
mod chain;
mod credentials;
mod remote;
mod sigv4;

pub use call::{Answer, AwsClient, AwsError};
pub use credentials::{CredentialSource, Credentials, CredentialsSpec};

/// The region of an AWS host name (`sqs.eu-west-1.amazonaws.com` → `eu-west-1`).
pub fn region_of_host(host: &str, service: &str) -> Option<String> {
    let rest = host.strip_prefix(service)?.strip_prefix('.')?;
    let region = rest.split('.').next()?;
    (rest.contains(".amazonaws.com") && !region.is_empty()).then(|| region.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn regions_come_from_aws_host_names() {
        assert_eq!(
            super::region_of_host("sqs.eu-west-1.amazonaws.com", "sqs").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(super::region_of_host("127.0.0.1", "sqs"), None);
        assert_eq!(super::region_of_host("sqs.example.com", "sqs"), None);
    }
}
