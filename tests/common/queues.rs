//! What the queue sink tests share: a Redis server, the Lambda stand-in, the Python clients
//! of `tests/py/queue_read.py`, background load, and the at-least-once checks.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Server, acked_ids, client, random_mutation, wait_for};

pub const READER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/queue_read.py");
const LAMBDA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/lambda_receiver.py");

/// `python3 tests/py/queue_read.py ARGS…`, its JSON lines; a failure fails the test.
pub fn read_lines(args: &[&str]) -> Vec<Value> {
    read_lines_env(args, &[])
}

/// [`read_lines`] with extra environment variables.
pub fn read_lines_env(args: &[&str], env: &[(&str, &str)]) -> Vec<Value> {
    let out = Command::new("python3")
        .arg(READER)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "queue_read.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Retries that outlast an outage of a few seconds, and a circuit that closes again quickly.
pub fn patient() -> (Value, Value) {
    (
        json!({"max_attempts": 1000, "initial_backoff_ms": 20, "max_backoff_ms": 300}),
        json!({"failure_threshold": 3, "open_ms": 300}),
    )
}

/// A subscription of every event to `sink`, from the start of the log.
pub fn queue_sub(name: &str, sink: Value, max_events: usize) -> Value {
    let (retry, circuit) = patient();
    json!({
        "name": name, "start": "earliest", "sink": sink, "retry": retry, "circuit": circuit,
        "batch": {"max_events": max_events, "max_wait_ms": 5},
    })
}

/// `redis-server` on loopback, appending every write to its file before answering, so a
/// SIGKILL loses nothing it acknowledged.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    password: Option<String>,
}

