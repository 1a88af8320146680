//! Live watch (`GET /v1/watch` as Server-Sent Events, `/v1/watch/ws`, `tidemark watch`)
//! against a real server on loopback: every change in order per key, resume by event id with
//! no gap and no duplicate, a stalled watcher cut off while others and ingest go on,
//! notification-only payloads, rules and WASM filters, bad input refused before streaming.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// One Server-Sent Event, or a comment (`event` = `:`).
#[derive(Debug, Clone)]
struct Sse {
    id: Option<String>,
    event: String,
    data: String,
}

impl Sse {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap()
    }
}

/// A minimal SSE client over a plain socket: it controls its receive buffer and may read
/// nothing at all (a stalled watcher). Chunk-size lines of the HTTP framing are skipped.
struct Watcher {
    reader: BufReader<TcpStream>,
    pending: Sse,
}

impl Watcher {
    fn connect(server: &Server, query: &str, last_event_id: Option<&str>) -> Watcher {
        Watcher::connect_with(server, query, last_event_id, None)
    }

    fn connect_with(
        server: &Server,
        query: &str,
        last_event_id: Option<&str>,
        receive_buffer: Option<usize>,
    ) -> Watcher {
        let addr: std::net::SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .unwrap();
        if let Some(bytes) = receive_buffer {
            socket.set_recv_buffer_size(bytes).unwrap();
        }
        socket.connect(&addr.into()).unwrap();
        let mut stream: TcpStream = socket.into();
        let resume = last_event_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "GET /v1/watch?{query} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{resume}\r\n"
        )
        .unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.contains(" 200 "), "watch {query}: {status}");
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            if header.trim().is_empty() {
                break;
            }
        }
        Watcher {
            reader,
            pending: Sse {
                id: None,
                event: String::new(),
                data: String::new(),
            },
        }
    }

    /// The next event or comment; `None` at the end of the stream.
    fn next(&mut self) -> Option<Sse> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if !self.pending.data.is_empty() || !self.pending.event.is_empty() {
                    return Some(std::mem::replace(
                        &mut self.pending,
                        Sse {
                            id: None,
                            event: String::new(),
                            data: String::new(),
                        },
                    ));
                }
                continue;
            }
            if line.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue; // chunk size
            }
            if let Some(comment) = line.strip_prefix(':') {
                self.pending.event = ":".into();
                self.pending.data = comment.trim().into();
                continue;
            }
            let (field, value) = line.split_once(": ").unwrap_or((line, ""));
            match field {
                "id" => self.pending.id = Some(value.into()),
                "event" => self.pending.event = value.into(),
                "data" => self.pending.data = value.into(),
                _ => {}
            }
        }
    }

    /// The next `n` change events (comments skipped).
    fn changes(&mut self, n: usize) -> Vec<Sse> {
        let mut got = Vec::new();
        while got.len() < n {
            let e = self
                .next()
                .unwrap_or_else(|| panic!("stream ended after {} of {n} events", got.len()));
            if e.event != ":" {
                assert_ne!(e.event, "error", "cut off: {}", e.data);
                got.push(e);
            }
        }
        got
    }

    /// Assert that nothing but heartbeats comes for a moment.
    fn quiet(&mut self, heartbeats: usize) {
        for _ in 0..heartbeats {
            let e = self.next().expect("stream open");
            assert_eq!(e.event, ":", "no more changes expected, got {e:?}");
        }
    }
}

fn puts(bucket: &str, keys: &[String], size: i64) -> Vec<Value> {
    keys.iter()
        .map(|k| json!({"op": "put", "bucket": bucket, "key": k, "size": size}))
        .collect()
}

/// Event ids and per-key sequences of `events`, checking each key's order.
fn check_order(events: &[Sse]) -> Vec<String> {
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut ids = Vec::new();
    for e in events {
        let v = e.json();
        let key = format!("{}/{}", v["bucket"], v["key"]);
        let seq = v["sequence"].as_i64().unwrap();
        let before = last.insert(key.clone(), seq).unwrap_or(0);
        assert!(seq > before, "{key}: sequence {seq} after {before}");
        ids.push(v["event_id"].as_str().unwrap().to_string());
    }
    ids
}

/// Events by key.
fn by_key(events: &[Sse]) -> HashMap<String, Value> {
    events
        .iter()
        .map(|e| (e.json()["key"].as_str().unwrap().to_string(), e.json()))
        .collect()
}

