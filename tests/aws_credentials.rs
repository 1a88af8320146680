//! The AWS sinks' standard credentials chain, from where AWS hands credentials to a workload:
//! the EC2 instance metadata service (IMDSv2) and the container endpoint, served by a loopback
//! stand-in whose credentials expire within seconds of the renewal window, so they must be
//! renewed mid-stream (the Lambda stand-in checks every signature with botocore); a web
//! identity assumed through moto's STS, whose session moto itself checks on every SQS call;
//! and a metadata service that does not answer, shown in status.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use common::moto::Moto;
use common::queues::*;
use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);
const STAND_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/aws_credentials.py");
/// Credentials live 5 min 3 s: three seconds after they are handed out they are inside the
/// five minutes before expiry in which the sink renews them.
const LIFETIME_SECS: &str = "303";
const CONTAINER_AUTH: &str = "container-auth-token";

struct CredentialsStandIn {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl CredentialsStandIn {
    fn start(dir: &Path) -> CredentialsStandIn {
        CredentialsStandIn::start_on(dir, 0)
    }

    fn start_on(dir: &Path, port: u16) -> CredentialsStandIn {
        let out = dir.join("credentials-requests.jsonl");
        let (child, port) = spawn_listening(
            Command::new("python3")
                .arg(STAND_IN)
                .args(["--port", &port.to_string(), "--out"])
                .arg(&out)
                .args(["--secret", SECRET_KEY, "--lifetime", LIFETIME_SECS])
                .args(["--auth", CONTAINER_AUTH]),
            "aws_credentials.py",
        );
        CredentialsStandIn { child, port, out }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for CredentialsStandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server whose environment holds no keys: only `env` tells it where credentials are.
fn server_with(dir: &Path, env: &[(&str, &str)]) -> Server {
    let mut all = vec![
        ("AWS_ACCESS_KEY_ID", ""),
        ("AWS_SECRET_ACCESS_KEY", ""),
        ("AWS_PROFILE", ""),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
    ];
    all.extend_from_slice(env);
    Server::start_with_env(
        &Backend::Embedded,
        &dir.join("data"),
        &["--allow-destinations", "loopback"],
        &all,
    )
}

fn ingest_wave(server: &Server, wave: usize) -> Vec<String> {
    ingest(
        server,
        (0..20)
            .map(|i| json!({"op": "put", "bucket": "media", "key": format!("w{wave}-{i}"), "size": i}))
            .collect(),
    )
    .into_iter()
    .map(|(_, id)| id)
    .collect()
}

/// Sends three waves of events a few seconds apart through a lambda sink without
/// credentials; every invocation must be signed with a key the stand-in handed out, carry
/// that key's session token, and the key must change (renewed) during the stream.
fn invocations_sign_with_renewed_keys(server: &Server, dir: &Path, stand_in: &CredentialsStandIn) {
    let receiver = LambdaReceiver::for_keys(dir, "ASIATEST");
    let sink = json!({"type": "lambda", "function": "thumbs", "endpoint": receiver.endpoint()});
    create_subscription(server, &queue_sub("fn", sink, 10));
    let mut acked = Vec::new();
    for wave in 0..3 {
        acked.extend(ingest_wave(server, wave));
        wait_status(server, "fn", "delivered", WAIT, |s| {
            s["delivered"] == acked.len() && s["lag"] == 0
        });
        std::thread::sleep(Duration::from_secs(4));
    }
    let invocations = receiver.invocations();
    let mut keys = HashSet::new();
    let mut got = HashSet::new();
    for i in &invocations {
        assert_eq!(i["verified"], true, "botocore verified the signature: {i}");
        let key = i["access_key"].as_str().unwrap();
        let n = key.strip_prefix("ASIATEST").unwrap();
        assert_eq!(i["session_token"], format!("session-{n}"), "{i}");
        keys.insert(key.to_string());
        for r in i["payload"]["Records"].as_array().unwrap() {
            got.insert(r["tidemark"]["eventId"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(got, acked.iter().cloned().collect::<HashSet<_>>());
    assert!(
        keys.len() >= 2,
        "credentials were renewed before they expired: {keys:?} ({:?})",
        stand_in.requests()
    );
}

#[test]
fn instance_metadata_credentials_sign_and_are_renewed() {
    let dir = tempfile::tempdir().unwrap();
    let stand_in = CredentialsStandIn::start(dir.path());
    let server = server_with(
        dir.path(),
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &stand_in.url())],
    );
    invocations_sign_with_renewed_keys(&server, dir.path(), &stand_in);
    // IMDSv2: every fetch began with a session token.
    let requests = stand_in.requests();
    assert!(
        requests
            .iter()
            .any(|r| r["method"] == "PUT" && r["path"] == "/latest/api/token"),
        "{requests:?}"
    );
    assert!(
        requests.iter().all(|r| r["status"] == 200),
        "no request was refused: {requests:?}"
    );
}

#[test]
fn container_credentials_sign_and_are_renewed() {
    let dir = tempfile::tempdir().unwrap();
    let stand_in = CredentialsStandIn::start(dir.path());
    let token_file = dir.path().join("container-token");
    std::fs::write(&token_file, format!("{CONTAINER_AUTH}\n")).unwrap();
    let uri = format!("{}/container/credentials", stand_in.url());
    let server = server_with(
        dir.path(),
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                token_file.to_str().unwrap(),
            ),
        ],
    );
    invocations_sign_with_renewed_keys(&server, dir.path(), &stand_in);
    let requests = stand_in.requests();
    assert!(
        requests
            .iter()
            .all(|r| r["path"] == "/container/credentials" && r["status"] == 200),
        "{requests:?}"
    );
}

#[test]
fn a_web_identity_session_from_sts_is_what_sqs_accepts() {
    let dir = tempfile::tempdir().unwrap();
    // Moto checks every request after the six setup calls and the sink's STS call.
    let moto = Moto::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "7")]);
    let setup = &read_lines(&["sqs-role", &moto.endpoint, "changes"])[0];
    let token_file = dir.path().join("web-identity-token");
    std::fs::write(
        &token_file,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0aWRlbWFyayJ9.c2ln\n",
    )
    .unwrap();
    let server = server_with(
        dir.path(),
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
            ("AWS_ROLE_ARN", setup["role_arn"].as_str().unwrap()),
            ("AWS_ROLE_SESSION_NAME", "tidemark-test"),
            ("AWS_ENDPOINT_URL_STS", &moto.endpoint),
        ],
    );
    let url = setup["queue_url"].as_str().unwrap();
    create_subscription(
        &server,
        &queue_sub("q", json!({"type": "sqs", "queue_url": url}), 10),
    );
    let acked = ingest_wave(&server, 0);
    wait_status(&server, "q", "delivered", WAIT, |s| {
        s["delivered"] == acked.len() && s["lag"] == 0
    });
    let reader = [("SQS_TEST_KEY", setup["reader_key"].as_str().unwrap())];
    let messages = read_lines_env(
        &[
            "sqs-read",
            &moto.endpoint,
            url,
            &acked.len().to_string(),
            "60",
        ],
        &reader,
    );
    let got: HashSet<String> = messages
        .iter()
        .map(|m| {
            m["attributes"]["tidemark_event_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(got, acked.iter().cloned().collect::<HashSet<_>>());
}

#[test]
fn a_silent_metadata_service_is_named_in_status_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = server_with(
        dir.path(),
        &[(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            &format!("http://127.0.0.1:{port}"),
        )],
    );
    let receiver = LambdaReceiver::for_keys(dir.path(), "ASIATEST");
    let sink = json!({"type": "lambda", "function": "thumbs", "endpoint": receiver.endpoint()});
    create_subscription(&server, &queue_sub("fn", sink, 10));
    let acked = ingest_wave(&server, 0);
    let s = wait_status(&server, "fn", "a credentials error", WAIT, |s| {
        s["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("instance metadata service"))
    });
    assert_eq!(s["delivered"], 0, "{s}");
    // The metadata service comes up: the waiting events go out.
    let stand_in = CredentialsStandIn::start_on(dir.path(), port);
    wait_status(&server, "fn", "delivered", WAIT, |s| {
        s["delivered"] == acked.len() && s["lag"] == 0
    });
    assert!(!stand_in.requests().is_empty());
    assert_eq!(subscription_status(&server, "fn")["dead_letters"], 0);
}
