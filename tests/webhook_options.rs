//! The rest of a webhook's options, end to end: bearer tokens and custom headers, secrets by
//! reference (`env:`, `file:`), giving up by age, and asynchronous function invocations.

mod common;

use std::time::{Duration, Instant};

use common::receiver::Receiver;
use common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn put(server: &Server, key: &str) -> String {
    put_keys(server, "photos", &[key.to_string()]).remove(0)
}

#[test]
fn bearer_token_and_custom_headers_arrive_and_are_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), "hooks", &[]);
    let server = Server::start(
        &dir.path().join("data"),
        &["--allow-destinations", "loopback"],
    );
    let spec = json!({
        "name": "tokens",
        "sink": {"type": "webhook", "url": receiver.url("/hook"),
                 "bearer_token": "tok-3f9a", "headers": {"x-team": "ml"}},
    });
    let created = create_subscription(&server, &spec);
    assert!(!created.to_string().contains("tok-3f9a"), "{created}");
    let token_ref = created["sink"]["bearer_token"].as_str().unwrap();
    assert!(token_ref.starts_with("secret:"), "{created}");

    let id = put(&server, "a.jpg");
    receiver.wait_delivered(std::slice::from_ref(&id), WAIT);
    let req = &receiver.requests()[0];
    assert_eq!(req["headers"]["authorization"], "Bearer tok-3f9a", "{req}");
    assert_eq!(req["headers"]["x-team"], "ml", "{req}");
    assert_eq!(req["webhook_id"], id.as_str());
    for path in [
        "/v1/subscriptions",
        "/v1/subscriptions/tokens",
        "/v1/subscriptions/tokens/status",
    ] {
        let (_, v) = server.get(path);
        assert!(!v.to_string().contains("tok-3f9a"), "{path}: {v}");
    }

    // A subscription cannot be renamed by a replace.
    let (status, v) = server.put("/v1/subscriptions/other", &spec);
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["field"], "name", "{v}");

    // Headers the sink sets itself cannot be overridden.
    let mut bad = spec.clone();
    bad["name"] = json!("forged");
    bad["sink"]["headers"] = json!({"webhook-id": "x"});
    let (status, v) = server.post("/v1/subscriptions", bad.to_string());
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["field"], "sink.headers.webhook-id", "{v}");
}

#[test]
fn secrets_by_reference_stay_outside_tidemark() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hook.secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let receiver = Receiver::start(dir.path(), "hooks", &["--secret", SECRET]);
    let env_file = dir.path().join("env.txt");
    let env_fn = format!(
        "--function=env-dump={}",
        json!(["sh", "-c", format!("env > {}", env_file.display())])
    );
    let server = Server::start_with_env(
        &Backend::Embedded,
        &dir.path().join("data"),
        &["--allow-destinations", "loopback", &env_fn],
        &[("HOOK_SECRET", SECRET)],
    );
    let sub = |name: &str, secret: &str| json!({"name": name, "sink": {"type": "webhook", "url": receiver.url(&format!("/{name}")), "secret": secret}});
    let file_ref = format!("file:{}", file.display());
    for (name, reference) in [
        ("by-env", "env:HOOK_SECRET"),
        ("by-file", file_ref.as_str()),
    ] {
        let created = create_subscription(&server, &sub(name, reference));
        assert_eq!(
            created["sink"]["secret"], reference,
            "kept as given: {created}"
        );
    }
    let id = put(&server, "b.jpg");
    wait_for("both deliveries", WAIT, || {
        let reqs = receiver.requests();
        let ok = reqs
            .iter()
            .filter(|r| r["webhook_id"] == id.as_str() && r["verified"] == true);
        match ok.count() {
            2 => Ok(()),
            n => Err(format!("{n} verified: {reqs:?}")),
        }
    });

    // Process functions do not inherit the server's environment (it holds the secret).
    create_subscription(
        &server,
        &json!({"name": "env-fn", "sink": {"type": "function", "mode": "process",
                "function": "env-dump"}}),
    );
    put(&server, "c.jpg");
    // The shell creates the file before `env` writes it: wait for the whole content.
    let env = wait_for(
        "the function's environment",
        WAIT,
        || match std::fs::read_to_string(&env_file) {
            Ok(text) if text.contains("TIDEMARK_ATTEMPT=") => Ok(text),
            other => Err(format!("{other:?}")),
        },
    );
    assert!(env.contains("TIDEMARK_SUBSCRIPTION=env-fn"), "{env}");
    assert!(
        !env.contains("HOOK_SECRET") && !env.contains(SECRET),
        "{env}"
    );

    // A reference that does not resolve is refused when the subscription is created.
    let (status, v) = server.post(
        "/v1/subscriptions",
        sub("missing", "env:NO_SUCH_VAR").to_string(),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["field"], "sink.secret", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("NO_SUCH_VAR"),
        "{v}"
    );
}

