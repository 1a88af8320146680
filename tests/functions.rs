//! Function trigger sinks against real programs: Python scripts run in `process` mode (event
//! JSON on stdin, exit code 0 is success, killed at the timeout) and a Python HTTP function in
//! `http` mode (CloudEvents binary). Every invocation must be visible in
//! `GET /v1/subscriptions/NAME/invocations`.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use common::receiver::Receiver;
use common::*;
use serde_json::{Value, json};

fn start_server(dir: &Path) -> Server {
    start_with_functions(dir, &[])
}

/// A server that declares `functions` (name, program and arguments): the only commands a
/// process-mode subscription can run.
fn start_with_functions(dir: &Path, functions: &[(&str, Vec<&str>)]) -> Server {
    let flags: Vec<String> = functions
        .iter()
        .map(|(name, command)| format!("--function={name}={}", json!(command)))
        .collect();
    let mut args = vec!["--allow-destinations", "loopback"];
    args.extend(flags.iter().map(String::as_str));
    Server::start(&dir.join("data"), &args)
}

/// Write a Python script into `dir` and return its path as a string.
fn script(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Recorded invocations, oldest first.
fn invocations(server: &Server, name: &str) -> Vec<Value> {
    let (status, resp) = server.get(&format!("/v1/subscriptions/{name}/invocations"));
    assert_eq!(status, 200, "{resp}");
    let mut list = resp["invocations"].as_array().cloned().unwrap_or_default();
    list.reverse();
    list
}

/// Invocations grouped by the (single) event id they carried, oldest first.
fn invocations_by_event(list: &[Value]) -> HashMap<String, Vec<Value>> {
    let mut by: HashMap<String, Vec<Value>> = HashMap::new();
    for inv in list {
        let ids = inv["event_ids"].as_array().unwrap();
        assert_eq!(ids.len(), 1, "unbatched: one event per invocation: {inv}");
        by.entry(ids[0].as_str().unwrap().to_string())
            .or_default()
            .push(inv.clone());
    }
    by
}

/// The first invocation recorded, once there is one.
fn first_invocation(server: &Server, name: &str) -> Result<Value, String> {
    let list = invocations(server, name);
    list.into_iter()
        .next()
        .ok_or_else(|| "no invocation".into())
}

/// `Ok(items)` once there are at least `n`.
fn at_least(items: Vec<Value>, n: usize) -> Result<Vec<Value>, String> {
    if items.len() >= n {
        Ok(items)
    } else {
        Err(format!("{} of {n}: {items:?}", items.len()))
    }
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        // A line being appended right now is skipped; the next poll reads it whole.
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Is the process `pid` that runs a command containing `marker` still running? A zombie
/// (exited, not yet reaped) counts as gone, and so does another process that got the same pid
/// since (pids are reused quickly here: pid_max is 32768 and librdkafka's threads take pids).
fn alive(pid: u32, marker: &str) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !String::from_utf8_lossy(&cmdline).contains(marker) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            // `pid (comm) S ...`: the state follows the last ')'.
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
    }
}

const RECORDING_HANDLER: &str = r#"
import json, os, sys
event = json.load(sys.stdin)
line = json.dumps({"event": event, "attempt": os.environ.get("TIDEMARK_ATTEMPT"),
                   "subscription": os.environ.get("TIDEMARK_SUBSCRIPTION")})
with open(sys.argv[1], "a") as f:
    f.write(line + "\n")
print("handled " + event["event_id"])
"#;

