//! Access control on the HTTP API against a real server: each scope allows what it names and
//! nothing else, bucket patterns, a revoked token refused at once, secrets never shown again
//! nor stored, the audit trail naming the token, the per-token rate limit, and bad input.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::{Value, json};

const ADMIN: &str = "admin-secret-for-tests-0123456789";

/// A server whose bootstrap admin token is [`ADMIN`], read from a file.
fn start_closed(dir: &Path, extra: &[&str]) -> Server {
    let file = dir.join("admin.token");
    std::fs::write(&file, format!("{ADMIN}\n")).unwrap();
    let mut args = vec!["--admin-token-file", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    Server::start(&dir.join("data"), &args)
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    www_authenticate: Option<String>,
    body: Value,
}

/// `method path` with `body` (JSON text or raw bytes), as `token` (none: no header).
fn call(server: &Server, token: Option<&str>, method: &str, path: &str, body: &str) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client()
        .request(method, format!("{}{path}", server.url))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = req.send().unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (retry_after, www_authenticate) = (header("retry-after"), header("www-authenticate"));
    let status = resp.status().as_u16();
    Answer {
        status,
        retry_after,
        www_authenticate,
        body: resp.json().unwrap_or(Value::Null),
    }
}

/// Create a token as `admin`; returns (id, secret).
fn create_token(server: &Server, admin: &str, spec: Value) -> (String, String) {
    let a = call(server, Some(admin), "POST", "/v1/tokens", &spec.to_string());
    assert_eq!(a.status, 201, "{}", a.body);
    (
        a.body["id"].as_str().unwrap().to_string(),
        a.body["secret"].as_str().unwrap().to_string(),
    )
}

fn message(a: &Answer) -> String {
    a.body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn mutation(bucket: &str, key: &str) -> String {
    json!({"mutations": [{"op": "put", "bucket": bucket, "key": key, "size": 1}]}).to_string()
}

#[test]
fn each_scope_allows_what_it_names_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_closed(dir.path(), &[]);
    let scopes = [
        "ingest",
        "read",
        "subscriptions",
        "filters",
        "replay",
        "admin",
    ];
    let tokens: Vec<(&str, String)> = scopes
        .iter()
        .map(|s| (*s, create_token(&server, ADMIN, json!({"scopes": [s]})).1))
        .collect();
    let put = mutation("b", "k");
    // (scopes allowed besides admin, method, path, body). An allowed request may still be
    // refused by its handler (400, 404); it must never be 401 or 403.
    let table: &[(&[&str], &str, &str, &str)] = &[
        (&["ingest"], "POST", "/v1/mutations", &put),
        (&["ingest"], "PUT", "/v1/content/b/k2", "bytes"),
        (&["ingest"], "POST", "/v1/sync", "{}"),
        (&["ingest"], "POST", "/v1/ingest/s3-events", "{}"),
        (&["read"], "GET", "/v1/objects?bucket=b", ""),
        (&["read"], "GET", "/v1/objects/b/k", ""),
        (&["read"], "GET", "/v1/content/b/k2", ""),
        (&["read"], "GET", "/v1/log", ""),
        (&["read"], "GET", "/v1/buckets", ""),
        (&["read"], "GET", "/metrics", ""),
        (&["read"], "POST", "/v1/rules/test", "{}"),
        (&["read", "subscriptions"], "GET", "/v1/subscriptions", ""),
        (&["subscriptions"], "POST", "/v1/subscriptions", "{}"),
        (&["subscriptions"], "DELETE", "/v1/subscriptions/nope", ""),
        (&["read", "filters"], "GET", "/v1/filters", ""),
        (&["filters"], "POST", "/v1/filters/nope", ""),
        (&["filters"], "DELETE", "/v1/filters/nope", ""),
        (&["read", "replay"], "GET", "/v1/replays", ""),
        (&["replay"], "POST", "/v1/replays", "{}"),
        (&["replay"], "POST", "/v1/restores", "{}"),
        (&[], "GET", "/v1/tokens", ""),
        (&[], "POST", "/v1/tokens", r#"{"scopes": ["read"]}"#),
        (&[], "GET", "/v1/config/events", ""),
        (&[], "PATCH", "/v1/buckets/nope", "{}"),
        (&[], "POST", "/v1/admin/blobs/gc", ""),
        (&[], "POST", "/subjects/x/versions", "{}"),
    ];
    let mut wrong = Vec::new();
    for (allowed, method, path, body) in table {
        for (scope, secret) in &tokens {
            let a = call(&server, Some(secret), method, path, body);
            let may = *scope == "admin" || allowed.contains(scope);
            let refused = a.status == 401 || a.status == 403;
            if may == refused {
                wrong.push(format!(
                    "{scope}: {method} {path} -> {} {}",
                    a.status, a.body
                ));
            }
            if refused && a.status == 403 {
                assert!(message(&a).contains("scope"), "{}", a.body);
            }
        }
        let anonymous = call(&server, None, method, path, body);
        if anonymous.status != 401 {
            wrong.push(format!("no token: {method} {path} -> {}", anonymous.status));
        }
    }
    assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));
    // Health checks and the schema registry's reads stay open.
    assert_eq!(call(&server, None, "GET", "/healthz", "").status, 200);
    assert_eq!(call(&server, None, "GET", "/subjects", "").status, 200);
    // What a 403 says: the scope needed and the scopes held.
    let read = &tokens[1].1;
    let a = call(&server, Some(read), "POST", "/v1/mutations", &put);
    assert_eq!(a.status, 403);
    assert!(message(&a).contains("'ingest' scope"), "{}", a.body);
    assert!(message(&a).contains("has: read"), "{}", a.body);
}

