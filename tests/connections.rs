//! What a client can hold on a listener: a slow-loris client (one byte a second) is cut off
//! within the header timeout while other clients are served; an idle kept-alive connection
//! is closed after the idle timeout, but a live watch streaming longer than both is not;
//! connections past `--max-connections` get a 503 at once. Both listeners.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// Read until the peer closes (Ok(bytes)) or `limit` passes (Err).
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + limit;
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(got),
            Err(_) => {}
        }
    }
    Err(format!("still open after {limit:?}"))
}

fn limited_server(dir: &std::path::Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "--header-timeout-secs",
        "2",
        "--idle-timeout-secs",
        "3",
        "--s3-listen",
        "127.0.0.1:0",
        "--s3-access-key",
        "AKTEST",
        "--s3-secret-key",
        "s3cr3t",
    ];
    args.extend_from_slice(extra);
    Server::start(&dir.join("data"), &args)
}

#[test]
fn a_slow_loris_client_is_cut_off_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = limited_server(dir.path(), &[]);
    for url in [server.url.clone(), server.s3_url.clone().unwrap()] {
        let mut slow = TcpStream::connect(addr(&url)).unwrap();
        let request =
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let started = Instant::now();
        let mut sent = 0;
        let mut cut = false;
        // One byte every 300 ms: the headers would take 20 s; the timeout is 2 s.
        while sent < request.len() && started.elapsed() < Duration::from_secs(15) {
            if slow.write_all(&request[sent..sent + 1]).is_err() {
                cut = true;
                break;
            }
            sent += 1;
            // Others are served meanwhile.
            if sent % 5 == 0 {
                let (status, _) = server.get("/healthz");
                assert_eq!(status, 200);
            }
            let mut probe = [0u8; 1];
            slow.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            match slow.read(&mut probe) {
                Ok(0) => {
                    cut = true;
                    break;
                }
                Ok(_) => panic!("{url}: an answer to headers that never ended"),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    cut = true;
                    break;
                }
                Err(_) => {}
            }
        }
        assert!(cut, "{url}: the slow client was never cut off");
        assert!(
            sent < request.len(),
            "{url}: cut only after the whole request"
        );
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(8),
            "{url}: cut after {took:?}; the header timeout is 2 s"
        );
    }
    let (_, metrics) = server.get_text("/metrics");
    for listener in ["http", "s3"] {
        let line = format!(
            "tidemark_connections_total{{listener=\"{listener}\",outcome=\"header_timeout\"}} "
        );
        let n: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("{line} in {metrics}"))
            .parse()
            .unwrap();
        assert!(n >= 1, "{metrics}");
    }
    server.stop();
}

#[test]
fn idle_connections_close_but_a_live_watch_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = limited_server(dir.path(), &[]);
    // A kept-alive connection after one answer is closed after the idle timeout (3 s).
    let mut idle = TcpStream::connect(addr(&server.url)).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let answered = read_until_closed(&mut idle, Duration::from_secs(10)).unwrap();
    assert!(
        String::from_utf8_lossy(&answered).starts_with("HTTP/1.1 200"),
        "answered first, then closed"
    );

    // A watch streaming for longer than both timeouts keeps its connection.
    let mut watch = TcpStream::connect(addr(&server.url)).unwrap();
    watch
        .write_all(b"GET /v1/watch?bucket=watched HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .unwrap();
    watch
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let mut put = 0;
    while started.elapsed() < Duration::from_secs(8) {
        if started.elapsed() > Duration::from_secs(put + 1) {
            put_keys(&server, "watched", &[format!("k{put}")]);
            put += 1;
        }
        match watch.read(&mut buf) {
            Ok(0) => panic!("the watch was closed after {:?}", started.elapsed()),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("k6"), "events kept arriving: {text}");
    server.stop();
}

#[test]
fn connections_past_the_limit_get_a_503_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = limited_server(
        dir.path(),
        &["--max-connections", "2", "--header-timeout-secs", "30"],
    );
    // The harness's own client may hold pooled connections: take the two slots by hand once
    // they are free.
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(addr(&server.url)).unwrap())
        .collect();
    let mut extra = TcpStream::connect(addr(&server.url)).unwrap();
    let answer = read_until_closed(&mut extra, Duration::from_secs(5)).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("--max-connections"), "{answer}");
    drop(held);
    // Slots free again once those connections are gone.
    wait_for("a free slot", Duration::from_secs(10), || {
        let (status, _) = server.get("/healthz");
        if status == 200 {
            Ok(())
        } else {
            Err(status.to_string())
        }
    });
    server.stop();
}

#[test]
fn the_body_limit_covers_the_s3_apis_xml_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let server = limited_server(dir.path(), &["--max-body-bytes", "2048"]);
    let aws = common::aws::Aws::new(dir.path(), &server);
    aws.ok(&["create-bucket", "--bucket", "limits"]);
    let body = dir.path().join("kept.txt");
    std::fs::write(&body, "kept").unwrap();
    aws.ok(&[
        "put-object",
        "--bucket",
        "limits",
        "--key",
        "kept",
        "--body",
        body.to_str().unwrap(),
    ]);
    // 100 keys of DeleteObjects XML: well over 2 KiB.
    let objects: Vec<String> = (0..100)
        .map(|i| format!("{{\"Key\":\"some/longish/key/number/{i:04}\"}}"))
        .collect();
    let delete = format!("{{\"Objects\":[{}]}}", objects.join(","));
    aws.refused(
        "MaxMessageLengthExceeded",
        &["delete-objects", "--bucket", "limits", "--delete", &delete],
    );
    // A small one still goes through, and nothing was lost.
    aws.ok(&[
        "delete-objects",
        "--bucket",
        "limits",
        "--delete",
        r#"{"Objects":[{"Key":"missing"}]}"#,
    ]);
    aws.ok(&["head-object", "--bucket", "limits", "--key", "kept"]);
    server.stop();
}
