//! The one outbound HTTP client of a node: pooled keep-alive connections (a webhook endpoint
//! gets its connections reused across events and subscriptions), TLS verified against the web
//! PKI roots plus, optionally, a private CA bundle, and the address guard on every connection.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::guard::{DestinationPolicy, GuardedResolver};
use crate::{Error, Result};

pub type HttpClient = Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

/// A client without the address guard, for what the operator points at itself: the CLI's
/// `--server` and other nodes of the cluster. `extra_roots` as for [`http_client`]; `flag`
/// names where the file came from in errors.
pub type PlainClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub fn plain_client(extra_roots: Option<&Path>, flag: &str) -> Result<PlainClient> {
    Ok(plain_with(tls_config(extra_roots, flag)?))
}

fn plain_with(tls: rustls::ClientConfig) -> PlainClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https)
}

/// What sinks reach their destinations with: the HTTP client, and for sinks that speak their
/// own protocol over TCP (redis-stream), the address policy and the TLS configuration it uses.
#[derive(Clone)]
pub struct Outbound {
    pub http: HttpClient,
    pub policy: DestinationPolicy,
    pub tls: Arc<rustls::ClientConfig>,
}

impl Outbound {
    /// A client without the guard, with the same TLS roots: for addresses the operator set
    /// in the server's environment (the AWS credential endpoints), never for a user's.
    pub fn unguarded(&self) -> PlainClient {
        plain_with((*self.tls).clone())
    }
}

/// The node's [`Outbound`]; `extra_roots` as for [`http_client`].
pub fn outbound(policy: DestinationPolicy, extra_roots: Option<&Path>) -> Result<Outbound> {
    let tls = tls_config(extra_roots, "--webhook-ca-file")?;
    Ok(Outbound {
        http: guarded_client(policy, tls.clone()),
        policy,
        tls: Arc::new(tls),
    })
}

/// `extra_roots`: a PEM file of CA certificates trusted besides the web PKI (endpoints inside
/// a company network signed by its own CA).
pub fn http_client(policy: DestinationPolicy, extra_roots: Option<&Path>) -> Result<HttpClient> {
    let tls = tls_config(extra_roots, "--webhook-ca-file")?;
    Ok(guarded_client(policy, tls))
}

fn guarded_client(policy: DestinationPolicy, tls: rustls::ClientConfig) -> HttpClient {
    let mut http = HttpConnector::new_with_resolver(GuardedResolver { policy });
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(https)
}

/// Web PKI roots plus the CA certificates in `extra_roots`.
fn tls_config(extra_roots: Option<&Path>, flag: &str) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_roots {
        let bad = |message: String| Error::invalid(flag, message);
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        let mut added = 0;
        for cert in certs {
            let cert = cert.map_err(|e| bad(format!("{}: {e}", path.display())))?;
            roots.add(cert).map_err(|e| {
                bad(format!(
                    "{}: not a usable CA certificate: {e}",
                    path.display()
                ))
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(bad(format!("{} holds no PEM certificate", path.display())));
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("the ring provider supports the default TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth())
}
