//! The web console (`/ui`): its sign-in and files through HTTP, then in a real browser:
//! Debian's chromium driven by Selenium (tests/py/console_*.py) against a real server on
//! loopback, signed in through the login page with the server's tokens. Screenshots of each
//! page are saved under the build's target dir (`console-screenshots/`), not in the
//! repository.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use reqwest::blocking::Response;
use serde_json::{Value, json};

const ADMIN: &str = "console-admin-secret-0123456789";

/// A server with a bootstrap admin token whose webhooks may reach loopback receivers.
fn start(dir: &Path) -> Server {
    let file = dir.join("admin.token");
    std::fs::write(&file, format!("{ADMIN}\n")).unwrap();
    Server::start(
        &dir.join("data"),
        &[
            "--admin-token-file",
            file.to_str().unwrap(),
            "--allow-destinations",
            "loopback",
        ],
    )
}

/// Where screenshots go: beside the build, so a clean clone's run leaves them as artifacts.
fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("console-screenshots")
}

/// Run `tests/py/<script> <scenario>` against a fresh server; its output on failure.
fn browser(script: &str, scenario: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let out = Command::new("python3")
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/py")
                .join(script),
        )
        .arg(scenario)
        .env("TIDEMARK_URL", &server.url)
        .env("TIDEMARK_ADMIN_TOKEN", ADMIN)
        .env("CONSOLE_SCREENSHOTS", screenshots())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{script} {scenario} failed:\nstdout:\n{}\nstderr:\n{}\nserver:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.stderr_text()
    );
    server.stop();
}

#[test]
fn the_live_view_shows_posted_mutations_in_per_key_order_with_before_and_after() {
    browser("console_live.py", "live_view");
}

#[test]
fn a_restore_dry_run_shows_the_plan_and_the_run_makes_now_equal_the_instant() {
    browser("console_live.py", "restore");
}

#[test]
fn objects_now_and_at_an_instant_with_history() {
    browser("console_live.py", "objects");
}

#[test]
fn dead_letters_of_a_failing_webhook_are_redriven_from_the_page() {
    browser("console_ops.py", "dead_letters_redrive");
}

#[test]
fn a_wat_filter_tested_on_the_last_events_shows_the_apis_match_rate() {
    browser("console_ops.py", "filter_test");
}

#[test]
fn a_read_only_token_sees_no_controls_that_change_things() {
    browser("console_ops.py", "read_only");
}

/// `method path` with optional cookie, CSRF token and JSON body.
fn ui_call(
    server: &Server,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    csrf: Option<&str>,
    body: Option<Value>,
) -> Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client().request(method, format!("{}{path}", server.url));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    if let Some(t) = csrf {
        req = req.header("x-csrf-token", t);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    req.send().unwrap()
}

/// `method path` as bearer `token`: status and JSON.
fn as_token(
    server: &Server,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client()
        .request(method, format!("{}{path}", server.url))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().unwrap();
    (resp.status().as_u16(), resp.json().unwrap_or(Value::Null))
}

/// `POST /ui/login` with `body`, no cookie.
fn login_attempt(server: &Server, body: Value) -> Response {
    ui_call(server, "POST", "/ui/login", None, None, Some(body))
}

/// Sign in with `token`: the cookie to send back (`name=value`) and the CSRF token.
fn sign_in(server: &Server, token: &str) -> (String, String) {
    let resp = login_attempt(server, json!({"token": token}));
    assert_eq!(resp.status(), 200);
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    let attrs: Vec<&str> = set.split("; ").collect();
    assert!(attrs.contains(&"HttpOnly"), "{set}");
    assert!(attrs.contains(&"SameSite=Strict"), "{set}");
    assert!(attrs.contains(&"Path=/"), "{set}");
    assert!(
        !set.contains("Expires") && !set.contains("Max-Age"),
        "a session cookie: {set}"
    );
    assert!(!set.contains("Secure"), "plain HTTP listener: {set}");
    let body: Value = resp.json().unwrap();
    assert_eq!(body["logged_in"], true);
    assert!(body.get("token").is_none() && !body.to_string().contains(token));
    (
        attrs[0].to_string(),
        body["csrf"].as_str().unwrap().to_string(),
    )
}