#[test]
fn every_change_in_order_and_resume_misses_nothing_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let q = "bucket=photos&events=ObjectCreated:*,ObjectRemoved:*&heartbeat_ms=300";
    let mut w = Watcher::connect(&server, q, None);
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let mut want = Vec::new();
    for _ in 0..5 {
        want.extend(ingest(&server, puts("photos", &keys, 10)));
        ingest(&server, puts("other-bucket", &keys, 10));
    }
    let first = w.changes(60);
    let resume = first.last().unwrap().id.clone().unwrap();
    drop(w);
    // While nobody watches: more puts and deletes.
    for _ in 0..3 {
        want.extend(ingest(&server, puts("photos", &keys, 10)));
    }
    let deletes: Vec<Value> = keys
        .iter()
        .map(|k| json!({"op": "delete", "bucket": "photos", "key": k}))
        .collect();
    want.extend(ingest(&server, deletes));

    let mut w = Watcher::connect(&server, q, Some(&resume));
    let rest = w.changes(want.len() - first.len());
    w.quiet(2);
    let all: Vec<Sse> = first.into_iter().chain(rest).collect();
    let got = check_order(&all);
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "no event twice");
    let want: HashSet<String> = want.into_iter().map(|(_, id)| id).collect();
    assert_eq!(got.into_iter().collect::<HashSet<_>>(), want);
    assert!(all.iter().all(|e| e.event.starts_with("Object")));

    // `since=` does what Last-Event-ID does; `earliest` starts at the beginning.
    let mut w = Watcher::connect(&server, &format!("{q}&since={resume}"), None);
    assert_eq!(w.changes(want.len() - 60)[0].json()["bucket"], "photos");
    let mut w = Watcher::connect(&server, "since=earliest&bucket=other-bucket", None);
    assert_eq!(w.changes(100).len(), 100);

    let (_, metrics) = server.get_text("/metrics");
    assert!(metrics.contains("tidemark_watch_connections "), "{metrics}");
}

#[test]
fn a_stalled_watcher_is_cut_off_with_the_reason_while_others_and_ingest_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--watch-max-lag-events", "200"]);
    let q = "bucket=bulk&heartbeat_ms=500";
    // Reads nothing, with a 4 KiB receive window.
    let mut stalled = Watcher::connect_with(&server, q, None, Some(4096));
    let mut healthy = Watcher::connect(&server, q, None);
    // ~1.5 KB per event: megabytes more than the socket buffers hold.
    let meta: String = "x".repeat(1200);
    let mut want = Vec::new();
    let started = Instant::now();
    for round in 0..8 {
        let batch: Vec<Value> = (0..500)
            .map(|i| {
                json!({"op": "put", "bucket": "bulk", "key": format!("k{round}-{i}"),
                       "size": 1, "metadata": {"pad": meta}})
            })
            .collect();
        want.extend(ingest(&server, batch));
        assert_eq!(
            healthy.changes(500).len(),
            500,
            "the healthy watcher keeps up"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "ingest was not held up"
    );
    let metrics = wait_for(
        "the stalled watcher cut off",
        Duration::from_secs(20),
        || {
            let (_, m) = server.get_text("/metrics");
            if m.contains("tidemark_watch_disconnects_total{reason=\"lag\"} 1") {
                Ok(m)
            } else {
                Err(m)
            }
        },
    );
    assert!(
        metrics.contains("tidemark_watch_connections 1"),
        "{metrics}"
    );

    // Now it reads: what was buffered, then the reason, then the end.
    let mut seen = Vec::new();
    let error = loop {
        let e = stalled.next().expect("an error event before the end");
        match e.event.as_str() {
            ":" => {}
            "error" => break e.json(),
            _ => seen.push(e),
        }
    };
    let reason = error["reason"].as_str().unwrap();
    assert!(reason.contains("fell behind by"), "{reason}");
    assert!(reason.contains("Last-Event-ID"), "{reason}");
    assert!(stalled.next().is_none(), "the stream ends after the error");
    assert!(seen.len() < want.len(), "it was cut off before the end");
    let resume = error["resume"].as_str().unwrap();
    assert_eq!(Some(resume), seen.last().and_then(|e| e.id.as_deref()));

    // Resuming from its last id gets exactly the rest.
    let mut again = Watcher::connect(&server, q, Some(resume));
    let rest = again.changes(want.len() - seen.len());
    again.quiet(1);
    let got: Vec<String> = check_order(&seen.into_iter().chain(rest).collect::<Vec<_>>());
    let want: Vec<String> = want.into_iter().map(|(_, id)| id).collect();
    assert_eq!(got.len(), want.len());
    assert_eq!(
        got.into_iter().collect::<HashSet<_>>(),
        want.into_iter().collect::<HashSet<_>>()
    );
}

