//! WASM filters bounded server-wide, through a real server: a module too costly to compile is
//! refused at the compile deadline by a child process while the server's memory stays put;
//! subscriptions are admitted against the filter memory budget, and an instance without room
//! at run time waits as "capacity" instead of failing; `filter test` ends at its deadline or
//! its event cap saying so; uploads past the version cap collect the oldest unused versions.

mod common;

use std::time::{Duration, Instant};

use common::receiver::Receiver;
use common::*;
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

/// A module with the ABI's exports around `body` (the `filter` function's body).
fn module(extra: &str, body: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
             {extra}
             (memory (export "memory") 1)
             (func (export "tidemark_abi_version") (result i32) i32.const 1)
             (func (export "filter") (result i32) {body}))"#
    ))
    .unwrap()
}

fn keep_all(marker: i32) -> Vec<u8> {
    // `marker` makes modules with the same behaviour differ in their bytes.
    module(&format!("(global i32 (i32.const {marker}))"), "i32.const 1")
}

fn leb(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn section(id: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(id);
    leb(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// A valid filter with `n` more functions of a little arithmetic each: 7.5 MB to send, and
/// far more than the compile limit to compile (the module of issue 18: 27 s of CPU, 2 GB).
/// Written as binary directly: the text of 300,000 functions is slow to assemble in a test.
fn many_functions(n: u64) -> Vec<u8> {
    let mut wasm = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[1, 0x60, 0, 1, 0x7f], &mut wasm); // one type: () -> i32
    let mut funcs = Vec::new();
    leb(n + 2, &mut funcs);
    funcs.resize(funcs.len() + n as usize + 2, 0);
    section(3, &funcs, &mut wasm);
    section(5, &[1, 0, 1], &mut wasm); // memory: 1 page
    let mut exports = vec![3];
    for (name, kind, index) in [
        ("memory", 2, 0),
        ("tidemark_abi_version", 0, 0),
        ("filter", 0, 1),
    ] {
        leb(name.len() as u64, &mut exports);
        exports.extend_from_slice(name.as_bytes());
        exports.extend_from_slice(&[kind, index]);
    }
    section(7, &exports, &mut wasm);
    let mut code = Vec::new();
    leb(n + 2, &mut code);
    let one = [4, 0, 0x41, 1, 0x0b]; // i32.const 1
    code.extend_from_slice(&one);
    code.extend_from_slice(&one);
    for k in 0..n {
        // local.set 0 (i32.const k & 63); 2 x (local.get 0; i32.const 3; i32.mul; local.set 0);
        // local.get 0
        let mut body = vec![1, 1, 0x7f, 0x41, (k & 0x3f) as u8, 0x21, 0];
        for _ in 0..2 {
            body.extend_from_slice(&[0x20, 0, 0x41, 3, 0x6c, 0x21, 0]);
        }
        body.extend_from_slice(&[0x20, 0, 0x0b]);
        leb(body.len() as u64, &mut code);
        code.extend_from_slice(&body);
    }
    section(10, &code, &mut wasm);
    wasm
}

fn upload(server: &Server, name: &str, query: &str, bytes: Vec<u8>) -> (u16, Value) {
    let resp = client()
        .post(format!("{}/v1/filters/{name}{query}", server.url))
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

/// Upload, which must create a new version; its answer.
fn uploaded(server: &Server, name: &str, query: &str, bytes: Vec<u8>) -> Value {
    let (status, v) = upload(server, name, query, bytes);
    assert_eq!(status, 201, "upload {name}: {v}");
    v
}

/// A `/proc/PID/status` line's number (kB) in bytes; 0 once the process is gone.
fn proc_status(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The processes `pid` started that are still there (a server's compile children).
fn children(pid: u32) -> Vec<u32> {
    let parent = format!("{pid}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/status"))
                .unwrap_or_default()
                .lines()
                .any(|l| l.strip_prefix("PPid:").map(str::trim) == Some(parent.as_str()))
        })
        .collect()
}

fn webhook(name: &str, receiver: &Receiver, filter: &str) -> Value {
    json!({
        "name": name,
        "sink": {"type": "webhook", "url": receiver.url(&format!("/{name}"))},
        "retry": fast_retry(3),
        "filter": filter,
    })
}

fn metric(server: &Server, line_prefix: &str) -> f64 {
    let (_, text) = server.get_text("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_prefix} in:\n{text}"))
}

#[test]
fn a_module_too_costly_to_compile_is_refused_at_the_deadline_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let compile_memory = 512 * MIB;
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--filter-compile-ms",
            "3000",
            "--filter-compile-memory-bytes",
            &compile_memory.to_string(),
        ],
    );
    let pid = server.pid();
    let server_before = proc_status(pid, "VmHWM:");
    let wasm = many_functions(300_000);
    let size = wasm.len();

    let url = format!("{}/v1/filters/huge", server.url);
    let started = Instant::now();
    let upload = std::thread::spawn(move || {
        let resp = client()
            .post(url)
            .header("content-type", "application/wasm")
            .body(wasm)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().unwrap_or(Value::Null))
    });
    // The compile runs in a child of the server: watch its peak memory while it works.
    let (mut compile_children, mut child_peak) = (0, 0);
    let mut seen = Vec::new();
    while !upload.is_finished() {
        for child in children(pid) {
            if !seen.contains(&child) {
                seen.push(child);
                compile_children += 1;
            }
            child_peak = child_peak.max(proc_status(child, "VmHWM:"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, v) = upload.join().unwrap();
    let took = started.elapsed();
    let server_after = proc_status(pid, "VmHWM:");
    println!(
        "{size}-byte module of 300,000 functions refused in {took:?}: {}; compile child peak \
         RSS {} MiB (limit {} MiB), server peak RSS {} -> {} MiB",
        v["error"]["message"],
        child_peak / MIB,
        compile_memory / MIB,
        server_before / MIB,
        server_after / MIB
    );
    assert_eq!(status, 400, "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("compiling took longer than the limit of 3000 ms")
            || message.contains("compiling needs more memory than a compile may use"),
        "{v}"
    );
    assert_eq!(v["error"]["field"], "module", "{v}");
    // Refused at the deadline, not once compiling was done (that takes minutes here).
    assert!(took < Duration::from_secs(12), "refused after {took:?}");
    assert!(
        compile_children >= 1,
        "the module was compiled in a child process"
    );
    assert!(child_peak <= compile_memory, "child peak {child_peak}");
    assert!(
        server_after.saturating_sub(server_before) < 128 * MIB,
        "the server's own peak memory grew from {server_before} to {server_after}"
    );
    assert!(children(pid).is_empty(), "the compile child is gone");

    // The server serves on: nothing was stored, and a good module compiles (in a child too).
    assert_eq!(server.get("/v1/filters/huge").0, 404);
    assert_eq!(server.get("/healthz").0, 200);
    let v = uploaded(&server, "small", "", keep_all(1));
    assert_eq!(v["reference"], "small@1");
    let (_, tested) = server.post(
        "/v1/filters/small/test",
        json!({"events": [{"event_type": "ObjectCreated:Put", "bucket": "b", "key": "k"}]})
            .to_string(),
    );
    assert_eq!(tested["kept"], 1, "{tested}");
}

#[test]
fn subscriptions_are_admitted_against_the_filter_memory_budget_and_wait_for_room_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--allow-destinations",
            "loopback",
            "--filter-memory-budget-bytes",
            &(128 * MIB).to_string(),
        ],
    );
    let receiver = Receiver::start(dir.path(), "recv", &[]);
    uploaded(
        &server,
        "a",
        &format!("?memory_bytes={}", 4 * MIB),
        keep_all(1),
    );
    uploaded(&server, "b", "", keep_all(2)); // the default 16 MiB

    // Four partitions: a subscription on b needs 64 MiB of the 128. Two fit, a third not.
    create_subscription(&server, &webhook("b", &receiver, "b@1"));
    create_subscription(&server, &webhook("b2", &receiver, "b"));
    let (status, v) = server.post(
        "/v1/subscriptions",
        webhook("b3", &receiver, "b").to_string(),
    );
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["field"], "filter", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    for needle in [
        "b@1 needs 64 MiB",
        "16 MiB (16777216 bytes) per instance",
        "budget is 128 MiB",
        "--filter-memory-budget-bytes",
        "2 subscription(s) hold 128 MiB",
    ] {
        assert!(message.contains(needle), "want '{needle}' in: {message}");
    }
    assert_eq!(server.get("/v1/subscriptions/b3").0, 404);
    // Replacing one is measured without its own share.
    let (status, v) = server.put("/v1/subscriptions/b2", &webhook("b2", &receiver, "b"));
    assert_eq!(status, 200, "{v}");
    let (status, _) = server.delete("/v1/subscriptions/b2");
    assert_eq!(status, 204);
    create_subscription(&server, &webhook("a", &receiver, "a")); // 64 + 16 MiB
    wait_status(&server, "a", "filtering", Duration::from_secs(30), |s| {
        s["filter"]["state"] == "active"
    });

    // At run time: a@2 asks 32 MiB an instance, 128 MiB for a's four next to b's 64. The
    // partitions that find no room wait as capacity: no error, no quarantine.
    uploaded(
        &server,
        "a",
        &format!("?memory_bytes={}", 32 * MIB),
        keep_all(3),
    );
    let s = wait_status(&server, "a", "capacity", Duration::from_secs(30), |s| {
        s["filter"]["state"] == "capacity"
    });
    let reason = s["filter"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("a@2 waits for room"), "{s}");
    assert!(reason.contains("--filter-memory-budget-bytes"), "{s}");
    assert_eq!(s["filter"]["errors"], json!({}), "{s}");
    assert_eq!(s["filter"]["consecutive_errors"], 0, "{s}");
    assert_eq!(
        metric(
            &server,
            "tidemark_subscription_filter_capacity{subscription=\"a\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &server,
            "tidemark_subscription_filter_quarantined{subscription=\"a\"}"
        ),
        0.0
    );
    assert_eq!(
        metric(&server, "tidemark_filter_memory_budget_bytes"),
        (128 * MIB) as f64
    );
    assert_eq!(
        metric(&server, "tidemark_filter_memory_reserved_bytes"),
        (128 * MIB) as f64
    );
    // Events meanwhile wait in the log for the partitions that wait.
    let keys: Vec<String> = (0..16).map(|i| format!("k{i}")).collect();
    let ids = put_keys(&server, "photos", &keys);

    // Room comes back: the waiting partitions start by themselves and deliver everything.
    let (status, _) = server.delete("/v1/subscriptions/b");
    assert_eq!(status, 204);
    let s = wait_status(
        &server,
        "a",
        "active on a@2",
        Duration::from_secs(30),
        |s| s["filter"]["state"] == "active" && s["filter"]["version"] == 2,
    );
    assert_eq!(s["filter"]["errors"], json!({}), "{s}");
    wait_for("a's events", Duration::from_secs(30), || {
        let got: std::collections::HashSet<String> = receiver
            .requests()
            .iter()
            .filter(|r| r["path"] == "/a" && r["status"] == 200)
            .map(|r| common::receiver::only_event(r).id)
            .collect();
        let missing = ids.iter().filter(|id| !got.contains(*id)).count();
        if missing == 0 {
            Ok(())
        } else {
            Err(format!("{missing} not delivered"))
        }
    });
    assert_eq!(
        metric(
            &server,
            "tidemark_subscription_filter_capacity{subscription=\"a\"}"
        ),
        0.0
    );
    let (_, v) = server.get("/v1/subscriptions/a/dead-letters");
    assert_eq!(v["count"], 0, "{v}");
}

