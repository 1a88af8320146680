//! `tidemark serve --log kafka` over TLS and SASL, against Tansu behind a TLS terminator
//! (stunnel) that takes SCRAM logins: mutations round-trip; a wrong password or an untrusted
//! certificate stops the server at start with the cause and the flag to check; the password
//! never appears in what the server prints or serves; `/readyz` names a certificate the node
//! does not trust when the terminator starts presenting one.

mod common;

use std::time::Duration;

use common::kafka_tls::*;
use common::*;
use serde_json::{Value, json};
use tidemark_core::log::kafka::test_tls::TestCa;

const PASSWORD: &str = "Scram-Secret-Value-4417";

/// What the server serves, where a secret must never appear.
fn served_text(server: &Server) -> String {
    ["/readyz", "/healthz", "/metrics", "/v1/log"]
        .iter()
        .map(|path| server.get_text(path).1)
        .collect::<Vec<_>>()
        .join("\n")
}

fn readyz_reasons(server: &Server) -> (u16, String) {
    let (status, body) = server.get("/readyz");
    let reasons = body["reasons"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .unwrap_or_default();
    (status, reasons)
}

#[test]
fn serve_over_sasl_ssl_round_trips_and_readyz_names_an_untrusted_certificate() {
    let mut broker = scram_broker(PASSWORD);
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    // The password by reference, as the docs advise: it is not on any command line.
    let password_file = scratch.path().join("kafka-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let mut args = sasl_ssl_args(
        &broker,
        &broker.ca.cert,
        &format!("file:{}", password_file.display()),
    );
    args.extend(["--kafka-request-timeout-ms".into(), "3000".into()]);
    let mut serve_args: Vec<&str> = args.iter().map(String::as_str).collect();
    serve_args.push("-v"); // debug logs too: the secret must not be in them either
    let server = Server::start_on(&Backend::Embedded, &data, &serve_args);
    server.wait_writing_any();

    ingest(
        &server,
        vec![json!({"op": "put", "bucket": "secure", "key": "a.txt", "size": 3})],
    );
    server.wait_caught_up();
    let (status, object) = server.get("/v1/objects/secure/a.txt");
    assert_eq!(status, 200, "{object}");
    // An offline tool reads the same log over the same settings.
    let mut tail = vec!["log", "tail", "--from-beginning", "--json", "--data-dir"];
    tail.push(data.to_str().unwrap());
    tail.extend(args.iter().map(String::as_str));
    let events = tidemark(&tail);
    assert!(events.contains("a.txt"), "{events}");
    assert_eq!(readyz_reasons(&server), (200, String::new()));

    // The terminator now presents a certificate from a CA the node does not trust.
    let other = TestCa::new(&broker.dir, "other-ca").server_cert();
    broker.terminator.restart_with(&other);
    let reasons = wait_for(
        "/readyz naming the certificate",
        Duration::from_secs(90),
        || match readyz_reasons(&server) {
            (503, r) if r.contains("certificate verify failed") => Ok(r),
            (status, r) => Err(format!("{status}: {r}")),
        },
    );
    assert!(reasons.contains("--kafka-ssl-ca-file"), "{reasons}");

    // The right certificate again: the node is ready again, and writes.
    let original = broker.ca.server_cert();
    broker.terminator.restart_with(&original);
    wait_for(
        "/readyz ready again",
        Duration::from_secs(120),
        || match readyz_reasons(&server) {
            (200, _) => Ok(()),
            (status, r) => Err(format!("{status}: {r}")),
        },
    );
    wait_for("a write after the outage", Duration::from_secs(60), || {
        let body =
            json!({"mutations": [{"op": "put", "bucket": "secure", "key": "b.txt", "size": 4}]});
        match server.post("/v1/mutations", body.to_string()) {
            (200, resp) if acked_ids(&resp).len() == 1 => Ok(()),
            (status, resp) => Err(format!("{status}: {resp}")),
        }
    });

    let stderr = server.stderr_text();
    assert!(
        stderr.contains("certificate verify failed"),
        "the refusal is logged:\n{stderr}"
    );
    for shown in [stderr, served_text(&server)] {
        assert!(!shown.contains(PASSWORD), "the password leaked:\n{shown}");
    }
    server.stop();
}

#[test]
fn a_wrong_password_stops_serve_at_start_naming_the_login() {
    let broker = scram_broker(PASSWORD);
    let scratch = tempfile::tempdir().unwrap();
    let wrong = "Wrong-Secret-Value-9902";
    let mut args = sasl_ssl_args(&broker, &broker.ca.cert, wrong);
    args.extend(["--kafka-request-timeout-ms".into(), "10000".into()]);
    let (status, stderr, took) =
        serve_until_exit(&scratch.path().join("data"), &args, Duration::from_secs(60));
    assert!(!status.success());
    assert!(
        stderr.contains(&format!(
            "cannot reach the Kafka brokers at {}",
            broker.addr
        )) && stderr.contains("SASL authentication")
            && stderr.contains("--kafka-sasl-password"),
        "{stderr}"
    );
    assert!(!stderr.contains(wrong), "the password leaked:\n{stderr}");
    // Refused logins end the wait at once, well inside the request timeout.
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn an_untrusted_certificate_stops_serve_at_start_naming_the_ca_file() {
    let broker = scram_broker(PASSWORD);
    let scratch = tempfile::tempdir().unwrap();
    let other = TestCa::new(&broker.dir, "other-ca");
    let mut args = sasl_ssl_args(&broker, &other.cert, PASSWORD);
    args.extend(["--kafka-request-timeout-ms".into(), "10000".into()]);
    let (status, stderr, took) =
        serve_until_exit(&scratch.path().join("data"), &args, Duration::from_secs(60));
    assert!(!status.success());
    assert!(
        stderr.contains("certificate verify failed") && stderr.contains("--kafka-ssl-ca-file"),
        "{stderr}"
    );
    assert!(!stderr.contains(PASSWORD), "the password leaked:\n{stderr}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn bad_security_settings_are_refused_before_connecting() {
    let scratch = tempfile::tempdir().unwrap();
    let unused_broker = format!("127.0.0.1:{}", free_port());
    let cases: [(&[&str], &[&str]); 4] = [
        (
            &["--kafka-security-protocol", "TLS"],
            &["--kafka-security-protocol", "SASL_SSL"],
        ),
        (
            &["--kafka-sasl-mechanism", "GSSAPI"],
            &["--kafka-sasl-mechanism", "SCRAM-SHA-512"],
        ),
        (
            &["--kafka-sasl-mechanism", "PLAIN"],
            &["--kafka-sasl-mechanism:", "SASL_SSL"],
        ),
        (
            &[
                "--kafka-security-protocol",
                "SSL",
                "--kafka-ssl-ca-file",
                "/nonexistent/ca.pem",
            ],
            &["--kafka-ssl-ca-file:", "/nonexistent/ca.pem"],
        ),
    ];
    for (i, (flags, expected)) in cases.iter().enumerate() {
        let mut args: Vec<String> = ["--log", "kafka", "--kafka-brokers", &unused_broker]
            .map(String::from)
            .into();
        args.extend(flags.iter().map(|f| f.to_string()));
        let data = scratch.path().join(format!("data-{i}"));
        let (status, stderr, _) = serve_until_exit(&data, &args, Duration::from_secs(30));
        assert!(!status.success(), "{flags:?}");
        for e in *expected {
            assert!(
                stderr.contains(e),
                "{flags:?}: expected {e:?} in:\n{stderr}"
            );
        }
        assert!(
            !stderr.contains("cannot reach"),
            "{flags:?}: refused before connecting:\n{stderr}"
        );
    }
}