#[test]
fn bucket_patterns_limit_objects() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_closed(dir.path(), &[]);
    let (_, photos) = create_token(
        &server,
        ADMIN,
        json!({"scopes": ["ingest", "read"], "buckets": ["photos*"]}),
    );
    let t = Some(photos.as_str());
    let ok = call(
        &server,
        t,
        "POST",
        "/v1/mutations",
        &mutation("photos-1", "a"),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    let no = call(&server, t, "POST", "/v1/mutations", &mutation("logs", "a"));
    assert_eq!(no.status, 403, "{}", no.body);
    assert!(message(&no).contains("'logs'"), "{}", no.body);
    // One bucket outside the pattern refuses the whole batch: nothing is written.
    let mixed = json!({"mutations": [
        {"op": "put", "bucket": "photos-1", "key": "b", "size": 1},
        {"op": "put", "bucket": "logs", "key": "b", "size": 1},
    ]});
    let a = call(&server, t, "POST", "/v1/mutations", &mixed.to_string());
    assert_eq!(a.status, 403, "{}", a.body);
    let all = call(
        &server,
        Some(ADMIN),
        "GET",
        "/v1/objects?bucket=photos-1",
        "",
    );
    let keys: Vec<&str> = all.body["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["a"], "{}", all.body);
    for (method, path, want) in [
        ("GET", "/v1/objects?bucket=photos-1", 200),
        ("GET", "/v1/objects/photos-1/a", 200),
        ("GET", "/v1/objects?bucket=logs", 403),
        ("GET", "/v1/objects", 403),
        ("GET", "/v1/objects/logs/a", 403),
        ("PUT", "/v1/content/logs/x", 403),
        ("GET", "/v1/content/logs/x", 403),
        ("PUT", "/v1/content/photos-2/x", 200),
    ] {
        let a = call(&server, t, method, path, "bytes");
        assert_eq!(a.status, want, "{method} {path}: {}", a.body);
    }
    let a = call(
        &server,
        t,
        "POST",
        "/v1/restores",
        &json!({"bucket": "logs", "at": "now"}).to_string(),
    );
    assert_eq!(a.status, 403, "{}", a.body);
}

/// Every byte under `dir` holds `needle`?
fn found_under(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            hits.extend(found_under(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            hits.push(path.display().to_string());
        }
    }
    hits
}

fn cli(server: &Server, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .args(["--server", &server.url])
        .env("TIDEMARK_TOKEN", token)
        .output()
        .unwrap()
}

#[test]
fn revoked_token_is_refused_at_once_and_secrets_are_never_shown_or_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_closed(dir.path(), &[]);
    // Created with the CLI: the secret is printed once, on stdout.
    let out = cli(
        &server,
        ADMIN,
        &[
            "token",
            "create",
            "--scopes",
            "read,subscriptions",
            "--description",
            "ci",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(secret.starts_with("tmk_tok_"), "{secret}");
    let id = secret
        .strip_prefix("tmk_")
        .unwrap()
        .rsplit_once('_')
        .unwrap()
        .0
        .to_string();
    assert_eq!(
        call(&server, Some(&secret), "GET", "/v1/subscriptions", "").status,
        200
    );

    // Never shown again: not by the list, the token's own view, the CLI or the audit trail.
    let hash_field = "sha256";
    for path in [
        "/v1/tokens",
        &format!("/v1/tokens/{id}"),
        "/v1/config/events",
    ] {
        let a = call(&server, Some(ADMIN), "GET", path, "");
        assert_eq!(a.status, 200, "{}", a.body);
        let text = a.body.to_string();
        assert!(!text.contains(&secret), "{path} shows the secret: {text}");
        assert!(!text.contains(hash_field), "{path} shows the hash: {text}");
    }
    let ls = cli(&server, ADMIN, &["token", "ls"]);
    let listed = String::from_utf8(ls.stdout).unwrap();
    assert!(ls.status.success() && listed.contains(&id), "{listed}");
    assert!(
        listed.contains("read,subscriptions") && listed.contains("ci"),
        "{listed}"
    );
    assert!(!listed.contains(&secret[id.len() + 5..]), "{listed}");
    // Stored hashed: no file of the data directory holds the secret.
    let hits = found_under(&server.data_dir, secret.as_bytes());
    assert!(hits.is_empty(), "the secret is stored in {hits:?}");

    // A change made with the token is audited under its id.
    let sub =
        json!({"name": "audited", "sink": {"type": "webhook", "url": "https://example.com/h"}});
    let a = call(
        &server,
        Some(&secret),
        "POST",
        "/v1/subscriptions",
        &sub.to_string(),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    let a = call(
        &server,
        Some(ADMIN),
        "GET",
        "/v1/config/events?kind=subscription&name=audited",
        "",
    );
    assert_eq!(a.body["events"][0]["action"], "created", "{}", a.body);
    assert_eq!(a.body["events"][0]["actor"], id.as_str(), "{}", a.body);

    // Revoked: refused by the very next request.
    let out = cli(&server, ADMIN, &["token", "revoke", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = call(&server, Some(&secret), "GET", "/v1/subscriptions", "");
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(message(&a).contains("revoked"), "{}", a.body);
    let a = call(
        &server,
        Some(ADMIN),
        "GET",
        "/v1/config/events?kind=token",
        "",
    );
    let trail: Vec<(String, String)> = a.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().into(),
                e["actor"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        trail,
        [
            ("created".to_string(), "bootstrap-admin".to_string()),
            ("deleted".to_string(), "bootstrap-admin".to_string())
        ]
    );
    // The CLI says what is wrong with a revoked token.
    let out = cli(&server, &secret, &["sub", "ls"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"));
    // ...and revoking again names the problem.
    let a = call(
        &server,
        Some(ADMIN),
        "DELETE",
        &format!("/v1/tokens/{id}"),
        "",
    );
    assert_eq!(a.status, 404, "{}", a.body);
}

#[test]
fn a_server_is_open_until_its_first_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    assert_eq!(
        call(&server, None, "GET", "/v1/subscriptions", "").status,
        200
    );
    let (_, admin) = create_token(&server, "", json!({"scopes": ["admin"]}));
    let a = call(&server, None, "GET", "/v1/subscriptions", "");
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(
        call(&server, Some(&admin), "GET", "/v1/subscriptions", "").status,
        200
    );
    // The same holds after a restart: tokens are on `_config`.
    server.stop();
    let server = Server::start(dir.path(), &[]);
    assert_eq!(call(&server, None, "GET", "/v1/log", "").status, 401);
    assert_eq!(
        call(&server, Some(&admin), "GET", "/v1/log", "").status,
        200
    );
}

#[test]
fn requests_over_the_rate_get_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_closed(dir.path(), &["--token-rate-per-sec", "2"]);
    let (_, a_token) = create_token(&server, ADMIN, json!({"scopes": ["read"]}));
    let (_, b_token) = create_token(&server, ADMIN, json!({"scopes": ["read"]}));
    let statuses: Vec<u16> = (0..3)
        .map(|_| call(&server, Some(&a_token), "GET", "/v1/log", "").status)
        .collect();
    assert_eq!(statuses, [200, 200, 429]);
    let a = call(&server, Some(&a_token), "GET", "/v1/log", "");
    assert_eq!(a.status, 429);
    assert_eq!(a.body["error"]["code"], "rate_limited", "{}", a.body);
    let secs: u64 = a.retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&secs), "{secs}");
    // Another token has its own allowance.
    assert_eq!(
        call(&server, Some(&b_token), "GET", "/v1/log", "").status,
        200
    );
    // ...and the first gets its back with time.
    wait_for(
        "the allowance back",
        std::time::Duration::from_secs(5),
        || match call(&server, Some(&a_token), "GET", "/v1/log", "").status {
            200 => Ok(()),
            s => Err(format!("{s}")),
        },
    );
}

#[test]
fn bad_credentials_and_bad_tokens_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_closed(dir.path(), &[]);
    let with_header = |value: &str| {
        let resp = client()
            .get(format!("{}/v1/log", server.url))
            .header("authorization", value)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().unwrap())
    };
    let none = call(&server, None, "GET", "/v1/log", "");
    assert_eq!(none.status, 401);
    assert!(
        none.www_authenticate
            .as_deref()
            .unwrap()
            .starts_with("Bearer")
    );
    assert!(
        message(&none).contains("Authorization: Bearer"),
        "{}",
        none.body
    );
    for (header, says) in [
        ("Basic YWRtaW46YWRtaW4=", "must be `Bearer <token>`"),
        ("Bearer", "must be `Bearer <token>`"),
        ("Bearer nonsense", "not a Tidemark token"),
        ("Bearer tmk_tok_000000000000_0123", "unknown, revoked"),
    ] {
        let (status, body) = with_header(header);
        assert_eq!(status, 401, "{header}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{header}: {body}"
        );
    }
    // A wrong secret for a real id is refused like an unknown one.
    let (id, secret) = create_token(&server, ADMIN, json!({"scopes": ["read"]}));
    let forged = format!("tmk_{id}_{}", "0".repeat(32));
    assert_ne!(forged, secret);
    assert_eq!(with_header(&format!("Bearer {forged}")).0, 401);
    assert_eq!(with_header(&format!("bearer {secret}")).0, 200);
    for (spec, field) in [
        (json!({"scopes": ["root"]}), "scopes[0]"),
        (json!({"scopes": []}), "scopes"),
        (
            json!({"scopes": ["read"], "buckets": ["photos/*"]}),
            "buckets[0]",
        ),
        (json!({"scopes": ["read"], "bucket": "x"}), "bucket"),
    ] {
        let a = call(
            &server,
            Some(ADMIN),
            "POST",
            "/v1/tokens",
            &spec.to_string(),
        );
        assert_eq!(a.status, 400, "{spec}: {}", a.body);
        assert_eq!(a.body["error"]["field"], field, "{spec}: {}", a.body);
    }
    let a = call(
        &server,
        Some(ADMIN),
        "POST",
        "/v1/tokens",
        r#"{"scopes": ["root"]}"#,
    );
    assert!(message(&a).contains("'root' is not a scope"), "{}", a.body);
    // A bootstrap token too short to be safe stops the server from starting.
    let file = dir.path().join("short.token");
    std::fs::write(&file, "short").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-token-file"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16 characters"));
}