#[test]
fn signing_in_trades_a_token_for_a_strict_cookie_and_changes_need_its_csrf_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let (status, _) = server.get("/ui/session");
    assert_eq!(status, 200, "the session endpoint is public");
    let body: Value = ui_call(&server, "GET", "/ui/session", None, None, None)
        .json()
        .unwrap();
    assert_eq!(body, json!({"auth": true, "logged_in": false}));

    // Bad sign-ins name the problem.
    let resp = login_attempt(&server, json!({"token": "wrong-token-0123456789"}));
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("set-cookie").is_none());
    let resp = login_attempt(&server, json!({"tok": "x"}));
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().unwrap()["error"]["field"], "token");
    let resp = client()
        .post(format!("{}/ui/login", server.url))
        .header("origin", "http://evil.example")
        .header("content-type", "application/json")
        .body(json!({"token": ADMIN}).to_string())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 403, "a sign-in posted from another site");

    let (cookie, csrf) = sign_in(&server, ADMIN);
    let body: Value = ui_call(&server, "GET", "/ui/session", Some(&cookie), None, None)
        .json()
        .unwrap();
    assert_eq!(body["token_id"], "bootstrap-admin");
    assert_eq!(body["csrf"], csrf.as_str());
    // Reads work with the cookie alone; changes need the CSRF token too.
    let resp = ui_call(
        &server,
        "GET",
        "/v1/subscriptions",
        Some(&cookie),
        None,
        None,
    );
    assert_eq!(resp.status(), 200);
    let change = json!({"mutations": [{"op": "put", "bucket": "bkt", "key": "k", "size": 1}]});
    let resp = ui_call(
        &server,
        "POST",
        "/v1/mutations",
        Some(&cookie),
        None,
        Some(change.clone()),
    );
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.json::<Value>().unwrap()["error"]["code"], "csrf");
    let resp = ui_call(
        &server,
        "POST",
        "/v1/mutations",
        Some(&cookie),
        Some("not-the-token"),
        Some(change.clone()),
    );
    assert_eq!(resp.status(), 403);
    let (status, objects) = as_token(&server, "GET", "/v1/objects?bucket=bkt", ADMIN, None);
    assert_eq!(status, 200);
    assert_eq!(
        objects["objects"].as_array().map(Vec::len),
        Some(0),
        "nothing refused was written"
    );
    let resp = ui_call(
        &server,
        "POST",
        "/v1/mutations",
        Some(&cookie),
        Some(&csrf),
        Some(change),
    );
    assert!(resp.status().is_success(), "{}", resp.text().unwrap());

    // Another site's page cannot use the cookie, even for a read (a WebSocket handshake is
    // not held back by CORS).
    let resp = client()
        .get(format!("{}/v1/watch/ws?bucket=bkt", server.url))
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.json::<Value>().unwrap()["error"]["code"],
        "cross_origin"
    );
    let host = server.url.trim_start_matches("http://").to_string();
    let resp = client()
        .get(format!("{}/v1/subscriptions", server.url))
        .header("cookie", &cookie)
        .header("origin", format!("http://{host}"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "the console's own origin");

    // The same scopes as the token: a read-only session may not change anything.
    let (status, made) = as_token(
        &server,
        "POST",
        "/v1/tokens",
        ADMIN,
        Some(json!({"description": "viewer", "scopes": ["read"]})),
    );
    assert_eq!(status, 201, "{made}");
    let viewer = made["secret"].as_str().unwrap().to_string();
    let (vcookie, vcsrf) = sign_in(&server, &viewer);
    let resp = ui_call(
        &server,
        "GET",
        "/v1/objects?bucket=bkt",
        Some(&vcookie),
        None,
        None,
    );
    assert_eq!(resp.status(), 200);
    let resp = ui_call(
        &server,
        "POST",
        "/v1/replays",
        Some(&vcookie),
        Some(&vcsrf),
        Some(json!({"subscription": "s"})),
    );
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.json::<Value>().unwrap()["error"]["code"], "forbidden");

    // Revoking the token ends its sessions at once.
    let id = made["id"].as_str().unwrap();
    let (status, _) = as_token(&server, "DELETE", &format!("/v1/tokens/{id}"), ADMIN, None);
    assert!((200..300).contains(&status));
    let resp = ui_call(
        &server,
        "GET",
        "/v1/objects?bucket=bkt",
        Some(&vcookie),
        None,
        None,
    );
    assert_eq!(resp.status(), 401);

    // Signing out needs the CSRF token, then the cookie is worthless.
    let resp = ui_call(&server, "POST", "/ui/logout", Some(&cookie), None, None);
    assert_eq!(resp.status(), 403);
    let resp = ui_call(
        &server,
        "POST",
        "/ui/logout",
        Some(&cookie),
        Some(&csrf),
        None,
    );
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let resp = ui_call(
        &server,
        "GET",
        "/v1/subscriptions",
        Some(&cookie),
        None,
        None,
    );
    assert_eq!(resp.status(), 401);
    assert!(resp.text().unwrap().contains("sign in again"));
    server.stop();
}

#[test]
fn the_pages_are_served_from_the_binary_compressed_revalidated_and_locked_down() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let page = ui_call(&server, "GET", "/ui", None, None, None);
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let html = page.text().unwrap();
    assert!(html.contains("/ui/assets/js/app.js"), "{html}");

    let gz = client()
        .get(format!("{}/ui/assets/js/app.js", server.url))
        .header("accept-encoding", "gzip")
        .send()
        .unwrap();
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    assert!(
        gz.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let etag = gz.headers()["etag"].to_str().unwrap().to_string();
    let compressed = gz.bytes().unwrap().len();
    let plain = ui_call(&server, "GET", "/ui/assets/js/app.js", None, None, None);
    assert!(plain.headers().get("content-encoding").is_none());
    assert!(plain.bytes().unwrap().len() > compressed);
    let again = client()
        .get(format!("{}/ui/assets/js/app.js", server.url))
        .header("if-none-match", &etag)
        .send()
        .unwrap();
    assert_eq!(again.status(), 304);

    for missing in [
        "/ui/assets/nothing.js",
        "/ui/assets/../Cargo.toml",
        "/ui/assets/js/../../build.rs",
    ] {
        let resp = ui_call(&server, "GET", missing, None, None, None);
        assert_eq!(resp.status(), 404, "{missing}");
    }
    server.stop();
}
