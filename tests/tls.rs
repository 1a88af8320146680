//! TLS on both listeners (`serve --tls-cert --tls-key`), checked with independent clients:
//! curl, the Python `requests` package, boto3 and the `tidemark` CLI, each verifying against a
//! throwaway CA made here. A client trusting another CA is refused; plain HTTP to a TLS port
//! gets a fast, clear answer; a certificate replaced on disk is served to the next connection;
//! `--tls-client-ca` requires client certificates.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

fn py(script: &str) -> String {
    format!("{}/tests/py/{script}", env!("CARGO_MANIFEST_DIR"))
}

/// `make_certs.py DIR ARGS`.
fn make_certs(dir: &Path, args: &[&str]) {
    let ok = Command::new("python3")
        .arg(py("make_certs.py"))
        .arg(dir)
        .args(args)
        .status()
        .unwrap()
        .success();
    assert!(ok, "make_certs.py {args:?} failed");
}

struct Certs {
    dir: PathBuf,
}

impl Certs {
    /// A CA, a server certificate it signed, and another CA that signed nothing here.
    fn new(dir: &Path) -> Certs {
        let dir = dir.join("certs");
        make_certs(&dir, &[]);
        make_certs(&dir, &["--self-signed-only"]);
        Certs { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }
}

/// `curl ARGS`: exit code, HTTP status (0 when none) and body.
fn curl(args: &[&str]) -> (i32, u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        out.status.code().unwrap_or(-1),
        code.trim().parse().unwrap_or(0),
        body.to_string(),
    )
}