#[test]
fn notify_only_rules_and_filters_narrow_what_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    // Keeps events of objects larger than 100 bytes.
    let big = wat::parse_str(
        r#"(module
             (import "tidemark" "size" (func $size (result i64)))
             (memory (export "memory") 1)
             (func (export "tidemark_abi_version") (result i32) i32.const 1)
             (func (export "filter") (result i32) (i64.gt_s (call $size) (i64.const 100))))"#,
    )
    .unwrap();
    let resp = client()
        .post(format!("{}/v1/filters/big", server.url))
        .header("content-type", "application/wasm")
        .body(big)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);

    let rules = "%7B%22suffix%22%3A%5B%22.jpg%22%5D%7D"; // {"suffix":[".jpg"]}
    let mut notify = Watcher::connect(
        &server,
        &format!(
            "bucket=pics&notify_only=true&events=ObjectCreated:*&rules={rules}&heartbeat_ms=300"
        ),
        None,
    );
    let mut filtered = Watcher::connect(
        &server,
        "bucket=pics&events=ObjectCreated:*&filter=big&heartbeat_ms=300",
        None,
    );
    let mutations = vec![
        json!({"op": "put", "bucket": "pics", "key": "a.jpg", "size": 500,
               "metadata": {"camera": "x"}}),
        json!({"op": "put", "bucket": "pics", "key": "b.png", "size": 500}),
        json!({"op": "delete", "bucket": "pics", "key": "a.jpg"}),
        json!({"op": "put", "bucket": "pics", "key": "c.jpg", "size": 5}),
        json!({"op": "put", "bucket": "elsewhere", "key": "d.jpg", "size": 500}),
    ];
    ingest(&server, mutations);

    let got = notify.changes(2);
    notify.quiet(2);
    // Keys on different partitions may come in either order.
    assert_eq!(
        by_key(&got).into_keys().collect::<HashSet<_>>(),
        ["a.jpg".to_string(), "c.jpg".to_string()].into()
    );
    let fields: HashSet<String> = got[0].json().as_object().unwrap().keys().cloned().collect();
    let want: HashSet<String> = [
        "event_type",
        "event_time",
        "bucket",
        "key",
        "version_id",
        "sequence",
        "partition",
        "offset",
    ]
    .map(String::from)
    .into();
    assert_eq!(fields, want, "notification only: no metadata");
    assert_eq!(got[0].event, "ObjectCreated:Put");

    let got = filtered.changes(2);
    filtered.quiet(2);
    let got = by_key(&got);
    assert_eq!(
        got.keys().collect::<HashSet<_>>(),
        [&"a.jpg".to_string(), &"b.png".to_string()].into(),
        "only size > 100"
    );
    assert_eq!(got["a.jpg"]["metadata"]["camera"], "x", "the full event");
}

#[test]
fn bad_input_is_refused_before_streaming_naming_the_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    for (query, field) in [
        ("events=ObjectCreated:Nope", "events[0]"),
        ("events=,", "events"),
        ("rules=%7Bnot-json", "rules"),
        ("rules=%7B%22regex%22:%22(%22%7D", "rules.regex"),
        ("since=12", "since"),
        ("since=a.b.c.d", "since"),
        ("since=999.0.0.0", "since"),
        ("filter=missing", "filter"),
        ("heartbeat_ms=1", "heartbeat_ms"),
        ("notify_only=maybe", "query"),
        ("colour=blue", "query"),
    ] {
        let (status, v) = server.get(&format!("/v1/watch?{query}"));
        assert_eq!(status, 400, "{query}: {v}");
        assert_eq!(v["error"]["field"], field, "{query}: {v}");
    }
    let resp = client()
        .get(format!("{}/v1/watch", server.url))
        .header("last-event-id", "nope")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: Value = resp.json().unwrap();
    assert_eq!(v["error"]["field"], "Last-Event-ID", "{v}");
}