#[test]
fn process_trigger_receives_the_event_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let handler = script(dir.path(), "handler.py", RECORDING_HANDLER);
    let seen = dir.path().join("seen.jsonl");
    let server = start_with_functions(
        dir.path(),
        &[("record", vec!["python3", &handler, seen.to_str().unwrap()])],
    );
    create_subscription(
        &server,
        &json!({
            "name": "thumbs",
            "rules": {"events": ["ObjectCreated:*"], "prefix": ["photos/"]},
            "sink": {"type": "function", "mode": "process", "function": "record",
                     "timeout_ms": 10_000},
            "retry": fast_retry(5),
        }),
    );

    let keys: Vec<String> = (0..5).map(|i| format!("photos/{i}.jpg")).collect();
    let acked = put_keys(&server, "gallery", &keys);
    // Not matching the rules: must never reach the function.
    put_keys(&server, "gallery", &["docs/readme.txt".to_string()]);

    let got = wait_for(
        "every event at the function",
        Duration::from_secs(20),
        || at_least(lines(&seen), acked.len()),
    );
    let by_id: HashMap<&str, &Value> = got
        .iter()
        .map(|l| (l["event"]["event_id"].as_str().unwrap(), l))
        .collect();
    for (id, key) in acked.iter().zip(&keys) {
        let line = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("event {id} never reached the function: {got:?}"));
        assert_eq!(line["event"]["key"], key.as_str(), "{line}");
        assert_eq!(line["event"]["bucket"], "gallery", "{line}");
        assert_eq!(line["event"]["event_type"], "ObjectCreated:Put", "{line}");
        assert_eq!(line["subscription"], "thumbs", "{line}");
        assert_eq!(line["attempt"], "1", "{line}");
    }
    assert!(
        got.iter().all(|l| l["event"]["key"] != "docs/readme.txt"),
        "a non-matching event reached the function: {got:?}"
    );

    // The invocation is recorded after the process exits: poll for all of them.
    let list = wait_for("every invocation recorded", Duration::from_secs(10), || {
        at_least(invocations(&server, "thumbs"), acked.len())
    });
    let by_event = invocations_by_event(&list);
    for id in &acked {
        let inv = &by_event
            .get(id)
            .unwrap_or_else(|| panic!("no invocation for {id}: {list:?}"))[0];
        assert_eq!(inv["outcome"], "ok", "{inv}");
        assert_eq!(inv["status"], 0, "{inv}");
        assert_eq!(inv["attempt"], 1, "{inv}");
        assert!(inv["duration_ms"].is_u64(), "{inv}");
        assert!(inv["at"].is_string(), "{inv}");
        assert_eq!(
            inv["output"].as_str().unwrap().trim(),
            format!("handled {id}"),
            "{inv}"
        );
    }
    let (_, status) = server.get("/v1/subscriptions/thumbs/status");
    assert_eq!(status["delivered"], acked.len(), "{status}");
    assert_eq!(status["failed_attempts"], 0, "{status}");
    server.stop();
}

const FLAKY_HANDLER: &str = r#"
import json, os, sys
event = json.load(sys.stdin)
counter = os.path.join(sys.argv[1], event["event_id"])
n = int(open(counter).read()) + 1 if os.path.exists(counter) else 1
with open(counter, "w") as f:
    f.write(str(n))
if n <= 2:
    print("try", n, "failing", file=sys.stderr)
    sys.exit(1)
print("ok on try", n)
"#;