#[test]
fn filter_tests_end_at_their_deadline_or_event_cap_saying_what_they_did() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    // Two million loop turns an event: milliseconds each.
    let slow = module(
        "",
        r#"(local $i i32)
           (loop $l
             (local.set $i (i32.add (local.get $i) (i32.const 1)))
             (br_if $l (i32.lt_u (local.get $i) (i32.const 2000000))))
           i32.const 1"#,
    );
    uploaded(&server, "slow", "?fuel=1000000000&timeout_ms=1000", slow);
    uploaded(&server, "keep", "", keep_all(1));
    let event = |i: usize| json!({"event_type": "ObjectCreated:Put", "bucket": "b", "key": format!("k{i}")});
    let file = dir.path().join("large.jsonl");
    let lines: Vec<String> = (0..20_000).map(|i| event(i).to_string()).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();

    // The CLI: a large event file ends at the deadline, with the totals of what was done.
    let started = Instant::now();
    let out = tidemark(&[
        "filter",
        "test",
        "slow",
        "--events",
        file.to_str().unwrap(),
        "--deadline-ms",
        "2000",
        "--server",
        &server.url,
    ]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(
        out.contains("incomplete: stopped at the test's deadline of 2000 ms after evaluating"),
        "{out}"
    );
    assert!(out.contains("of 20000 events"), "{out}");

    // Over HTTP: the same, field by field.
    let (status, v) = server.post(
        "/v1/filters/slow/test",
        json!({"events": (0..5000).map(event).collect::<Vec<_>>(), "deadline_ms": 1000})
            .to_string(),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["complete"], false, "{v}");
    assert_eq!(v["stopped"]["reason"], "deadline", "{v}");
    assert_eq!(v["given"], 5000, "{v}");
    let evaluated = v["evaluated"].as_u64().unwrap();
    assert!(evaluated > 0 && evaluated < 5000, "{v}");
    assert_eq!(v["kept"], evaluated, "{v}");
    let (status, v) = server.post(
        "/v1/filters/slow/test",
        json!({"events": [event(0)], "deadline_ms": 100_000}).to_string(),
    );
    assert_eq!(
        (status, v["error"]["field"].clone()),
        (400, json!("deadline_ms")),
        "{v}"
    );

    // Past the event cap: the first 100,000 are evaluated, and the answer says so.
    let many: Vec<Value> = (0..100_001).map(event).collect();
    let (status, v) = server.post(
        "/v1/filters/keep/test",
        json!({"events": many, "max_results": 2}).to_string(),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (
            v["evaluated"].clone(),
            v["given"].clone(),
            v["stopped"]["reason"].clone()
        ),
        (json!(100_000), json!(100_001), json!("event_cap")),
        "{}",
        v["stopped"]
    );
    assert!(
        v["stopped"]["message"]
            .as_str()
            .unwrap()
            .contains("stopped at the cap of 100000 events per test"),
        "{}",
        v["stopped"]
    );
    let complete = server.post(
        "/v1/filters/keep/test",
        json!({"events": [event(0)]}).to_string(),
    );
    assert_eq!(
        (
            complete.1["complete"].clone(),
            complete.1["stopped"].clone()
        ),
        (json!(true), Value::Null)
    );
    let lines: Vec<String> = (0..100_001).map(|i| event(i).to_string()).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = tidemark(&[
        "filter",
        "test",
        "keep",
        "--events",
        file.to_str().unwrap(),
        "--server",
        &server.url,
    ]);
    assert!(out.contains("keep@1: 100000 events, 100000 kept"), "{out}");
    assert!(
        out.contains("incomplete: stopped at the cap of 100000 events per test"),
        "{out}"
    );
}