#[test]
fn max_age_sends_an_event_to_the_dead_letters_whatever_its_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), "hooks", &["--always-status", "503"]);
    let server = Server::start(
        &dir.path().join("data"),
        &["--allow-destinations", "loopback"],
    );
    create_subscription(
        &server,
        &json!({"name": "aging", "sink": {"type": "webhook", "url": receiver.url("/hook")},
                "retry": {"max_attempts": 1000, "initial_backoff_ms": 20, "max_backoff_ms": 50,
                          "max_age_ms": 400},
                "circuit": {"failure_threshold": 1000}}),
    );
    let id = put(&server, "c.jpg");
    let letters = wait_dead_letters(&server, "aging", 1, WAIT);
    assert_eq!(letters[0]["event_id"], id.as_str());
    let error = letters[0]["error"].as_str().unwrap();
    assert!(
        error.contains("max age") && error.contains("503"),
        "{error}"
    );
    let attempts = letters[0]["attempts"].as_u64().unwrap();
    assert!(
        (2..1000).contains(&attempts),
        "{attempts} attempts in 400 ms"
    );
}

#[test]
fn dead_letters_are_listed_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), "hooks", &["--always-status", "500"]);
    let server = Server::start(
        &dir.path().join("data"),
        &["--allow-destinations", "loopback"],
    );
    create_subscription(
        &server,
        &json!({"name": "paged", "sink": {"type": "webhook", "url": receiver.url("/hook")},
                "retry": fast_retry(1), "circuit": {"failure_threshold": 1000}}),
    );
    let keys: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
    put_keys(&server, "photos", &keys);
    let all = wait_dead_letters(&server, "paged", 5, WAIT);
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for expected in [2, 2, 1] {
        let path = match &after {
            None => "/v1/subscriptions/paged/dead-letters?limit=2".to_string(),
            Some(a) => format!("/v1/subscriptions/paged/dead-letters?limit=2&after={a}"),
        };
        let (status, v) = server.get(&path);
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["count"], 5, "{v}");
        let page = v["dead_letters"].as_array().unwrap();
        assert_eq!(page.len(), expected, "{v}");
        seen.extend(page.iter().map(|l| l["id"].clone()));
        after = v["next_after"].as_str().map(str::to_string);
    }
    assert!(after.is_none(), "the last page has no next_after");
    let ids: Vec<_> = all.iter().map(|l| l["id"].clone()).collect();
    assert_eq!(seen, ids, "pages cover the queue once, oldest first");
    let (status, v) = server.get("/v1/subscriptions/paged/dead-letters?limit=0");
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["field"], "limit", "{v}");
    let (status, v) = server.get("/v1/subscriptions/paged/dead-letters?after=not-an-id");
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["field"], "query", "{v}");
    // A redrive body names what is wrong with it, and redrives nothing.
    let redrive = "/v1/subscriptions/paged/dead-letters/redrive";
    for (body, field) in [
        (r#"{"ids": ["x"]}"#, "ids[0]"),
        (r#"{"idz": []}"#, "idz"),
        ("{", "body"),
    ] {
        let (status, v) = server.post(redrive, body.to_string());
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{body}: {v}");
    }
    assert_eq!(subscription_status(&server, "paged")["dead_letters"], 5);
}

#[test]
fn async_function_invocations_count_once_started() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    // Takes five seconds; an async subscription does not wait for it.
    let command = format!("sleep 5; cat >> {}", out.display());
    let slow = format!("--function=slow={}", json!(["sh", "-c", command]));
    let server = Server::start(&dir.path().join("data"), &[&slow]);
    create_subscription(
        &server,
        &json!({"name": "slow-fn", "sink": {"type": "function", "mode": "process",
                "function": "slow", "invocation": "async", "timeout_ms": 10000}}),
    );
    let started = Instant::now();
    let id = put(&server, "d.jpg");
    wait_status(&server, "slow-fn", "delivered", WAIT, |s| {
        s["delivered"] == 1
    });
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "an async invocation counts as delivered once started, not when it ends"
    );
    let invocations = wait_for("the invocation's record", WAIT, || {
        let (_, v) = server.get("/v1/subscriptions/slow-fn/invocations");
        match v["invocations"].as_array() {
            Some(l) if !l.is_empty() => Ok(l.clone()),
            _ => Err(v.to_string()),
        }
    });
    assert_eq!(invocations[0]["outcome"], "ok", "{invocations:?}");
    assert_eq!(invocations[0]["event_ids"][0], id.as_str());
    let written = std::fs::read_to_string(&out).unwrap();
    assert!(written.contains(&id), "{written}");
}