#[test]
fn failing_process_is_retried_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let handler = script(dir.path(), "flaky.py", FLAKY_HANDLER);
    let counters = dir.path().join("counters");
    std::fs::create_dir(&counters).unwrap();
    let server = start_with_functions(
        dir.path(),
        &[(
            "flaky",
            vec!["python3", &handler, counters.to_str().unwrap()],
        )],
    );
    create_subscription(
        &server,
        &json!({
            "name": "flaky",
            "sink": {"type": "function", "mode": "process", "function": "flaky",
                     "timeout_ms": 10_000},
            "retry": fast_retry(5),
            // Two failures per event on purpose: keep the breaker out of this test.
            "circuit": {"failure_threshold": 1000, "open_ms": 10},
        }),
    );
    let keys: Vec<String> = (0..3).map(|i| format!("k{i}")).collect();
    let acked = put_keys(&server, "flakes", &keys);

    let list = wait_for(
        "three invocations per event",
        Duration::from_secs(20),
        || {
            let l = invocations(&server, "flaky");
            let by = invocations_by_event(&l);
            if acked
                .iter()
                .all(|id| by.get(id).is_some_and(|v| v.len() >= 3))
            {
                Ok(l)
            } else {
                Err(format!("{} invocations: {l:?}", l.len()))
            }
        },
    );
    let by_event = invocations_by_event(&list);
    for id in &acked {
        let invs = &by_event[id];
        assert_eq!(invs.len(), 3, "no attempt after success: {invs:?}");
        let outcomes: Vec<&str> = invs
            .iter()
            .map(|i| i["outcome"].as_str().unwrap())
            .collect();
        assert_eq!(outcomes, ["failed", "failed", "ok"], "{invs:?}");
        let attempts: Vec<u64> = invs
            .iter()
            .map(|i| i["attempt"].as_u64().unwrap())
            .collect();
        assert_eq!(attempts, [1, 2, 3], "{invs:?}");
        let statuses: Vec<i64> = invs.iter().map(|i| i["status"].as_i64().unwrap()).collect();
        assert_eq!(statuses, [1, 1, 0], "{invs:?}");
        assert!(
            invs[0]["stderr"]
                .as_str()
                .unwrap()
                .contains("try 1 failing"),
            "{invs:?}"
        );
        assert!(
            invs[0]["error"]
                .as_str()
                .unwrap()
                .contains("exited with code 1"),
            "{invs:?}"
        );
        assert_eq!(invs[2]["output"].as_str().unwrap().trim(), "ok on try 3");
        // The script saw exactly three runs for this event.
        let runs = std::fs::read_to_string(counters.join(id)).unwrap();
        assert_eq!(runs, "3");
    }
    let status = wait_status(
        &server,
        "flaky",
        "all delivered",
        Duration::from_secs(5),
        |s| s["delivered"] == acked.len(),
    );
    assert_eq!(status["failed_attempts"], 2 * acked.len(), "{status}");
    assert_eq!(status["dead_letters"], 0, "{status}");
    assert!(
        status["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("exited with code 1"),
        "{status}"
    );
    server.stop();
}

/// Writes its pid, starts a `sleep 60` child and writes its pid, then waits for it.
const HANGING_HANDLER: &str = r#"
import os, subprocess, sys
child = subprocess.Popen(["sleep", "60"])
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {child.pid}")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
child.wait()
"#;

struct Hung {
    script_pid: u32,
    sleep_pid: u32,
}

/// Run one event into a function that hangs, with a 2 s timeout and a single attempt (enough
/// for Python to start and write its pids on a loaded machine).
/// Returns the server, the event id and the pids the script wrote.
fn hang_one(dir: &Path) -> (Server, String, Hung) {
    let handler = script(dir, "hang.py", HANGING_HANDLER);
    let pids = dir.join("pids");
    let server = start_with_functions(
        dir,
        &[("hang", vec!["python3", &handler, pids.to_str().unwrap()])],
    );
    create_subscription(
        &server,
        &json!({
            "name": "hangs",
            "sink": {"type": "function", "mode": "process", "function": "hang",
                     "timeout_ms": 2_000},
            "retry": fast_retry(1),
        }),
    );
    let id = put_keys(&server, "hanging", &["stuck".to_string()]).remove(0);
    let text = wait_for("the script's pid file", Duration::from_secs(10), || {
        std::fs::read_to_string(&pids).map_err(|e| e.to_string())
    });
    let mut it = text.split(' ').map(|p| p.parse::<u32>().unwrap());
    let hung = Hung {
        script_pid: it.next().unwrap(),
        sleep_pid: it.next().unwrap(),
    };
    (server, id, hung)
}

