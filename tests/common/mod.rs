//! Test harness: runs the real `tidemark` binary as a child process on loopback ports.
//! `receiver` runs the webhook endpoint the delivery tests send to.
#![allow(dead_code)]

pub mod aws;
pub mod kafka_tls;
pub mod moto;
pub mod queues;
pub mod receiver;
pub mod relay;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_tidemark");

pub use tidemark_core::log::kafka::test_broker::TestBroker;

/// The log a test runs on.
pub enum Backend {
    /// Segment files in the node's data directory.
    Embedded,
    /// A Tansu broker on loopback, started for this test.
    Kafka(TestBroker),
}

impl Backend {
    pub fn kafka() -> Backend {
        Backend::Kafka(TestBroker::start())
    }

    /// Flags that select this log, for `serve` and the commands that read the log.
    pub fn log_args(&self) -> Vec<String> {
        match self {
            Backend::Embedded => Vec::new(),
            Backend::Kafka(b) => {
                let mut args = vec![
                    "--log".into(),
                    "kafka".into(),
                    "--kafka-brokers".into(),
                    b.addr.clone(),
                ];
                for (k, v) in TestBroker::producer_workaround() {
                    args.extend(["--kafka-property".into(), format!("{k}={v}")]);
                }
                args
            }
        }
    }
}

/// A running `tidemark serve`.
pub struct Server {
    child: Option<Child>,
    pub url: String,
    /// `http://ADDR` of the S3 API, when started with `--s3-listen`.
    pub s3_url: Option<String>,
    pub data_dir: PathBuf,
    pub stderr: PathBuf,
}

