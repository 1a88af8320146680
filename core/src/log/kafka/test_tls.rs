//! TLS in front of a test broker. Tansu 0.6 parses `--cert` and `--key` but never uses them
//! (tansu-broker 0.6.0, `src/broker.rs`: `let _acceptor = ...`), so the tests put stunnel in
//! front of it: the broker listens in plain text on one loopback port and advertises another,
//! where stunnel accepts TLS and forwards to the broker. Clients only ever learn the TLS port.
//!
//! Certificates are made with the `openssl` command in a scratch directory: a throwaway CA, and
//! a server certificate it signs for `127.0.0.1` and `localhost` (librdkafka checks the name).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::test_broker::{BrokerOptions, TestBroker, free_port, listens, scratch_dir};

/// A throwaway certificate authority.
pub struct TestCa {
    /// The CA certificate (PEM): what `--kafka-ssl-ca-file` names.
    pub cert: PathBuf,
    key: PathBuf,
    dir: PathBuf,
    name: String,
}

/// A certificate and its private key (PEM).
pub struct CertAndKey {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `openssl` with the words of `line` (paths here have no spaces), then `subject`.
fn openssl(line: &str, subject: Option<&str>) {
    let mut args: Vec<&str> = line.split_whitespace().collect();
    if let Some(subject) = subject {
        args.extend(["-subj", subject]);
    }
    let out = Command::new("openssl")
        .args(&args)
        .output()
        .expect("the TLS tests need the openssl command (scripts/setup.sh test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An EC key and its certificate request or self-signed certificate.
const NEW_EC_KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

impl TestCa {
    /// A new CA named `name`, its files in `dir`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        openssl(
            &format!(
                "req -x509 {NEW_EC_KEY} -days 2 -keyout {} -out {}",
                key.display(),
                cert.display()
            ),
            Some(&format!("/CN=Tidemark test {name}")),
        );
        TestCa {
            cert,
            key,
            dir: dir.to_path_buf(),
            name: name.to_string(),
        }
    }

    /// A server certificate for `127.0.0.1` and `localhost`, signed by this CA.
    pub fn server_cert(&self) -> CertAndKey {
        self.issue(
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
            None,
        )
    }

    /// A client certificate signed by this CA, its key encrypted with `key_password` if given.
    pub fn client_cert(&self, key_password: Option<&str>) -> CertAndKey {
        self.issue("client", "extendedKeyUsage=clientAuth\n", key_password)
    }

    fn issue(&self, role: &str, extensions: &str, key_password: Option<&str>) -> CertAndKey {
        let base = self.dir.join(format!("{}-{role}", self.name));
        let (key, csr, cert, ext) = (
            base.with_extension("key"),
            base.with_extension("csr"),
            base.with_extension("pem"),
            base.with_extension("ext"),
        );
        std::fs::write(&ext, format!("basicConstraints=CA:FALSE\n{extensions}"))
            .expect("write extensions");
        let new_key = match key_password {
            Some(password) => NEW_EC_KEY.replace("-nodes", &format!("-passout pass:{password}")),
            None => NEW_EC_KEY.to_string(),
        };
        openssl(
            &format!(
                "req {new_key} -keyout {} -out {}",
                key.display(),
                csr.display()
            ),
            Some(&format!("/CN=127.0.0.1 {role}")),
        );
        openssl(
            &format!(
                "x509 -req -in {} -CA {} -CAkey {} -CAcreateserial -days 2 -extfile {} -out {}",
                csr.display(),
                self.cert.display(),
                self.key.display(),
                ext.display(),
                cert.display()
            ),
            None,
        );
        CertAndKey { cert, key }
    }
}

/// The stunnel binary: `$STUNNEL_BIN`, else `stunnel4` or `stunnel` on `PATH`.
fn stunnel_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("STUNNEL_BIN") {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .flat_map(|d| [d.join("stunnel4"), d.join("stunnel")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("the TLS tests need stunnel: `apt-get install stunnel4` (scripts/setup.sh test)")
        })
}

/// stunnel in the foreground: TLS on `port`, plain text to `backend`. Killed when dropped.
pub struct TlsTerminator {
    child: Child,
    /// The port TLS clients connect to.
    pub port: u16,
    backend: u16,
    /// Clients must present a certificate signed by this CA (mutual TLS).
    client_ca: Option<PathBuf>,
    dir: PathBuf,
}

impl TlsTerminator {
    /// Start on `port` with `cert` (and requiring client certificates signed by `client_ca`);
    /// `None` if another process holds the port.
    pub fn start(
        dir: &Path,
        port: u16,
        backend: u16,
        cert: &CertAndKey,
        client_ca: Option<&Path>,
    ) -> Option<TlsTerminator> {
        let config = dir.join(format!("stunnel-{port}.conf"));
        let mut text = format!(
            "foreground = yes\npid =\noutput = {}\n[kafka]\naccept = 127.0.0.1:{port}\n\
             connect = 127.0.0.1:{backend}\ncert = {}\nkey = {}\n",
            dir.join("stunnel.log").display(),
            cert.cert.display(),
            cert.key.display()
        );
        if let Some(ca) = client_ca {
            text += &format!(
                "requireCert = yes\nverifyChain = yes\nCAfile = {}\n",
                ca.display()
            );
        }
        std::fs::write(&config, text).expect("write stunnel configuration");
        let mut child = Command::new(stunnel_binary())
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start stunnel");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !listens(child.id(), port) {
            if let Ok(Some(_)) = child.try_wait() {
                return None; // the port is taken
            }
            assert!(
                Instant::now() < deadline,
                "stunnel did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(TlsTerminator {
            child,
            port,
            backend,
            client_ca: client_ca.map(Path::to_path_buf),
            dir: dir.to_path_buf(),
        })
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stop, and start again on the same port with another certificate (as an operator who
    /// rotates the brokers' certificate does). Connections open now are cut.
    pub fn restart_with(&mut self, cert: &CertAndKey) {
        self.stop();
        let client_ca = self.client_ca.clone();
        let again = TlsTerminator::start(
            &self.dir,
            self.port,
            self.backend,
            cert,
            client_ca.as_deref(),
        )
        .unwrap_or_else(|| panic!("another process took port {} meanwhile", self.port));
        *self = again;
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A broker reachable only through TLS (and SASL, with [`BrokerOptions::authentication`]).
pub struct TlsBroker {
    // Field order is drop order: the terminator before the broker, then the files.
    pub terminator: TlsTerminator,
    pub broker: TestBroker,
    /// The CA that signed the terminator's certificate.
    pub ca: TestCa,
    /// With [`TlsBroker::start_mutual`]: the CA client certificates must be signed by.
    pub client_ca: Option<TestCa>,
    /// `127.0.0.1:PORT` of the terminator, for `bootstrap.servers`.
    pub addr: String,
    /// Holds the certificates and stunnel's configuration and log.
    pub dir: PathBuf,
}

impl TlsBroker {
    pub fn start(options: BrokerOptions) -> TlsBroker {
        TlsBroker::start_inner(options, false)
    }

    /// A broker whose terminator also requires a client certificate (mutual TLS).
    pub fn start_mutual(options: BrokerOptions) -> TlsBroker {
        TlsBroker::start_inner(options, true)
    }

    fn start_inner(options: BrokerOptions, mutual: bool) -> TlsBroker {
        let dir = scratch_dir();
        let ca = TestCa::new(&dir, "ca");
        let cert = ca.server_cert();
        let client_ca = mutual.then(|| TestCa::new(&dir, "client-ca"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                Instant::now() < deadline,
                "no free port for the TLS terminator"
            );
            let port = free_port();
            let broker = TestBroker::start_with(&BrokerOptions {
                advertised_port: Some(port),
                ..options.clone()
            });
            let required = client_ca.as_ref().map(|ca| ca.cert.as_path());
            let started = TlsTerminator::start(&dir, port, broker.port(), &cert, required);
            if let Some(terminator) = started {
                return TlsBroker {
                    terminator,
                    broker,
                    ca,
                    client_ca,
                    addr: format!("127.0.0.1:{port}"),
                    dir,
                };
            }
        }
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