/// SIGKILL the `sleep` this test caused to exist (by its pid) if it outlived the test.
fn reap_leftover(pid: u32) {
    if alive(pid, "sleep") {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
}

#[test]
fn hanging_process_is_killed_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (server, id, hung) = hang_one(dir.path());

    let inv = wait_for("a timeout invocation", Duration::from_secs(15), || {
        first_invocation(&server, "hangs")
    });
    assert_eq!(inv["outcome"], "timeout", "{inv}");
    assert_eq!(inv["event_ids"], json!([id]), "{inv}");
    assert!(inv["status"].is_null(), "killed: no exit code: {inv}");
    let ms = inv["duration_ms"].as_u64().unwrap();
    assert!(
        (2_000..10_000).contains(&ms),
        "killed at ~2 s, took {ms}: {inv}"
    );
    assert!(
        inv["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 2000 ms"),
        "{inv}"
    );
    wait_for("the script process to end", Duration::from_secs(5), || {
        if alive(hung.script_pid, "hang.py") {
            Err(format!("pid {} alive", hung.script_pid))
        } else {
            Ok(())
        }
    });
    // One attempt only: the event is now a dead letter, not dropped.
    let letters = wait_dead_letters(&server, "hangs", 1, Duration::from_secs(5));
    assert_eq!(
        letters[0]["event_id"],
        id.as_str(),
        "the dead letter names the event: {letters:?}"
    );
    server.stop();
    reap_leftover(hung.sleep_pid);
}

/// A handler is often a shell script or a program that starts helpers: what it started must
/// not outlive the timeout either.
#[test]
fn hanging_process_children_are_killed_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _, hung) = hang_one(dir.path());
    wait_for("a timeout invocation", Duration::from_secs(15), || {
        first_invocation(&server, "hangs")
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while alive(hung.sleep_pid, "sleep") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let survived = alive(hung.sleep_pid, "sleep");
    reap_leftover(hung.sleep_pid);
    assert!(
        !survived,
        "`sleep 60` (pid {}) started by the timed-out function is still running",
        hung.sleep_pid
    );
    server.stop();
}

#[test]
fn http_function_receives_cloudevents_binary() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let receiver = Receiver::start(dir.path(), "fn", &[]);
    create_subscription(
        &server,
        &json!({
            "name": "fn-http",
            "sink": {"type": "function", "mode": "http", "url": receiver.url("/fn"),
                     "timeout_ms": 5_000},
            "retry": fast_retry(5),
        }),
    );
    let keys: Vec<String> = (0..3).map(|i| format!("doc-{i}.pdf")).collect();
    let acked = put_keys(&server, "papers", &keys);

    let records = receiver.wait_requests(acked.len(), Duration::from_secs(20));
    let by_ce_id: HashMap<&str, &Value> = records
        .iter()
        .map(|r| (r["headers"]["ce-id"].as_str().unwrap_or_default(), r))
        .collect();
    for (id, key) in acked.iter().zip(&keys) {
        let r = by_ce_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("no request with ce-id {id}: {records:?}"));
        assert_eq!(r["path"], "/fn", "{r}");
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(r["headers"]["ce-specversion"], "1.0", "{r}");
        assert!(
            r["headers"]["ce-type"]
                .as_str()
                .unwrap()
                .ends_with("ObjectCreated:Put"),
            "{r}"
        );
        assert!(r["ce_error"].is_null(), "the SDK parsed it: {r}");
        let event = &r["cloudevents"][0];
        assert_eq!(event["id"], id.as_str(), "{r}");
        assert!(
            r.to_string().contains(key.as_str()),
            "the event's key travels in the request: {r}"
        );
    }
    let list = wait_for("every invocation recorded", Duration::from_secs(5), || {
        at_least(invocations(&server, "fn-http"), acked.len())
    });
    let by_event = invocations_by_event(&list);
    for id in &acked {
        let inv = &by_event[id][0];
        assert_eq!(inv["outcome"], "ok", "{inv}");
        assert_eq!(inv["status"], 200, "{inv}");
    }
    server.stop();
}

const ALWAYS_FAILING_HANDLER: &str = r#"
import sys
sys.stdin.read()
sys.exit(3)
"#;

