//! The operator's view of a running node: `/metrics` read by the reference Prometheus parser,
//! JSON logs, `/readyz`, and a clean stop on SIGTERM under load.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::receiver::Receiver;
use common::{
    Backend, Server, acked_ids, client, create_subscription, fast_retry, ingest, log_events,
    wait_dead_letters, wait_for,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const PARSER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/parse_metrics.py");

fn start_server(data: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["--allow-destinations", "loopback"];
    args.extend_from_slice(extra);
    Server::start(data, &args)
}

fn webhook_sub(name: &str, url: &str, max_attempts: u32) -> Value {
    json!({
        "name": name,
        "sink": {"type": "webhook", "url": url},
        "retry": fast_retry(max_attempts),
        "circuit": {"failure_threshold": 1000, "open_ms": 100},
    })
}

fn puts(server: &Server, prefix: &str, n: usize) -> Vec<String> {
    let muts = (0..n)
        .map(|i| json!({"op": "put", "bucket": "ops", "key": format!("{prefix}{}", i % 7), "size": 10 + i}))
        .collect();
    ingest(server, muts).into_iter().map(|(_, id)| id).collect()
}

/// One scrape as the Prometheus client library parses it: family types, and the value of
/// each sample by name and sorted labels.
struct Scrape {
    families: HashMap<String, String>,
    samples: HashMap<(String, Vec<(String, String)>), f64>,
}

impl Scrape {
    fn of(server: &Server) -> Scrape {
        let (status, text) = server.get_text("/metrics");
        assert_eq!(status, 200, "{text}");
        let mut child = Command::new("python3")
            .arg(PARSER)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 parse_metrics.py");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "the Prometheus parser refused the scrape: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let families = v["families"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, t)| (k.clone(), t.as_str().unwrap().to_string()))
            .collect();
        let samples = v["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let mut labels: Vec<(String, String)> = s["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                labels.sort();
                let value = s["value"].as_f64().unwrap_or(f64::INFINITY);
                ((s["name"].as_str().unwrap().to_string(), labels), value)
            })
            .collect();
        Scrape { families, samples }
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        *self
            .samples
            .get(&(name.to_string(), labels.clone()))
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }

    /// Sum over every sample named `name`.
    fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, v)| v)
            .sum()
    }
}

#[test]
fn metrics_parse_and_move_with_the_workload() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let server = start_server(&dir.join("data"), &[]);
    let r = Receiver::start(dir, "ok", &[]);
    create_subscription(&server, &webhook_sub("hooks", &r.url("/hook"), 3));

    let before = Scrape::of(&server);
    for (family, kind) in [
        ("tidemark_ingest_mutations", "counter"),
        ("tidemark_ingest_append_seconds", "histogram"),
        ("tidemark_log_size_bytes", "gauge"),
        ("tidemark_log_segments", "gauge"),
        ("tidemark_log_end_offset", "gauge"),
        ("tidemark_index_lag_events", "gauge"),
        ("tidemark_deliveries", "counter"),
        ("tidemark_delivery_attempts", "counter"),
        ("tidemark_dead_letters", "gauge"),
    ] {
        assert_eq!(
            before.families.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    let accepted = [("interface", "http"), ("outcome", "accepted")];
    let delivered = [("subscription", "hooks"), ("outcome", "delivered")];
    assert_eq!(before.get("tidemark_deliveries_total", &delivered), 0.0);

    let ids = puts(&server, "m", 40);
    r.wait_delivered(&ids, WAIT);
    // A refused mutation: a delete of an object that does not exist.
    let (status, resp) = server.post(
        "/v1/mutations",
        json!({"mutations": [{"op": "delete", "bucket": "ops", "key": "never-there"}]}).to_string(),
    );
    assert_eq!(status, 200, "{resp}");
    server.wait_caught_up();

    let after = wait_for("delivered counted", WAIT, || {
        let s = Scrape::of(&server);
        if s.get("tidemark_deliveries_total", &delivered) >= 40.0 {
            Ok(s)
        } else {
            Err("fewer than 40 delivered".into())
        }
    });
    assert_eq!(
        after.get("tidemark_ingest_mutations_total", &accepted)
            - before.get("tidemark_ingest_mutations_total", &accepted),
        40.0
    );
    let refused = [("interface", "http"), ("outcome", "refused")];
    assert_eq!(
        after.get("tidemark_ingest_mutations_total", &refused)
            - before.get("tidemark_ingest_mutations_total", &refused),
        1.0
    );
    assert!(
        after.sum("tidemark_ingest_append_seconds_count")
            > before.sum("tidemark_ingest_append_seconds_count")
    );
    let objects_end: f64 = after
        .samples
        .iter()
        .filter(|((n, l), _)| {
            n == "tidemark_log_end_offset" && l.contains(&("topic".into(), "objects".into()))
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(objects_end, 40.0);
    assert!(after.sum("tidemark_log_size_bytes") > before.sum("tidemark_log_size_bytes"));
    assert!(after.sum("tidemark_log_segments") >= 1.0);
    assert_eq!(after.sum("tidemark_index_lag_events"), 0.0);
    let success = [("subscription", "hooks"), ("result", "success")];
    assert!(after.get("tidemark_delivery_attempts_total", &success) >= 1.0);
    assert_eq!(
        after.get("tidemark_dead_letters", &[("subscription", "hooks")]),
        0.0
    );
    server.stop();
}

#[test]
fn json_logs_name_a_failed_delivery_without_secrets_or_bodies() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let server = start_server(&dir.join("data"), &["--log-format", "json"]);
    let r = Receiver::start(dir, "down", &["--always-status", "503"]);
    let secret = "whsec_c2VjcmV0LXRoYXQtbXVzdC1ub3QtbGVhaw==";
    let mut spec = webhook_sub(
        "failing",
        &r.url("/hook?token=query-token-must-not-leak"),
        2,
    );
    spec["sink"]["secret"] = secret.into();
    create_subscription(&server, &spec);
    // The payload's only distinctive text: it must not reach the log lines.
    let muts = vec![json!({"op": "put", "bucket": "ops", "key": "payload-marker-7f3a", "size": 1})];
    ingest(&server, muts);
    wait_dead_letters(&server, "failing", 1, WAIT);

    let text = server.stderr_text();
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let failures: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("delivery failed"))
        })
        .collect();
    assert_eq!(failures.len(), 2, "one line per failed attempt: {text}");
    let host = format!("127.0.0.1:{}", r.port);
    for (i, f) in failures.iter().enumerate() {
        assert_eq!(f["level"], "WARN", "{f}");
        assert_eq!(f["subscription"], "failing", "{f}");
        assert_eq!(f["host"], host.as_str(), "{f}");
        assert_eq!(f["status"], 503, "{f}");
        assert_eq!(f["attempt"], i as u64 + 1, "{f}");
    }
    for leak in [
        secret,
        "query-token-must-not-leak",
        "payload-marker-7f3a",
        "/hook",
    ] {
        assert!(!text.contains(leak), "the log holds {leak}: {text}");
    }
    server.stop();
}

