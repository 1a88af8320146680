//! Safe to deploy: no request body makes the server run a program (process functions are
//! declared by the operator and named by subscriptions), a subscription stored with an inline
//! command before that rule pauses until its command is declared, and a listener beyond
//! loopback needs a token (or an explicit `--insecure-no-auth`).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const ADMIN: &str = "admin-secret-for-tests-0123456789";

/// `--function=NAME=["sh","-c","touch MARKER"]`: a function whose run leaves a file.
fn touching(name: &str, marker: &Path) -> String {
    format!(
        "--function={name}={}",
        json!([
            "sh",
            "-c",
            format!("cat > /dev/null; touch {}", marker.display())
        ])
    )
}

/// `POST /v1/subscriptions` with `sink`, as `token`.
fn create(server: &Server, token: Option<&str>, name: &str, sink: Value) -> (u16, Value) {
    let mut req = client()
        .post(format!("{}/v1/subscriptions", server.url))
        .header("content-type", "application/json")
        .body(json!({"name": name, "sink": sink}).to_string());
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

fn get(server: &Server, token: Option<&str>, path: &str) -> (u16, Value) {
    let mut req = client().get(format!("{}{path}", server.url));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

/// A put of `bucket/key` as `token`.
fn put_as(server: &Server, token: Option<&str>, key: &str) {
    let mut req = client()
        .post(format!("{}/v1/mutations", server.url))
        .header("content-type", "application/json")
        .body(
            json!({"mutations": [{"op": "put", "bucket": "bkt", "key": key, "size": 1}]})
                .to_string(),
        );
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    assert_eq!(req.send().unwrap().status().as_u16(), 200);
}

/// Every way a request could name a program is refused, naming the field; only the declared
/// function runs.
fn only_declared_functions_run(server: &Server, token: Option<&str>, dir: &Path) {
    let planted = dir.join("planted");
    let inline = json!({"type": "function", "mode": "process",
        "command": ["sh", "-c", format!("touch {}", planted.display())]});
    let (status, v) = create(server, token, "inline", inline);
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["field"], "sink.command", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("--function") && message.contains("sink.function"),
        "says where commands are declared: {v}"
    );
    // A command beside a declared name is refused as well.
    let both = json!({"type": "function", "mode": "process", "function": "thumbs",
        "command": ["sh", "-c", format!("touch {}", planted.display())]});
    let (status, v) = create(server, token, "both", both);
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (400, Some("sink.command")),
        "{v}"
    );
    for name in ["nope", "../../../bin/sh", "/bin/sh", "thumbs/../x", ""] {
        let sink = json!({"type": "function", "mode": "process", "function": name});
        let (status, v) = create(server, token, "undeclared", sink);
        assert_eq!(status, 400, "{name}: {v}");
        assert_eq!(v["error"]["field"], "sink.function", "{name}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("thumbs"),
            "lists what is declared: {v}"
        );
    }
    // The subscription whose creation was refused does not exist.
    let (_, list) = get(server, token, "/v1/subscriptions");
    assert_eq!(
        list["subscriptions"].as_array().map(Vec::len),
        Some(0),
        "{list}"
    );

    let sink = json!({"type": "function", "mode": "process", "function": "thumbs"});
    let (status, v) = create(server, token, "thumbs", sink);
    assert_eq!(status, 201, "{v}");
    assert!(v["sink"].get("command").is_none(), "{v}");
    put_as(server, token, "photo.jpg");
    let ran = dir.join("ran");
    wait_for(
        "the declared function to run",
        Duration::from_secs(20),
        || {
            ran.exists()
                .then_some(())
                .ok_or_else(|| "not yet".to_string())
        },
    );
    assert!(!planted.exists(), "a command from a request body ran");

    let (status, v) = get(server, token, "/v1/functions");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["functions"][0]["name"], "thumbs", "{v}");
    assert_eq!(v["functions"][0]["mode"], "process", "{v}");
    assert_eq!(v["functions"][0]["program"], "sh", "{v}");
    assert!(
        !v.to_string().contains("touch"),
        "arguments are not listed: {v}"
    );
    let (_, status) = get(server, token, "/v1/subscriptions/thumbs/status");
    assert_eq!(status["endpoint"], "process:thumbs", "{status}");
}