impl Server {
    /// A server on the embedded log.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_on(&Backend::Embedded, data_dir, extra)
    }

    pub fn start_on(backend: &Backend, data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_with_env(backend, data_dir, extra, &[])
    }

    /// With extra environment variables (`TIDEMARK_*` settings).
    pub fn start_with_env(
        backend: &Backend,
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        std::fs::create_dir_all(data_dir).unwrap();
        let stderr = data_dir.with_extension(format!("stderr-{}.log", std::process::id()));
        let err_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr)
            .unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(backend.log_args())
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(err_file)
            .spawn()
            .expect("start tidemark serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let (s3_tx, s3_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let Some(rest) = line.split("listening on ").nth(1) else {
                    continue;
                };
                let url = rest.split_whitespace().next().unwrap().to_string();
                let _ = if line.starts_with("s3 ") {
                    s3_tx.send(url)
                } else {
                    tx.send(url)
                };
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not start; stderr:\n{}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
        };
        let s3_url = extra.contains(&"--s3-listen").then(|| {
            s3_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("s3 address")
        });
        let server = Server {
            child: Some(child),
            url,
            s3_url,
            data_dir: data_dir.to_path_buf(),
            stderr,
        };
        // On Kafka a node writes only once the ingest group gave it partitions.
        if let Backend::Kafka(_) = backend {
            server.wait_writing_any();
        }
        server
    }

    /// The server process's id (to read its `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "server exited with {status}");
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let resp = client().get(format!("{}{path}", self.url)).send().unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    pub fn post(&self, path: &str, body: impl Into<reqwest::blocking::Body>) -> (u16, Value) {
        let resp = client()
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    pub fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send_json(reqwest::Method::PUT, path, body)
    }

    pub fn patch(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send_json(reqwest::Method::PATCH, path, body)
    }

    fn send_json(&self, method: reqwest::Method, path: &str, body: &Value) -> (u16, Value) {
        let resp = client()
            .request(method, format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// Status and JSON body (`Null` when empty).
    pub fn delete(&self, path: &str) -> (u16, Value) {
        let resp = client()
            .delete(format!("{}{path}", self.url))
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// `GET` as text (for `/metrics`).
    pub fn get_text(&self, path: &str) -> (u16, String) {
        let resp = client().get(format!("{}{path}", self.url)).send().unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().unwrap_or_default())
    }

    /// Wait until this node writes some partition.
    pub fn wait_writing_any(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (_, v) = self.get("/healthz");
            if v["writes_partitions"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the node writes no partition: {v}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until this node writes `partitions` partitions (a node on Kafka takes them from the
    /// ingest group after it starts).
    pub fn wait_writing(&self, partitions: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (_, v) = self.get("/healthz");
            if v["writes_partitions"]
                .as_array()
                .is_some_and(|a| a.len() == partitions)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the node does not write {partitions} partitions: {v}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until the index has applied every record in the log.
    pub fn wait_caught_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, v) = self.get("/healthz");
            if status == 200 && v["index_lag"] == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "index did not catch up: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Run the CLI; panics with its output unless it succeeds.
pub fn tidemark(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "tidemark {args:?} failed ({}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run tidemark")
}

/// Every event in the log, in log order per partition, as JSON.
pub fn log_events(backend: &Backend, data_dir: &Path) -> Vec<Value> {
    let mut args = vec![
        "log",
        "tail",
        "--from-beginning",
        "--json",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ];
    let log_args = backend.log_args();
    args.extend(log_args.iter().map(String::as_str));
    tidemark(&args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `state ls --json --history` of a data directory.
pub fn index_dump(data_dir: &Path) -> String {
    tidemark(&[
        "state",
        "ls",
        "--json",
        "--history",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ])
}

/// Rebuild the index of `data_dir` from its log into a fresh directory; return its dump.
pub fn rebuilt_dump(backend: &Backend, data_dir: &Path, scratch: &Path) -> String {
    let into = scratch.join(format!("rebuilt-{}", fastrand::u64(..)));
    let mut args = vec![
        "state",
        "rebuild",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--into",
        into.to_str().unwrap(),
    ];
    let log_args = backend.log_args();
    args.extend(log_args.iter().map(String::as_str));
    tidemark(&args);
    index_dump(&into)
}

/// A random mutation over `keys` keys in bucket `bucket`.
pub fn random_mutation(rng: &mut fastrand::Rng, bucket: &str, keys: usize) -> Value {
    let key = format!("dir{}/key-{:05}", rng.usize(..4), rng.usize(..keys));
    let base = serde_json::json!({"bucket": bucket, "key": key});
    let mut m = base.as_object().unwrap().clone();
    let roll = rng.u8(..100);
    let op = match roll {
        0..=49 => "put",
        50..=59 => "delete",
        60..=74 => "tag",
        75..=79 => "untag",
        _ => "metadata",
    };
    m.insert("op".into(), op.into());
    match op {
        "put" => {
            m.insert("size".into(), rng.u32(..1 << 20).into());
            m.insert("etag".into(), format!("\"{:x}\"", rng.u64(..)).into());
            m.insert("content_type".into(), "image/jpeg".into());
            if rng.bool() {
                m.insert(
                    "metadata".into(),
                    serde_json::json!({"team": format!("t{}", rng.u8(..5))}),
                );
            }
        }
        "tag" => {
            m.insert("tags".into(), serde_json::json!({"stage": format!("s{}", rng.u8(..3)), "n": rng.u8(..).to_string()}));
        }
        "metadata" => {
            m.insert(
                "metadata".into(),
                serde_json::json!({"camera": format!("c{}", rng.u8(..9))}),
            );
        }
        _ => {}
    }
    Value::Object(m)
}

/// Post `n` random mutations ([`random_mutation`]) in one request, which must answer 200;
/// its response.
pub fn post_random(
    server: &Server,
    rng: &mut fastrand::Rng,
    bucket: &str,
    keys: usize,
    n: usize,
) -> Value {
    let mutations: Vec<Value> = (0..n).map(|_| random_mutation(rng, bucket, keys)).collect();
    let (status, v) = server.post(
        "/v1/mutations",
        serde_json::json!({ "mutations": mutations }).to_string(),
    );
    assert_eq!(status, 200, "{v}");
    v
}

/// Event ids acknowledged in a `POST /v1/mutations` response.
pub fn acked_ids(resp: &Value) -> Vec<String> {
    resp["results"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|x| x["event_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// What every crash and failover test checks at the end: the log holds every acknowledged
/// mutation exactly once, each key's sequences run 1, 2, 3, ... in log order (one writer per
/// key, none reused), and the node's index equals one rebuilt from the log.
pub fn assert_log_and_index_intact(
    backend: &Backend,
    data_dir: &Path,
    acked: &[String],
    scratch: &Path,
) {
    let events = log_events(backend, data_dir);
    let ids: std::collections::HashSet<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), events.len(), "no event twice");
    let missing: Vec<_> = acked
        .iter()
        .filter(|id| !ids.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged mutations missing from the log: {missing:?}"
    );
    let mut last: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    // Bucket-level events (BucketCreated, ...) name no key and carry no per-key sequence.
    for e in events.iter().filter(|e| e["key"] != "") {
        let k = format!(
            "{}/{}",
            e["bucket"].as_str().unwrap(),
            e["key"].as_str().unwrap()
        );
        let seq = e["sequence"].as_i64().unwrap();
        let prev = last.insert(k.clone(), seq).unwrap_or(0);
        assert_eq!(seq, prev + 1, "{k}: sequence {seq} follows {prev}");
    }
    assert_eq!(
        index_dump(data_dir),
        rebuilt_dump(backend, data_dir, scratch),
        "index differs from a rebuild"
    );
}

/// `POST /v1/mutations` of one `put` per key; the acknowledged event ids, in order.
pub fn put_keys(server: &Server, bucket: &str, keys: &[String]) -> Vec<String> {
    let mutations: Vec<Value> = keys
        .iter()
        .map(|k| serde_json::json!({"op": "put", "bucket": bucket, "key": k, "size": 10}))
        .collect();
    ingest(server, mutations)
        .into_iter()
        .map(|(_, id)| id)
        .collect()
}

/// Ingest `mutations`; returns (key, event id) of each, in the order given (log order per key).
pub fn ingest(server: &Server, mutations: Vec<Value>) -> Vec<(String, String)> {
    let keys: Vec<String> = mutations
        .iter()
        .map(|m| m["key"].as_str().unwrap().to_string())
        .collect();
    let (status, resp) = server.post(
        "/v1/mutations",
        serde_json::json!({ "mutations": mutations }).to_string(),
    );
    assert_eq!(status, 200, "{resp}");
    let ids = acked_ids(&resp);
    assert_eq!(ids.len(), keys.len(), "every mutation acknowledged: {resp}");
    keys.into_iter().zip(ids).collect()
}

/// Call `check` every 20 ms until it returns `Ok`; on timeout, panic naming `what` with the
/// last complaint `check` gave, so a failure shows what was seen instead of only "timed out".
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Retries short enough that a failing endpoint or function costs a test milliseconds.
pub fn fast_retry(max_attempts: u32) -> Value {
    serde_json::json!({"max_attempts": max_attempts, "initial_backoff_ms": 20, "max_backoff_ms": 200})
}

/// `POST /v1/subscriptions`, which must answer 201; returns the created subscription.
pub fn create_subscription(server: &Server, spec: &Value) -> Value {
    let (status, resp) = server.post("/v1/subscriptions", spec.to_string());
    assert_eq!(status, 201, "create {}: {resp}", spec["name"]);
    resp
}

/// `GET /v1/subscriptions/NAME/status`, which must answer 200.
pub fn subscription_status(server: &Server, name: &str) -> Value {
    let (status, v) = server.get(&format!("/v1/subscriptions/{name}/status"));
    assert_eq!(status, 200, "{v}");
    v
}

/// Wait until subscription `name`'s status satisfies `ready`; returns that status.
pub fn wait_status(
    server: &Server,
    name: &str,
    what: &str,
    timeout: Duration,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(&format!("{name}: {what}"), timeout, || {
        let s = subscription_status(server, name);
        if ready(&s) { Ok(s) } else { Err(s.to_string()) }
    })
}

/// Wait until subscription `name` lists `count` dead letters; returns them.
pub fn wait_dead_letters(
    server: &Server,
    name: &str,
    count: usize,
    timeout: Duration,
) -> Vec<Value> {
    let path = format!("/v1/subscriptions/{name}/dead-letters?limit=1000");
    wait_for(&format!("{name}: {count} dead letters"), timeout, || {
        let (status, v) = server.get(&path);
        assert_eq!(status, 200, "{v}");
        match v["dead_letters"].as_array() {
            Some(l) if l.len() == count && v["count"] == count => Ok(l.clone()),
            _ => Err(v.to_string()),
        }
    })
}

/// A reserved-then-released loopback port where nothing listens (an endpoint or a broker that
/// is down).
pub fn free_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// Objects of `bucket` from the index, now or `at` an instant (RFC 3339): key -> (sequence,
/// size, etag).
pub fn index_objects(
    server: &Server,
    bucket: &str,
    at: Option<&str>,
) -> std::collections::BTreeMap<String, (i64, i64, Value)> {
    let mut out = std::collections::BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/v1/objects?bucket={bucket}&limit=1000");
        if let Some(at) = at {
            path.push_str(&format!("&at={}", urlencode(at)));
        }
        if let Some(a) = &after {
            path.push_str(&format!("&after={}", urlencode(a)));
        }
        let (status, v) = server.get(&path);
        assert_eq!(status, 200, "{v}");
        for o in v["objects"].as_array().unwrap() {
            out.insert(
                o["key"].as_str().unwrap().to_string(),
                (
                    o["sequence"].as_i64().unwrap(),
                    o["size"].as_i64().unwrap(),
                    o["etag"].clone(),
                ),
            );
        }
        match v["next_after"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => return out,
        }
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
