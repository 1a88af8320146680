//! TLS for a listener (rustls, ring): the operator's certificate chain and key from PEM files,
//! picked up again when the files change, and optionally client certificates checked
//! against a CA (mTLS).
//!
//! Reloading: each handshake compares the files' identity (inode, size, modification time)
//! with the last one read, which costs two `stat` calls against a handshake's milliseconds of
//! crypto, and reads them again when it differs; SIGHUP forces a read. A pair that does not
//! load (a key written before its certificate, a half-written file) is refused with a warning
//! and the previous certificate stays in use, so a renewal never takes the listener down.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

/// Where a listener's TLS material is (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates must be signed by a CA in this file.
    pub client_ca: Option<PathBuf>,
}

/// A listener's TLS: what accepts connections, and the certificate behind it.
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub certificate: Arc<ReloadingCert>,
}

impl Tls {
    /// Load the files (a problem names the file and the flag) and build the server side.
    pub fn new(files: &TlsFiles, flag: &str) -> anyhow::Result<Tls> {
        let provider = Arc::new(provider());
        let certificate = Arc::new(ReloadingCert::load(
            files.cert.clone(),
            files.key.clone(),
            provider.clone(),
            flag,
        )?);
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default TLS versions");
        let builder = match &files.client_ca {
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certs(path).with_context(|| format!("{flag}-client-ca"))? {
                    roots.add(cert).with_context(|| {
                        format!(
                            "{flag}-client-ca {}: not a usable CA certificate",
                            path.display()
                        )
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .with_context(|| format!("{flag}-client-ca {}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(certificate.clone());
        // Our order, not the client's: AES-128-GCM first (see `provider`).
        config.ignore_client_order = true;
        // Both front ends speak HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            certificate,
        })
    }
}

/// ring's suites with AES-128-GCM ahead of AES-256-GCM: both are what every client offers,
/// and the shorter key schedule moves bulk data (object bodies) about a third faster, which
/// shows in the S3 GET figures (docs/PERFORMANCE.md).
fn provider() -> CryptoProvider {
    use rustls::crypto::ring::{cipher_suite as cs, default_provider};
    let mut provider = default_provider();
    let preferred = [
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ];
    let rest: Vec<_> = provider
        .cipher_suites
        .iter()
        .filter(|s| !preferred.iter().any(|p| p.suite() == s.suite()))
        .copied()
        .collect();
    provider.cipher_suites = preferred.into_iter().chain(rest).collect();
    provider
}

/// What tells one version of a file from the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    size: u64,
    modified_ns: i128,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        inode: m.ino(),
        size: m.size(),
        modified_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

/// The certificate and key files' stamps when last read (successfully or not).
type Stamps = Option<(Stamp, Stamp)>;

/// The serving certificate, read again when its files change.
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    /// The files' stamps when last read, and the key in use.
    state: Mutex<(Stamps, Arc<CertifiedKey>)>,
    /// Certificates loaded after the first (for metrics and tests).
    pub reloads: AtomicU64,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    fn load(
        cert: PathBuf,
        key: PathBuf,
        provider: Arc<CryptoProvider>,
        flag: &str,
    ) -> anyhow::Result<ReloadingCert> {
        let stamps = stamp(&cert).zip(stamp(&key));
        let first =
            load_pair(&cert, &key, &provider).with_context(|| format!("{flag}-cert/-key"))?;
        Ok(ReloadingCert {
            cert,
            key,
            provider,
            state: Mutex::new((stamps, Arc::new(first))),
            reloads: AtomicU64::new(0),
        })
    }

    /// The key to serve, read again first if the files changed since the last look.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let now = stamp(&self.cert).zip(stamp(&self.key));
        let mut state = self.state.lock().unwrap();
        // A file missing for a moment (replaced by rename) keeps the certificate in use.
        if now.is_some() && now != state.0 {
            state.0 = now;
            match load_pair(&self.cert, &self.key, &self.provider) {
                Ok(k) => {
                    state.1 = Arc::new(k);
                    self.reloads.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("TLS certificate reloaded from {}", self.cert.display());
                }
                Err(e) => tracing::warn!(
                    "TLS certificate files changed but do not load ({e:#}); still serving the \
                     previous certificate"
                ),
            }
        }
        state.1.clone()
    }

    /// Read the files on the next handshake whatever their stamps say (SIGHUP).
    pub fn reload_next(&self) {
        self.state.lock().unwrap().0 = None;
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not PEM", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// A certificate chain and its private key, checked to belong together.
fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let chain = read_certs(cert)?;
    let private = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("{} holds no PEM private key", key.display()))?;
    CertifiedKey::from_der(chain, private, provider).with_context(|| {
        format!(
            "the key in {} does not go with the certificate in {}",
            key.display(),
            cert.display()
        )
    })
}

/// Read every listener's certificate again on SIGHUP.
pub fn reload_on_sighup(certs: Vec<Arc<ReloadingCert>>) {
    if certs.is_empty() {
        return;
    }
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reading the TLS certificates again");
            for c in &certs {
                c.reload_next();
                let _ = c.current();
            }
        }
    });
}