#[test]
fn an_open_loopback_server_runs_only_declared_functions() {
    let dir = tempfile::tempdir().unwrap();
    let declared = touching("thumbs", &dir.path().join("ran"));
    let server = Server::start(&dir.path().join("data"), &[&declared]);
    only_declared_functions_run(&server, None, dir.path());
    server.stop();
}

#[test]
fn a_subscriptions_token_runs_only_declared_functions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin.token");
    std::fs::write(&file, ADMIN).unwrap();
    let declared = touching("thumbs", &dir.path().join("ran"));
    let server = Server::start(
        &dir.path().join("data"),
        &["--admin-token-file", file.to_str().unwrap(), &declared],
    );
    let resp = client()
        .post(format!("{}/v1/tokens", server.url))
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(json!({"scopes": ["subscriptions", "ingest"]}).to_string())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let secret = resp.json::<Value>().unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    only_declared_functions_run(&server, Some(&secret), dir.path());
    // The function list is for the subscriptions scope: a read-only token does not see it.
    let resp = client()
        .post(format!("{}/v1/tokens", server.url))
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(json!({"scopes": ["read"]}).to_string())
        .send()
        .unwrap();
    let reader = resp.json::<Value>().unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, v) = get(&server, Some(&reader), "/v1/functions");
    assert_eq!(status, 403, "{v}");
    server.stop();
}

/// Write a subscription the way a version before declared functions stored it: with its own
/// `command`, straight onto `_config` of a stopped node's embedded log.
fn store_legacy_subscription(data: &Path, name: &str, command: &[String]) {
    use tidemark_core::catalog::{Action, Catalog};
    use tidemark_core::codec::config::ConfigCodec;
    use tidemark_core::log::embedded::{EmbeddedLog, LogConfig};
    use tidemark_core::registry::SchemaRegistry;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let log = Arc::new(EmbeddedLog::open(&data.join("log"), LogConfig::default()).unwrap());
        let registry = Arc::new(SchemaRegistry::open(log.clone()).await.unwrap());
        let mut id = 0;
        for file in tidemark_schemas::CONFIG_EVENT {
            id = registry.register(file.subject, file.text).await.unwrap();
        }
        let codec = Arc::new(ConfigCodec::new(id, registry).unwrap());
        let catalog = Catalog::open(log.clone(), codec, None).await.unwrap();
        let stored = json!({
            "spec": {"name": name, "start": "earliest",
                     "sink": {"type": "function", "mode": "process", "command": command}},
            "start_offsets": {"0": 0, "1": 0, "2": 0, "3": 0},
        });
        catalog
            .change(
                "subscription",
                name,
                Action::Create,
                Some(stored.to_string()),
                None,
            )
            .await
            .unwrap();
        log.close();
    });
}

#[test]
fn an_inline_command_stored_earlier_pauses_until_it_is_declared() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let marker = dir.path().join("legacy-ran");
    let command: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        format!("cat > /dev/null; touch {}", marker.display()),
    ];
    // Topics exist once a node has run.
    Server::start(&data, &[]).stop();
    store_legacy_subscription(&data, "legacy", &command);

    let server = Server::start(&data, &[]);
    put_keys(&server, "bkt", &["one".to_string()]);
    let status = wait_status(&server, "legacy", "paused", Duration::from_secs(20), |s| {
        s["state"] == "paused"
    });
    let reason = status["paused_reason"].as_str().unwrap();
    assert!(
        reason.contains("--function") && reason.contains("inline command"),
        "{status}"
    );
    assert!(
        server.stderr_text().contains("not delivering"),
        "the pause is logged"
    );
    assert!(!marker.exists(), "an undeclared command ran");
    server.stop();

    // Declared (under any name) with exactly the same command: it runs from where it was.
    let declared = format!("--function=legacy-fn={}", json!(command));
    let server = Server::start(&data, &[&declared]);
    wait_for(
        "the legacy function to run",
        Duration::from_secs(20),
        || {
            marker
                .exists()
                .then_some(())
                .ok_or_else(|| "not yet".to_string())
        },
    );
    let status = subscription_status(&server, "legacy");
    assert_ne!(status["state"], "paused", "{status}");
    server.stop();
}