#[test]
fn readyz_is_ready_when_caught_up_and_names_its_reason_otherwise() {
    let scratch = tempfile::tempdir().unwrap();
    let server = start_server(&scratch.path().join("data"), &[]);
    puts(&server, "r", 5);
    server.wait_caught_up();
    let (status, v) = server.get("/readyz");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ready"], true, "{v}");
    assert_eq!(v["reasons"], json!([]), "{v}");
    server.stop();
}

fn signal(pid: u32, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// A log that does not answer makes the node not ready, and says so; ready again once it
/// answers.
#[test]
fn readyz_names_an_unreachable_log() {
    let backend = Backend::kafka();
    let Backend::Kafka(broker) = &backend else {
        unreachable!()
    };
    let scratch = tempfile::tempdir().unwrap();
    let server = Server::start_on(
        &backend,
        &scratch.path().join("data"),
        &[
            "--kafka-delivery-timeout-ms",
            "3000",
            "--kafka-request-timeout-ms",
            "2000",
        ],
    );
    wait_for("ready", WAIT, || match server.get("/readyz") {
        (200, v) if v["ready"] == true => Ok(()),
        (_, v) => Err(v.to_string()),
    });

    signal(broker.pid(), "-STOP");
    let (status, v) = server.get("/readyz");
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["ready"], false, "{v}");
    let reasons = v["reasons"].as_array().unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().unwrap().starts_with("log: not reachable")),
        "{v}"
    );

    signal(broker.pid(), "-CONT");
    wait_for("ready again", Duration::from_secs(120), || {
        match server.get("/readyz") {
            (200, v) if v["ready"] == true => Ok(()),
            (_, v) => Err(v.to_string()),
        }
    });
    server.stop();
}

/// SIGTERM while a client writes continuously: the node stops accepting, answers what it
/// accepted, exits 0; after a restart every acknowledged mutation is in the log and delivery
/// goes on from where it stopped.
#[test]
fn sigterm_under_load_loses_no_acknowledged_mutation() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let data = dir.join("data");
    let r = Receiver::start(dir, "hooks", &["--delay-ms", "20"]);
    let mut server = start_server(&data, &["--shutdown-timeout-secs", "10"]);
    create_subscription(&server, &webhook_sub("hooks", &r.url("/hook"), 1000));

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (url, acked, done) = (server.url.clone(), acked.clone(), done.clone());
        std::thread::spawn(move || {
            let http = client();
            let mut i = 0usize;
            let deadline = Instant::now() + Duration::from_secs(120);
            while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                let muts: Vec<Value> = (0..10)
                    .map(|j| json!({"op": "put", "bucket": "load", "key": format!("k{}", (i + j) % 50), "size": i + j}))
                    .collect();
                i += 10;
                let sent = http
                    .post(format!("{url}/v1/mutations"))
                    .header("content-type", "application/json")
                    .body(json!({ "mutations": muts }).to_string())
                    .send();
                // Refused connections and cut requests are not acknowledgements.
                let Ok(resp) = sent else { break };
                if resp.status() != 200 {
                    break;
                }
                let Ok(v) = resp.json::<Value>() else { break };
                acked.lock().unwrap().extend(acked_ids(&v));
            }
        })
    };
    wait_for("load under way", WAIT, || {
        let n = acked.lock().unwrap().len();
        if n >= 300 {
            Ok(())
        } else {
            Err(format!("{n} acked"))
        }
    });

    server.stop(); // SIGTERM, and asserts exit status 0
    done.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();

    let events = log_events(&Backend::Embedded, &data);
    let in_log: std::collections::HashSet<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !in_log.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not in the log: {missing:?}"
    );

    server = start_server(&data, &[]);
    r.wait_delivered(&acked, Duration::from_secs(120));
    server.stop();
}
