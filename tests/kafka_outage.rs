//! The broker down at start, and lost mid-stream: clear errors (in the responses, the process
//! exit and `/healthz`), ingest resumes by itself once the broker is back, and no acknowledged
//! mutation is lost.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[test]
fn broker_down_at_start_is_a_clear_error() {
    let scratch = tempfile::tempdir().unwrap();
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let out = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        scratch.path().to_str().unwrap(),
        "--log",
        "kafka",
        "--kafka-brokers",
        &brokers,
        "--kafka-request-timeout-ms",
        "2000",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot reach the Kafka brokers at {brokers}")),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
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

#[test]
fn broker_lost_mid_stream_then_back() {
    let backend = Backend::kafka();
    let Backend::Kafka(broker) = &backend else {
        unreachable!()
    };
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let server = Server::start_on(
        &backend,
        &data,
        &[
            "--kafka-delivery-timeout-ms",
            "3000",
            "--kafka-request-timeout-ms",
            "2000",
        ],
    );
    let mut rng = fastrand::Rng::with_seed(5);
    let mut acked: Vec<String> = Vec::new();
    let mut post = |n: usize| {
        let mutations: Vec<_> = (0..n)
            .map(|_| random_mutation(&mut rng, "outage", 30))
            .collect();
        server.post(
            "/v1/mutations",
            json!({ "mutations": mutations }).to_string(),
        )
    };
    for _ in 0..5 {
        let (status, resp) = post(20);
        assert_eq!(status, 200, "{resp}");
        acked.extend(acked_ids(&resp));
    }

    // The broker stops answering (its connections stay open, as in a network partition).
    signal(broker.pid(), "-STOP");
    let (status, resp) = post(5);
    assert_eq!(status, 503, "{resp}");
    assert_eq!(resp["error"]["code"], "unavailable", "{resp}");
    let (status, health) = server.get("/healthz");
    assert_eq!(
        (status, health["status"].as_str()),
        (503, Some("unavailable")),
        "{health}"
    );

    // Back: the node sees the broker again, rejoins the ingest group (its membership lapsed
    // during the outage), resyncs from the log and goes on. Against Tansu, it also replaces
    // the producer the broker fences after a timed-out produce.
    signal(broker.pid(), "-CONT");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, resp) = post(20);
        acked.extend(acked_ids(&resp));
        let all_in = status == 200
            && resp["results"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["error"]["code"] != "unavailable");
        if all_in {
            break;
        }
        assert!(status == 200 || status == 503, "{resp}");
        assert!(Instant::now() < deadline, "still refused: {resp}");
        std::thread::sleep(Duration::from_millis(500));
    }
    for _ in 0..4 {
        let (status, resp) = post(20);
        assert_eq!(status, 200, "{resp}");
        acked.extend(acked_ids(&resp));
    }
    let (_, health) = server.get("/healthz");
    assert_eq!(health["status"], "ok", "{health}");
    server.wait_caught_up();

    assert_log_and_index_intact(&backend, &data, &acked, scratch.path());
    server.stop();
}