#[test]
fn websocket_watchers_get_the_same_events_and_resume_with_since() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let ws_url = server.url.replace("http://", "ws://");
    let keys: Vec<String> = (0..6).map(|i| format!("w{i}")).collect();
    let want: Vec<String> = ingest(&server, puts("sockets", &keys, 3))
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let read = |url: &str, n: usize| -> Vec<Value> {
        let (mut socket, _) = tungstenite::connect(url).unwrap();
        let mut got = Vec::new();
        while got.len() < n {
            match socket.read().unwrap() {
                tungstenite::Message::Text(t) => got.push(serde_json::from_str(&t).unwrap()),
                _ => continue,
            }
        }
        got
    };
    let got = read(
        &format!("{ws_url}/v1/watch/ws?bucket=sockets&since=earliest"),
        6,
    );
    let ids: Vec<&str> = got
        .iter()
        .map(|v| v["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.iter().copied().collect::<HashSet<_>>(),
        want.iter().map(String::as_str).collect::<HashSet<_>>()
    );
    assert_eq!(got[0]["type"], "ObjectCreated:Put");
    let cursor = got[2]["cursor"].as_str().unwrap();
    let rest = read(
        &format!("{ws_url}/v1/watch/ws?bucket=sockets&since={cursor}"),
        3,
    );
    let rest_ids: Vec<&str> = rest
        .iter()
        .map(|v| v["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(rest_ids, ids[3..].to_vec());

    let (status, v) = server.get("/v1/watch/ws?events=Bad");
    assert_eq!(
        (status, v["error"]["field"].clone()),
        (400, json!("events[0]"))
    );
}

#[test]
fn the_watch_command_prints_changes_as_they_happen() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    ingest(&server, puts("cli-bucket", &["before".to_string()], 1));
    let mut child = std::process::Command::new(BIN)
        .args(["watch", "--bucket", "cli-bucket", "--server", &server.url])
        .args(["--prefix", "docs/", "--since", "earliest"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    ingest(
        &server,
        vec![
            json!({"op": "put", "bucket": "cli-bucket", "key": "docs/a.txt", "size": 42}),
            json!({"op": "put", "bucket": "cli-bucket", "key": "other/b.txt", "size": 7}),
            json!({"op": "delete", "bucket": "cli-bucket", "key": "docs/a.txt"}),
        ],
    );
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(
        line.ends_with(" ObjectCreated:Put cli-bucket/docs/a.txt 42"),
        "{line}"
    );
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(
        line.contains(" ObjectRemoved:Delete cli-bucket/docs/a.txt"),
        "{line}"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // JSON lines carry the cursor; a bad flag value is the server's 400, named.
    let out = run(&[
        "watch",
        "--bucket",
        "cli-bucket",
        "--server",
        &server.url,
        "--events",
        "Nope",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("events[0]"), "{err}");

    let mut child = std::process::Command::new(BIN)
        .args(["watch", "--bucket", "cli-bucket", "--server", &server.url])
        .args(["--since", "earliest", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let v: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["key"], "before");
    assert!(v["cursor"].as_str().unwrap().contains('.'), "{v}");
}

#[test]
fn the_watch_command_resumes_after_the_server_restarts_without_repeating() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let server = Server::start(&data, &["--listen", &listen]);
    let mut child = std::process::Command::new(BIN)
        .args(["watch", "--bucket", "restarts", "--server", &server.url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    // `since=now` is taken when the command connects: wait until it shows a first change.
    let line = wait_for("the first change", Duration::from_secs(20), || {
        ingest(&server, puts("restarts", &["first".to_string()], 1));
        rx.recv_timeout(Duration::from_millis(500))
            .map_err(|e| e.to_string())
    });
    assert!(line.contains("restarts/first"), "{line}");
    while rx.recv_timeout(Duration::from_millis(500)).is_ok() {}
    // A graceful stop ends the open watch stream instead of waiting for it.
    server.stop();
    let server = Server::start(&data, &["--listen", &listen]);
    ingest(&server, puts("restarts", &["second".to_string()], 1));
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(
        line.contains("restarts/second"),
        "resumed after the restart: {line}"
    );
    assert!(
        rx.recv_timeout(Duration::from_millis(1500)).is_err(),
        "nothing printed twice"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The `tidemark_watch_tailers` gauge.
fn tailers(server: &Server) -> u64 {
    let (_, text) = server.get_text("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix("tidemark_watch_tailers "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no tidemark_watch_tailers in:\n{text}"))
}

#[test]
fn tailers_stop_when_the_last_watcher_leaves_and_restart_with_no_gap_or_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    assert_eq!(tailers(&server), 0, "no watcher, no tailer");
    let q = "bucket=photos&heartbeat_ms=300";
    let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
    let mut want: Vec<(String, String)> = Vec::new();
    let mut all: Vec<Sse> = Vec::new();
    let mut resume: Option<String> = None;
    for round in 0..3 {
        let mut w = Watcher::connect(&server, q, resume.as_deref());
        assert_eq!(
            tailers(&server),
            4,
            "round {round}: the tailers run for the watcher"
        );
        // Live changes through the (re)started tailers...
        want.extend(ingest(&server, puts("photos", &keys, round as i64)));
        let pending = want.len() - all.len();
        let got = w.changes(pending);
        resume = got.last().unwrap().id.clone();
        all.extend(got);
        w.quiet(1);
        drop(w);
        // ...then nobody watches: the tailers stop, and changes made meanwhile come to the
        // next watcher from the log, by its cursor.
        wait_for(
            "the tailers to stop",
            Duration::from_secs(10),
            || match tailers(&server) {
                0 => Ok(()),
                n => Err(format!("{n} tailers")),
            },
        );
        want.extend(ingest(&server, puts("photos", &keys, 100 + round as i64)));
    }
    let mut w = Watcher::connect(&server, q, resume.as_deref());
    all.extend(w.changes(want.len() - all.len()));
    w.quiet(2);
    let got = check_order(&all);
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "no event twice");
    let want: HashSet<String> = want.into_iter().map(|(_, id)| id).collect();
    assert_eq!(
        got.into_iter().collect::<HashSet<_>>(),
        want,
        "no event missing"
    );
}
