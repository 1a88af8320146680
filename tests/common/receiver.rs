//! The webhook endpoint the delivery tests send to: `tests/py/webhook_receiver.py`, which checks
//! what arrives with libraries that share no code with Tidemark (`standardwebhooks` for
//! signatures, the `cloudevents` SDK for CloudEvents), and the readers of what it recorded.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use super::wait_for;

pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/webhook_receiver.py");

/// A running `webhook_receiver.py` on loopback; killed when dropped.
pub struct Receiver {
    child: Child,
    pub port: u16,
    /// One JSON line per request received (`n`, `path`, `status`, `headers`, `body_b64`,
    /// `webhook_id`, `verified`, `cloudevents`, `ce_error`, `records`, ...).
    pub out: PathBuf,
    /// Its stderr: a sender killed mid-request makes it print BrokenPipe tracebacks, which are
    /// expected noise in some tests and would bury the test output.
    pub stderr: PathBuf,
}

impl Receiver {
    /// On an ephemeral port, with receiver flags `args` (`--fail-first`, `--secret`, ...);
    /// `name` names its files in `dir`.
    pub fn start(dir: &Path, name: &str, args: &[&str]) -> Receiver {
        Receiver::start_on(dir, name, 0, args)
    }

    /// On `port` (0: ephemeral), e.g. to bring a "down" endpoint up.
    pub fn start_on(dir: &Path, name: &str, port: u16, args: &[&str]) -> Receiver {
        let out = dir.join(format!("{name}.jsonl"));
        let stderr = dir.join(format!("{name}.stderr.log"));
        let mut child = Command::new("python3")
            .arg(SCRIPT)
            .args(["--port", &port.to_string(), "--out"])
            .arg(&out)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start python3 webhook_receiver.py");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(port) = line.strip_prefix("listening ") {
                    let _ = tx.send(port.trim().parse::<u16>().unwrap());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(port) => Receiver {
                child,
                port,
                out,
                stderr,
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "webhook receiver {name} did not print its port within 30 s; stderr:\n{}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
        }
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request received so far, in arrival order (`n`).
    pub fn requests(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        // A line is complete once its newline is written; a torn last line is read next time.
        let mut reqs: Vec<Value> = text
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).expect("receiver writes JSON lines"))
            .collect();
        reqs.sort_by_key(|r| r["n"].as_u64());
        reqs
    }

    /// The `webhook-id` of every request received so far, duplicates included.
    pub fn webhook_ids(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter_map(|r| r["webhook_id"].as_str().map(str::to_string))
            .collect()
    }

    /// Ids of the events answered 200.
    pub fn delivered_ids(&self) -> HashSet<String> {
        self.requests()
            .iter()
            .filter(|r| r["status"] == 200)
            .flat_map(events_in)
            .map(|e| e.id)
            .collect()
    }

    /// Wait until at least `n` requests arrived; returns them all.
    pub fn wait_requests(&self, n: usize, timeout: Duration) -> Vec<Value> {
        wait_for(&format!("{n} requests"), timeout, || {
            let reqs = self.requests();
            if reqs.len() >= n {
                Ok(reqs)
            } else {
                Err(format!("{} requests", reqs.len()))
            }
        })
    }

    /// Wait until every one of `ids` was answered 200.
    pub fn wait_delivered(&self, ids: &[String], timeout: Duration) {
        wait_for("the receiver to get every event", timeout, || {
            let got = self.delivered_ids();
            let missing: Vec<&String> = ids.iter().filter(|id| !got.contains(*id)).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("{} missing: {missing:?}", missing.len()))
            }
        })
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `webhook_receiver.py verify` on one captured request, with `body` and `timestamp` in
/// place of its own (to tamper with them); `Ok` when it verifies, else the library's error.
pub fn verify_signature(
    secret: &str,
    req: &Value,
    body: &[u8],
    timestamp: &str,
    extra: &[&str],
) -> Result<(), String> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), body).unwrap();
    let out = Command::new("python3")
        .arg(SCRIPT)
        .args(["verify", "--secret", secret, "--id"])
        .arg(req["headers"]["webhook-id"].as_str().unwrap())
        .args(["--timestamp", timestamp, "--signature"])
        .arg(req["headers"]["webhook-signature"].as_str().unwrap())
        .arg("--body-file")
        .arg(file.path())
        .args(extra)
        .output()
        .expect("run webhook_receiver.py verify");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// One event as a request carried it, whatever the payload format.
#[derive(Debug, Clone)]
pub struct Seen {
    pub id: String,
    pub key: String,
    pub sequence: i64,
}

/// The events of one captured request: S3 `Records`, or the CloudEvents the SDK parsed.
pub fn events_in(req: &Value) -> Vec<Seen> {
    if let Some(records) = req["records"].as_array() {
        return records
            .iter()
            .map(|r| Seen {
                id: r["tidemark"]["eventId"].as_str().unwrap().to_string(),
                key: r["s3"]["object"]["key"].as_str().unwrap().to_string(),
                sequence: i64::from_str_radix(r["s3"]["object"]["sequencer"].as_str().unwrap(), 16)
                    .unwrap(),
            })
            .collect();
    }
    if let Some(events) = req["cloudevents"].as_array() {
        return events
            .iter()
            .map(|e| Seen {
                id: e["id"].as_str().unwrap().to_string(),
                key: e["subject"].as_str().unwrap_or_default().to_string(),
                sequence: e["sequence"].as_str().unwrap().parse().unwrap(),
            })
            .collect();
    }
    panic!("a request with neither S3 records nor CloudEvents: {req}");
}

/// The one event of an unbatched request.
pub fn only_event(req: &Value) -> Seen {
    let mut events = events_in(req);
    assert_eq!(events.len(), 1, "one event per request: {req}");
    events.remove(0)
}

/// Per key, the events first answered 200 come in log order, and no attempt goes back to an
/// earlier event of the key once a later one was sent.
pub fn assert_per_key_order(reqs: &[Value], acked: &[(String, String)]) {
    let mut first_ok: HashMap<String, Vec<String>> = HashMap::new();
    let mut attempted: HashMap<String, Vec<i64>> = HashMap::new();
    let mut seen = HashSet::new();
    for req in reqs {
        for e in events_in(req) {
            attempted.entry(e.key.clone()).or_default().push(e.sequence);
            if req["status"] == 200 && seen.insert(e.id.clone()) {
                first_ok.entry(e.key.clone()).or_default().push(e.id);
            }
        }
    }
    for (key, seqs) in &attempted {
        assert!(
            seqs.windows(2).all(|w| w[0] <= w[1]),
            "{key}: attempts went back in sequence: {seqs:?}"
        );
    }
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    for (key, id) in acked {
        expected.entry(key.clone()).or_default().push(id.clone());
    }
    for (key, ids) in &expected {
        assert_eq!(
            first_ok.get(key),
            Some(ids),
            "{key}: first deliveries in log order"
        );
    }
}