#[test]
fn a_named_function_no_longer_declared_pauses_its_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let marker = dir.path().join("ran");
    let server = Server::start(&data, &[&touching("thumbs", &marker)]);
    create_subscription(
        &server,
        &json!({"name": "thumbs", "sink": {"type": "function", "mode": "process",
                "function": "thumbs"}}),
    );
    server.stop();
    let server = Server::start(&data, &[]);
    put_keys(&server, "bkt", &["k".to_string()]);
    let status = wait_status(&server, "thumbs", "paused", Duration::from_secs(20), |s| {
        s["state"] == "paused"
    });
    assert!(
        status["paused_reason"]
            .as_str()
            .unwrap()
            .contains("function 'thumbs' is not declared"),
        "{status}"
    );
    assert!(!marker.exists());
    server.stop();
}

/// `tidemark serve` with `args`, expected to exit: its status and stderr.
fn serve_exits(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(args)
        .env_remove("TIDEMARK_ADMIN_TOKEN")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status.success(), err);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_listener_beyond_loopback_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--listen", "0.0.0.0:0"],
        vec![
            "--listen",
            "127.0.0.1:0",
            "--s3-listen",
            "0.0.0.0:0",
            "--s3-access-key",
            "k",
            "--s3-secret-key",
            "s",
        ],
    ] {
        let (ok, err) = serve_exits(dir.path(), &args, &[]);
        assert!(!ok, "{args:?} started");
        assert!(
            err.contains("not loopback")
                && err.contains("--admin-token-file")
                && err.contains("TIDEMARK_ADMIN_TOKEN")
                && err.contains("--insecure-no-auth"),
            "{args:?}: {err}"
        );
    }
    assert!(
        !dir.path().join("data").join("log").exists(),
        "refused before opening anything"
    );

    // A token in the environment is enough.
    let server = Server::start_with_env(
        &Backend::Embedded,
        &dir.path().join("with-token"),
        &["--listen", "0.0.0.0:0"],
        &[("TIDEMARK_ADMIN_TOKEN", ADMIN)],
    );
    let (status, _) = server.get("/v1/objects");
    assert_eq!(status, 401, "the token is required");
    let (status, ready) = server.get("/readyz");
    assert_eq!(status, 200, "{ready}");
    assert!(ready.get("warnings").is_none(), "{ready}");
    server.stop();
}

#[test]
fn insecure_no_auth_starts_open_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--listen", "0.0.0.0:0", "--insecure-no-auth"],
    );
    let (status, _) = server.get("/v1/objects");
    assert_eq!(status, 200, "open on purpose");
    assert!(
        server.stderr_text().contains("WARN")
            && server.stderr_text().contains("--insecure-no-auth"),
        "{}",
        server.stderr_text()
    );
    let (_, metrics) = server.get_text("/metrics");
    assert!(
        metrics.lines().any(|l| l == "tidemark_insecure_no_auth 1"),
        "{metrics}"
    );
    let (status, ready) = server.get("/readyz");
    assert_eq!(status, 200, "{ready}");
    assert!(
        ready["warnings"][0]
            .as_str()
            .unwrap()
            .contains("--insecure-no-auth"),
        "{ready}"
    );
    server.stop();

    // On loopback the flag changes nothing.
    let server = Server::start(&dir.path().join("data"), &["--insecure-no-auth"]);
    let (_, metrics) = server.get_text("/metrics");
    assert!(
        metrics.lines().any(|l| l == "tidemark_insecure_no_auth 0"),
        "{metrics}"
    );
    server.stop();
}