/// Two subscriptions whose functions are different Python scripts: one that always fails
/// must not hold up the other (PRODUCT.md: a failing endpoint never stalls other
/// subscriptions).
#[test]
fn failing_function_does_not_stall_another_function() {
    let dir = tempfile::tempdir().unwrap();
    let bad = script(dir.path(), "bad.py", ALWAYS_FAILING_HANDLER);
    let good = script(dir.path(), "good.py", RECORDING_HANDLER);
    let seen = dir.path().join("good.jsonl");
    let server = start_with_functions(
        dir.path(),
        &[
            ("bad", vec!["python3", &bad]),
            ("good", vec!["python3", &good, seen.to_str().unwrap()]),
        ],
    );
    create_subscription(
        &server,
        &json!({
            "name": "broken",
            "rules": {"prefix": ["bad/"]},
            "sink": {"type": "function", "mode": "process", "function": "bad"},
            "retry": {"max_attempts": 50, "initial_backoff_ms": 20, "max_backoff_ms": 200},
            "circuit": {"failure_threshold": 3, "open_ms": 60_000},
        }),
    );
    create_subscription(
        &server,
        &json!({
            "name": "healthy",
            "rules": {"prefix": ["good/"]},
            "sink": {"type": "function", "mode": "process", "function": "good"},
            "retry": fast_retry(5),
        }),
    );
    put_keys(&server, "mixed", &["bad/1".into(), "bad/2".into()]);
    wait_status(
        &server,
        "broken",
        "an open circuit",
        Duration::from_secs(15),
        |s| s["circuit"] == "open",
    );
    let acked = put_keys(&server, "mixed", &["good/1".into(), "good/2".into()]);
    let waited = std::time::Instant::now();
    let deadline = waited + Duration::from_secs(10);
    let mut got: HashSet<String> = HashSet::new();
    while got.len() < acked.len() && std::time::Instant::now() < deadline {
        got = lines(&seen)
            .iter()
            .map(|l| l["event"]["event_id"].as_str().unwrap().to_string())
            .collect();
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, healthy) = server.get("/v1/subscriptions/healthy/status");
    assert!(
        acked.iter().all(|id| got.contains(id)),
        "the healthy function got {got:?} of {acked:?} within 10 s while another \
         subscription's function kept failing; its status: {healthy}"
    );
    server.stop();
}

const TIMED_HANDLER: &str = r#"
import json, sys, time
event = json.load(sys.stdin)
start = time.monotonic()
time.sleep(0.3)
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"id": event["event_id"], "start": start, "end": time.monotonic()}) + "\n")
"#;

#[test]
fn concurrency_limits_invocations_running_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let handler = script(dir.path(), "timed.py", TIMED_HANDLER);
    let out = dir.path().join("timed.jsonl");
    let server = start_with_functions(
        dir.path(),
        &[("timed", vec!["python3", &handler, out.to_str().unwrap()])],
    );
    // Different keys could all go at once (max_in_flight 32); the function allows two.
    create_subscription(
        &server,
        &json!({"name": "limited", "sink": {"type": "function", "mode": "process",
                "function": "timed", "concurrency": 2}}),
    );
    let keys: Vec<String> = (0..6).map(|i| format!("c{i}")).collect();
    put_keys(&server, "photos", &keys);
    let runs = wait_for("six invocations", Duration::from_secs(30), || {
        at_least(lines(&out), 6)
    });
    // At no instant were more than two running: count overlaps at each start.
    let spans: Vec<(f64, f64)> = runs
        .iter()
        .map(|r| (r["start"].as_f64().unwrap(), r["end"].as_f64().unwrap()))
        .collect();
    let most = spans
        .iter()
        .map(|(s, _)| spans.iter().filter(|(a, b)| a <= s && s < b).count())
        .max()
        .unwrap();
    assert!(most <= 2, "{most} invocations ran at once: {spans:?}");
    assert_eq!(most, 2, "the two slots were used in parallel: {spans:?}");
}