fn tls_client(args: &[&str]) -> Value {
    let out = Command::new("python3")
        .arg(py("tls_client.py"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tls_client.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn tls_server(dir: &Path, certs: &Certs, extra: &[&str]) -> Server {
    let (cert, key) = (certs.path("server.pem"), certs.path("server.key"));
    let mut args = vec![
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--s3-listen",
        "127.0.0.1:0",
        "--s3-access-key",
        "AKTEST",
        "--s3-secret-key",
        "s3cr3t",
    ];
    args.extend_from_slice(extra);
    Server::start(&dir.join("data"), &args)
}

#[test]
fn both_listeners_speak_tls_to_real_clients() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(dir.path());
    let server = tls_server(dir.path(), &certs, &[]);
    let s3 = server.s3_url.clone().unwrap();
    assert!(server.url.starts_with("https://"), "{}", server.url);
    assert!(s3.starts_with("https://"), "{s3}");
    let ca = certs.path("ca.pem");

    // curl, verifying against the CA.
    let (exit, status, body) = curl(&["--cacert", &ca, &format!("{}/healthz", server.url)]);
    assert_eq!((exit, status), (0, 200), "{body}");
    let (exit, status, body) = curl(&[
        "--cacert",
        &ca,
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"mutations":[{"op":"put","bucket":"tls-b","key":"k","size":1}]}"#,
        &format!("{}/v1/mutations", server.url),
    ]);
    assert_eq!((exit, status), (0, 200), "{body}");
    // A client trusting another CA refuses the server (curl: 60, peer certificate).
    let (exit, _, _) = curl(&[
        "--cacert",
        &certs.path("other-ca.pem"),
        &format!("{}/healthz", server.url),
    ]);
    assert_eq!(
        exit, 60,
        "curl must refuse a certificate from an unknown CA"
    );

    // The Python `requests` package, to both listeners.
    let v = tls_client(&[
        "requests",
        &format!("{}/v1/objects?bucket=tls-b", server.url),
        &ca,
    ]);
    assert_eq!(v["status"], 200, "{v}");
    assert!(v["body"].as_str().unwrap().contains("\"k\""), "{v}");
    let v = tls_client(&[
        "requests",
        &format!("{}/healthz", server.url),
        &certs.path("other-ca.pem"),
    ]);
    assert_eq!(v["error"], "ssl", "{v}");

    // boto3 over TLS to the S3 listener (the same certificate by default).
    let v = tls_client(&["boto3", &s3, &ca]);
    assert_eq!(v["body"], "over tls", "{v}");

    // The CLI: https verified against the web PKI plus --ca-file.
    let out = Command::new(BIN)
        .args(["sub", "ls", "--server", &server.url, "--ca-file", &ca])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args(["sub", "ls", "--server", &server.url])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ca-file"), "names the way out: {err}");

    // Plain HTTP to the TLS port: a fast 400 that says to use https, on both listeners.
    for url in [&server.url, &s3] {
        let plain = url.replace("https://", "http://");
        let (exit, status, body) = curl(&[&format!("{plain}/healthz")]);
        assert_eq!((exit, status), (0, 400), "{plain}: {body}");
        assert!(body.contains("https"), "{body}");
    }
    let (_, metrics) = get_metrics(&server, &ca);
    assert!(
        metric(
            &metrics,
            r#"tidemark_connections_total{listener="http",outcome="tls_failed"}"#
        ) >= 2,
        "{metrics}"
    );
    server.stop();
}

fn get_metrics(server: &Server, ca: &str) -> (u16, String) {
    let (_, status, body) = curl(&["--cacert", ca, &format!("{}/metrics", server.url)]);
    (status, body)
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// The certificate the server presents now, as PEM.
fn presented(server_url: &str) -> String {
    let addr = server_url.trim_start_matches("https://");
    let (host, port) = addr.rsplit_once(':').unwrap();
    tls_client(&["peer-cert", host, port])["pem"]
        .as_str()
        .unwrap()
        .to_string()
}

/// PEM text without line breaks, to compare with what a client decoded.
fn flat(pem: &str) -> String {
    pem.split_whitespace().collect()
}

#[test]
fn a_certificate_replaced_on_disk_is_served_to_the_next_connection() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(dir.path());
    // The served files are copies the test replaces, as a renewal job would.
    let served = dir.path().join("served");
    std::fs::create_dir(&served).unwrap();
    let (cert, key) = (served.join("tls.pem"), served.join("tls.key"));
    std::fs::copy(certs.dir.join("server.pem"), &cert).unwrap();
    std::fs::copy(certs.dir.join("server.key"), &key).unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let first = std::fs::read_to_string(certs.dir.join("server.pem")).unwrap();
    assert_eq!(flat(&presented(&server.url)), flat(&first));

    make_certs(&certs.dir, &["--server", "renewed"]);
    let renewed = std::fs::read_to_string(certs.dir.join("renewed.pem")).unwrap();
    // Replace both files by rename (key first: for a moment they do not match, and the old
    // certificate must go on being served rather than none).
    for (from, to) in [("renewed.key", &key), ("renewed.pem", &cert)] {
        let tmp = served.join("incoming");
        std::fs::copy(certs.dir.join(from), &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
        let now = presented(&server.url);
        assert!(flat(&now) == flat(&first) || flat(&now) == flat(&renewed));
    }
    assert_eq!(
        flat(&presented(&server.url)),
        flat(&renewed),
        "the next connection gets the new certificate"
    );
    let ca = certs.path("ca.pem");
    let (exit, status, _) = curl(&["--cacert", &ca, &format!("{}/healthz", server.url)]);
    assert_eq!((exit, status), (0, 200));
    assert!(server.stderr_text().contains("TLS certificate reloaded"));

    // A broken file keeps the certificate in use, with a warning.
    std::fs::write(&cert, "not a certificate").unwrap();
    assert_eq!(flat(&presented(&server.url)), flat(&renewed));
    assert!(
        server.stderr_text().contains("do not load"),
        "{}",
        server.stderr_text()
    );
    server.stop();
}

#[test]
fn client_certificates_are_required_with_a_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(dir.path());
    make_certs(&certs.dir, &["--client"]);
    let ca = certs.path("ca.pem");
    let server = tls_server(dir.path(), &certs, &["--tls-client-ca", &ca]);
    let url = format!("{}/healthz", server.url);
    let (exit, status, _) = curl(&["--cacert", &ca, &url]);
    assert!(
        exit != 0 && status == 0,
        "no client certificate: refused ({exit})"
    );
    let (exit, status, body) = curl(&[
        "--cacert",
        &ca,
        "--cert",
        &certs.path("client.pem"),
        "--key",
        &certs.path("client.key"),
        &url,
    ]);
    assert_eq!((exit, status), (0, 200), "{body}");
    server.stop();
}

#[test]
fn bad_tls_settings_are_refused_at_start_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(dir.path());
    let missing = dir.path().join("missing.pem");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--tls-cert".into(),
                missing.to_str().unwrap().into(),
                "--tls-key".into(),
                certs.path("server.key"),
            ],
            "--tls-cert",
        ),
        (
            // A key that does not go with the certificate.
            vec![
                "--tls-cert".into(),
                certs.path("server.pem"),
                "--tls-key".into(),
                certs.path("ca.key"),
            ],
            "does not go with",
        ),
        (
            vec!["--tls-cert".into(), certs.path("server.pem")],
            "--tls-key",
        ),
    ];
    for (args, expect) in cases {
        let out = Command::new(BIN)
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}

#[test]
fn the_consoles_session_cookie_is_secure_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(dir.path());
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, "tls-console-admin-0123456789\n").unwrap();
    let server = tls_server(
        dir.path(),
        &certs,
        &["--admin-token-file", token_file.to_str().unwrap()],
    );
    let (exit, status, answer) = curl(&[
        "--cacert",
        &certs.path("ca.pem"),
        "-D",
        "-",
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"token": "tls-console-admin-0123456789"}"#,
        &format!("{}/ui/login", server.url),
    ]);
    assert_eq!((exit, status), (0, 200), "{answer}");
    let cookie = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {answer}"));
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(cookie.trim_end().ends_with("; Secure"), "{cookie}");
    server.stop();
}