impl RedisServer {
    pub fn start(dir: &Path, port: u16, password: Option<&str>) -> RedisServer {
        std::fs::create_dir_all(dir).unwrap();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = password {
            cmd.args(["--requirepass", p]);
        }
        let child = cmd.spawn().expect("start redis-server");
        wait_for("redis-server to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        RedisServer {
            child,
            port,
            dir: dir.to_path_buf(),
            password: password.map(str::to_string),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, then start again on the same port and files.
    pub fn kill_and_restart(&mut self, down_for: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down_for);
        let again = RedisServer::start(&self.dir, self.port, self.password.as_deref());
        drop(std::mem::replace(self, again));
    }

    /// Every entry of the streams `pattern` matches (fields, `_stream`, `_id`), by stream then
    /// entry id.
    pub fn entries(&self, pattern: &str) -> Vec<Value> {
        let port = self.port.to_string();
        let mut args = vec!["redis-read", &port, pattern];
        if let Some(p) = &self.password {
            args.push(p);
        }
        read_lines(&args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tests/py/lambda_receiver.py`: Lambda's Invoke API, checking SigV4 with botocore.
pub struct LambdaReceiver {
    child: Child,
    pub port: u16,
    pub out: PathBuf,
}

pub const ACCESS_KEY: &str = "AKIDTIDEMARKTEST";
pub const SECRET_KEY: &str = "tidemark/secret+key";

impl LambdaReceiver {
    pub fn start_on(dir: &Path, port: u16, fail_first: u32) -> LambdaReceiver {
        LambdaReceiver::spawn(
            &dir.join(format!("lambda-{port}.jsonl")),
            port,
            fail_first,
            ACCESS_KEY,
        )
    }

    /// Taking every access key that starts with `prefix` (signed with [`SECRET_KEY`]).
    pub fn for_keys(dir: &Path, prefix: &str) -> LambdaReceiver {
        let out = dir.join(format!("lambda-{prefix}.jsonl"));
        LambdaReceiver::spawn(&out, 0, 0, &format!("{prefix}*"))
    }

    /// SIGKILL, then start again on the same port, appending to the same record.
    pub fn kill_and_restart(&mut self, down_for: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down_for);
        let again = LambdaReceiver::spawn(&self.out, self.port, 0, ACCESS_KEY);
        drop(std::mem::replace(self, again));
    }

    fn spawn(out: &Path, port: u16, fail_first: u32, access_key: &str) -> LambdaReceiver {
        let out = out.to_path_buf();
        let (child, port) = spawn_listening(
            Command::new("python3")
                .arg(LAMBDA)
                .args(["--port", &port.to_string(), "--out"])
                .arg(&out)
                .args(["--access-key", access_key, "--secret", SECRET_KEY])
                .args(["--fail-first", &fail_first.to_string()]),
            "lambda_receiver.py",
        );
        LambdaReceiver { child, port, out }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every invocation so far.
    pub fn invocations(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for LambdaReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a stand-in that prints `listening PORT` first; the child and its port.
pub fn spawn_listening(cmd: &mut Command, what: &str) -> (Child, u16) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{what} printed {line:?}"));
    (child, port)
}

/// Writes random mutations to `bucket` in requests of 10 until stopped; the acknowledged event
/// ids (a request cut short by a killed server acknowledges nothing).
pub struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub acked: Arc<Mutex<Vec<String>>>,
}

impl Load {
    pub fn start(url: &str, bucket: &str, seed: u64) -> Load {
        Load::paced(url, bucket, seed, Duration::from_millis(15))
    }

    /// With `pause` between requests.
    pub fn paced(url: &str, bucket: &str, seed: u64, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<Vec<String>>> = Arc::default();
        let (url, bucket, s, a) = (
            url.to_string(),
            bucket.to_string(),
            stop.clone(),
            acked.clone(),
        );
        let thread = std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(seed);
            let http = client();
            while !s.load(Ordering::SeqCst) {
                let mutations: Vec<Value> = (0..10)
                    .map(|_| random_mutation(&mut rng, &bucket, 30))
                    .collect();
                let sent = http
                    .post(format!("{url}/v1/mutations"))
                    .header("content-type", "application/json")
                    .body(json!({ "mutations": mutations }).to_string())
                    .send();
                match sent {
                    Ok(r) if r.status().is_success() => {
                        let v: Value = r.json().unwrap();
                        a.lock().unwrap().extend(acked_ids(&v));
                    }
                    // The server is being killed: wait for the test to stop the load.
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
                std::thread::sleep(pause);
            }
        });
        Load {
            stop,
            thread: Some(thread),
            acked,
        }
    }

    /// Stop and return every acknowledged event id.
    pub fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.acked.lock().unwrap().clone()
    }
}

/// At-least-once, checked on what a destination holds, as (event id, `bucket/key`, sequence)
/// in destination order: every acknowledged id is there, nothing else is (unless `killed`:
/// a request cut short by a SIGKILL may be in the log unacknowledged), and each key's first
/// arrivals run in sequence order (a re-sent batch may repeat events after them, with the
/// same ids). Returns how many arrivals were repeats.
pub fn assert_at_least_once_in_key_order(
    seen: &[(String, String, i64)],
    acked: &[String],
    killed: bool,
) -> usize {
    let ids: HashSet<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    let want: HashSet<&str> = acked.iter().map(String::as_str).collect();
    let missing: Vec<_> = want.difference(&ids).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events missing: {missing:?}",
        missing.len()
    );
    let extra: Vec<_> = ids.difference(&want).collect();
    assert!(
        killed || extra.is_empty(),
        "events nobody acknowledged: {extra:?}"
    );
    let mut first: HashSet<&str> = HashSet::new();
    let mut last: HashMap<&str, i64> = HashMap::new();
    let mut repeats = 0;
    for (id, key, seq) in seen {
        if !first.insert(id) {
            repeats += 1;
            continue;
        }
        let prev = last.insert(key, *seq).unwrap_or(0);
        assert!(*seq > prev, "{key}: sequence {seq} arrived after {prev}");
    }
    repeats
}

/// A strictly increasing instant between two batches of appends.
pub fn instant() -> String {
    std::thread::sleep(Duration::from_millis(30));
    let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    std::thread::sleep(Duration::from_millis(30));
    t
}

/// Replay `[from, to)` of `subscription`; waits until it succeeded and returns its id.
pub fn replay(server: &Server, subscription: &str, from: &str, to: &str) -> String {
    let (code, job) = server.post(
        "/v1/replays",
        json!({"subscription": subscription, "from": from, "to": to}).to_string(),
    );
    assert_eq!(code, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    wait_for("the replay to finish", Duration::from_secs(60), || {
        let (_, j) = server.get(&format!("/v1/replays/{id}"));
        match j["state"].as_str() {
            Some("succeeded") => Ok(()),
            Some("running") | Some("pending") => Err(j.to_string()),
            _ => panic!("replay failed: {j}"),
        }
    });
    id
}

/// Wait until subscription `name` has caught up: every event read and handed over.
pub fn wait_caught_up(server: &Server, name: &str, timeout: Duration) -> Value {
    super::wait_status(server, name, "caught up", timeout, |s| {
        s["lag"] == 0 && s["in_flight"] == 0 && s["end"].as_u64() > Some(0)
    })
}

/// `nats-server` with JetStream on loopback, its store in a directory of the test.
pub struct NatsServer {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    token: Option<String>,
}

impl NatsServer {
    pub fn start(dir: &Path, port: u16, token: Option<&str>) -> NatsServer {
        std::fs::create_dir_all(dir).unwrap();
        let mut cmd = Command::new("nats-server");
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(t) = token {
            cmd.args(["--auth", t]);
        }
        let child = cmd.spawn().expect("start nats-server");
        wait_for("nats-server to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        NatsServer {
            child,
            port,
            dir: dir.to_path_buf(),
            token: token.map(str::to_string),
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A JetStream stream `name` on `subject` (not for a server started with a token).
    pub fn add_stream(&self, name: &str, subject: &str) {
        read_lines(&["nats-stream", &self.port.to_string(), name, subject]);
    }

    /// SIGKILL, then start again on the same port and store.
    pub fn kill_and_restart(&mut self, down_for: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down_for);
        let again = NatsServer::start(&self.dir, self.port, self.token.as_deref());
        drop(std::mem::replace(self, again));
    }

    /// Every message of stream `name` (`seq`, `subject`, `headers`, `data`), in order.
    pub fn messages(&self, name: &str) -> Vec<Value> {
        read_lines(&["nats-read", &self.port.to_string(), name])
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rabbitmq-server` (Debian's) as a node of its own on loopback, its database and logs in a
/// directory of the test.
pub struct RabbitServer {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    dist_port: u16,
}

impl RabbitServer {
    pub fn start(dir: &Path, port: u16) -> RabbitServer {
        RabbitServer::start_with(dir, port, super::free_port())
    }

    fn start_with(dir: &Path, port: u16, dist_port: u16) -> RabbitServer {
        RabbitServer {
            child: RabbitServer::spawn(dir, port, dist_port),
            port,
            dir: dir.to_path_buf(),
            dist_port,
        }
    }

    fn spawn(dir: &Path, port: u16, dist_port: u16) -> Child {
        std::fs::create_dir_all(dir.join("log")).unwrap();
        std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
        let child = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server")
            .env("RABBITMQ_NODENAME", format!("tidemark{port}@localhost"))
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("ERL_CRASH_DUMP", dir.join("erl_crash.dump"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("HOME", dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rabbitmq-server");
        wait_for("rabbitmq-server to listen", Duration::from_secs(60), || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        child
    }

    pub fn url(&self) -> String {
        format!("amqp://127.0.0.1:{}", self.port)
    }

    /// A durable topic exchange and a durable queue bound to it with `binding`, on disk
    /// before this returns: RabbitMQ logs declarations to Mnesia asynchronously, and a node
    /// killed (SIGKILL) within a second or two of the binding came back without it under
    /// load, answering NO_ROUTE for ever. Its messages are another matter: a confirm means
    /// they are on disk.
    pub fn setup(&self, exchange: &str, queue: &str, binding: &str) {
        read_lines(&[
            "amqp-setup",
            &self.port.to_string(),
            exchange,
            queue,
            binding,
        ]);
        let out = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl")
            .args(["-n", &self.node(), "eval", "mnesia:sync_log()."])
            .env("HOME", &self.dir)
            .output()
            .expect("run rabbitmqctl");
        assert!(
            out.status.success(),
            "rabbitmqctl eval mnesia:sync_log(): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn node(&self) -> String {
        format!("tidemark{}@localhost", self.port)
    }

    /// Take every message now in `queue` (`routing_key`, `message_id`, `type`,
    /// `content_type`, `delivery_mode`, `headers`, `data`), in order.
    pub fn take(&self, queue: &str) -> Vec<Value> {
        read_lines(&["amqp-read", &self.port.to_string(), queue])
    }

    /// SIGKILL the node (its Erlang VM), then start it again on the same port and database.
    pub fn kill_and_restart(&mut self, down_for: Duration) {
        self.kill_vm();
        std::thread::sleep(down_for);
        self.child = RabbitServer::spawn(&self.dir, self.port, self.dist_port);
    }

    /// The script starts the Erlang VM as a child of its own: kill the VM by the home
    /// directory on its command line, then the script.
    fn kill_vm(&mut self) {
        let _ = Command::new("pkill")
            .args(["-9", "-f", "--", &format!("-home {} ", self.dir.display())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RabbitServer {
    fn drop(&mut self) {
        self.kill_vm();
    }
}

/// Each `(sink, field, needle)`: a subscription with that sink is refused (400) naming `field`
/// exactly, its message containing `needle`.
pub fn assert_sinks_refused(server: &Server, cases: Vec<(Value, &str, &str)>) {
    for (sink, field, needle) in cases {
        let spec = json!({"name": "bad", "sink": sink});
        let (status, v) = server.post("/v1/subscriptions", spec.to_string());
        assert_eq!(status, 400, "{spec}: {v}");
        assert_eq!(v["error"]["field"], field, "{spec}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{spec}: want '{needle}' in {v}"
        );
    }
}