#[test]
fn uploads_past_the_version_cap_collect_the_oldest_unused_and_keep_those_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--allow-destinations",
            "loopback",
            "--filter-max-versions",
            "3",
        ],
    );
    let receiver = Receiver::start(dir.path(), "recv", &[]);
    for marker in 1..=3 {
        assert_eq!(
            uploaded(&server, "f", "", keep_all(marker))["collected_versions"],
            json!([])
        );
    }
    create_subscription(&server, &webhook("pinned", &receiver, "f@1"));
    create_subscription(&server, &webhook("following", &receiver, "f"));
    let live = |server: &Server| -> Vec<u64> {
        let (_, v) = server.get("/v1/filters/f");
        v["versions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["state"] == "live")
            .map(|v| v["version"].as_u64().unwrap())
            .collect()
    };

    // A fourth version: the oldest unused one (2) goes; 1 is pinned.
    let v = uploaded(&server, "f", "", keep_all(4));
    assert_eq!(
        (v["version"].clone(), v["collected_versions"].clone()),
        (json!(4), json!([2]))
    );
    assert_eq!(live(&server), vec![1, 3, 4]);
    let (_, f) = server.get("/v1/filters/f@2");
    assert_eq!(f["versions"][0]["state"], "deleted", "{f}");
    // The CLI says what went.
    let wasm = dir.path().join("f5.wasm");
    std::fs::write(&wasm, keep_all(5)).unwrap();
    let out = tidemark(&[
        "filter",
        "upload",
        "f",
        wasm.to_str().unwrap(),
        "--server",
        &server.url,
    ]);
    assert!(out.contains("uploaded f@5"), "{out}");
    assert!(out.contains("deleted unused versions 3 of f"), "{out}");
    assert_eq!(live(&server), vec![1, 4, 5]);

    // Every older version in use: refused, naming who holds them; nothing changes.
    create_subscription(&server, &webhook("pinned4", &receiver, "f@4"));
    let (status, v) = upload(&server, "f", "", keep_all(6));
    assert_eq!(status, 409, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    for needle in [
        "--filter-max-versions 3",
        "f@1 is pinned by pinned",
        "f@4 is pinned by pinned4",
        "f@5 (the latest) is followed by following",
    ] {
        assert!(message.contains(needle), "want '{needle}' in: {message}");
    }
    assert_eq!(live(&server), vec![1, 4, 5]);
    // Unpinned, version 4 can go.
    let (status, _) = server.delete("/v1/subscriptions/pinned4");
    assert_eq!(status, 204);
    let v = uploaded(&server, "f", "", keep_all(6));
    assert_eq!(v["collected_versions"], json!([4]), "{v}");
    assert_eq!(live(&server), vec![1, 5, 6]);
}