#[test]
fn https_endpoints_are_verified_against_the_trusted_cas() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let made = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/make_certs.py"
        ))
        .arg(&certs)
        .status()
        .unwrap();
    assert!(made.success(), "make_certs.py failed");
    let file = |name: &str| certs.join(name).to_str().unwrap().to_string();
    let receiver = Receiver::start(
        dir.path(),
        "tls",
        &[
            "--tls-cert",
            &file("server.pem"),
            "--tls-key",
            &file("server.key"),
        ],
    );
    let url = format!("https://localhost:{}/hook", receiver.port);
    let sub = |name: &str| {
        json!({"name": name, "sink": {"type": "webhook", "url": url}, "retry": fast_retry(1),
               "circuit": {"failure_threshold": 1000}})
    };

    // The private CA is trusted with --webhook-ca-file: delivered over TLS.
    let ca = file("ca.pem");
    let trusted = Server::start(
        &dir.path().join("trusted"),
        &["--allow-destinations", "loopback", "--webhook-ca-file", &ca],
    );
    create_subscription(&trusted, &sub("tls"));
    let id = put(&trusted, "e.jpg");
    receiver.wait_delivered(std::slice::from_ref(&id), WAIT);
    trusted.stop();

    // Without it the certificate does not verify, and the event is not sent in the clear.
    let untrusted = Server::start(
        &dir.path().join("untrusted"),
        &["--allow-destinations", "loopback"],
    );
    create_subscription(&untrusted, &sub("tls"));
    let id = put(&untrusted, "f.jpg");
    let letters = wait_dead_letters(&untrusted, "tls", 1, WAIT);
    assert_eq!(letters[0]["event_id"], id.as_str());
    let error = letters[0]["error"].as_str().unwrap();
    assert!(error.contains("certificate"), "{error}");
    assert_eq!(
        receiver.requests().len(),
        1,
        "only the trusted delivery arrived"
    );

    // A CA file that is not there stops the server with the flag named.
    let out = run(&[
        "serve",
        "--data-dir",
        &file("none"),
        "--listen",
        "127.0.0.1:0",
        "--webhook-ca-file",
        &file("missing.pem"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--webhook-ca-file") && stderr.contains("missing.pem"),
        "{stderr}"
    );
}
