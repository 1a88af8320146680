//! The Parquet lake sink against independent readers: DuckDB and pyarrow read the lake with
//! Hive partitioning and agree with Tidemark's own index for a randomized workload of 100,000
//! mutations; a file larger than its encoder's chunk holds every event once; SIGKILL during a
//! backfill and during live writes leaves no duplicate, no missing event and no visible
//! temporary file; bad lake settings are refused by name.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::moto::Moto;
use common::*;
use serde_json::{Value, json};

const READER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/lake_read.py");

fn read_lake(root: &Path) -> Value {
    let out = Command::new("python3")
        .arg(READER)
        .arg(root)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "lake_read.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn lake_spec(name: &str, path: &Path, start: &str) -> Value {
    json!({
        "name": name,
        "start": start,
        "sink": {"type": "parquet", "path": path,
                 "roll": {"max_rows": 20000, "idle_ms": 300}},
    })
}

/// What both readers saw is `acked` events, each once, in committed Parquet files only.
fn holds_each_once(seen: &Value, acked: usize) {
    assert_eq!(seen["duckdb_rows"], acked, "{seen:#}");
    assert_eq!(seen["duckdb_distinct_ids"], acked);
    assert_eq!(seen["pyarrow_rows"], acked);
    assert_eq!(seen["pyarrow_distinct_ids"], acked);
    assert_eq!(seen["duplicate_ids"], json!([]));
    assert_eq!(seen["not_parquet"], json!([]), "{seen}");
}

/// Wait until the subscription has written everything up to the end of the log.
fn wait_written(server: &Server, name: &str, timeout: Duration) -> Value {
    wait_status(server, name, "the lake caught up", timeout, |s| {
        s["lag"] == 0 && s["state"] == "running"
    })
}

#[test]
fn duckdb_and_pyarrow_read_the_lake_and_agree_with_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let server = Server::start(&dir.path().join("data"), &[]);
    // History first: the lake subscription backfills it, then follows live writes.
    let mut rng = fastrand::Rng::with_seed(7);
    let buckets = ["photos", "videos", "docs"];
    let (mut acked, mut round, mut created) = (0, 0, false);
    // 100,000 acknowledged mutations (some random ones are refused, such as deleting a key
    // that does not exist); the lake subscription starts (from `earliest`) on the way.
    while acked < 100_000 {
        let bucket = buckets[round % 3];
        acked += acked_ids(&post_random(&server, &mut rng, bucket, 3000, 5000)).len();
        round += 1;
        if !created && acked >= 70_000 {
            create_subscription(&server, &lake_spec("lake", &lake, "earliest"));
            created = true;
        }
    }
    let status = wait_written(&server, "lake", Duration::from_secs(300));
    assert_eq!(status["delivered"], acked, "{status}");

    let seen = read_lake(&lake);
    holds_each_once(&seen, acked);
    for column in [
        "event_id",
        "event_time",
        "metadata",
        "previous_size",
        "log_offset",
        "dt",
        "hour",
    ] {
        assert!(
            seen["columns"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == column),
            "{column} in {}",
            seen["columns"]
        );
    }
    // Per object, the latest event in the lake is the index's state (or a removal).
    let mut lake_latest: BTreeMap<(String, String), &Value> = BTreeMap::new();
    for l in seen["latest"].as_array().unwrap() {
        lake_latest.insert(
            (
                l["bucket"].as_str().unwrap().into(),
                l["key"].as_str().unwrap().into(),
            ),
            l,
        );
    }
    let mut live = 0;
    for bucket in buckets {
        let index = index_objects(&server, bucket, None);
        live += index.len();
        for (key, (sequence, size, etag)) in &index {
            let l = lake_latest
                .get(&(bucket.to_string(), key.clone()))
                .unwrap_or_else(|| panic!("{bucket}/{key} not in the lake"));
            assert_eq!(l["sequence"], *sequence, "{bucket}/{key}: {l}");
            assert_eq!(l["size"], *size, "{bucket}/{key}: {l}");
            assert_eq!(l["etag"], *etag, "{bucket}/{key}: {l}");
        }
    }
    let removed = lake_latest
        .values()
        .filter(|l| {
            l["event_type"]
                .as_str()
                .unwrap()
                .starts_with("ObjectRemoved")
        })
        .count();
    assert_eq!(live + removed, lake_latest.len());
}

/// A directory that fills more than one chunk of its encoder (20,000 rows,
/// `lake/segment_file.rs`) has its file encoded as its rows arrive, on a thread of its own:
/// through the server, that file holds every event once and DuckDB and pyarrow read it.
#[test]
fn a_file_larger_than_the_encoders_chunk_holds_every_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    // One log partition, one bucket: one file per segment (per hour).
    let server = Server::start(&dir.path().join("data"), &["--partitions", "1"]);
    let mut spec = lake_spec("big", &lake, "earliest");
    spec["sink"]["roll"] = json!({"max_rows": 100000, "idle_ms": 5000});
    create_subscription(&server, &spec);
    let mut rng = fastrand::Rng::with_seed(5);
    let mut acked = 0;
    while acked < 45_000 {
        acked += acked_ids(&post_random(&server, &mut rng, "photos", 3000, 5000)).len();
    }
    let status = wait_written(&server, "big", Duration::from_secs(300));
    assert_eq!(status["delivered"], acked, "{status}");

    let seen = read_lake(&lake);
    assert!(
        seen["largest_file_rows"].as_u64().unwrap() > 20_000,
        "no file took more than one chunk of its encoder: the largest holds {} rows",
        seen["largest_file_rows"]
    );
    holds_each_once(&seen, acked);
}

#[test]
fn sigkill_during_backfill_and_live_writes_leaves_each_event_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lake = dir.path().join("lake");
    let mut rng = fastrand::Rng::with_seed(11);
    let server = Server::start(&data, &[]);
    for _ in 0..4 {
        post_random(&server, &mut rng, "crash", 2000, 5000);
    }
    let mut spec = lake_spec("crash-lake", &lake, "earliest");
    // Small segments: many commits to be interrupted.
    spec["sink"]["roll"] = json!({"max_rows": 1500, "idle_ms": 200});
    create_subscription(&server, &spec);
    let mut server = Some(server);
    for round in 0..12 {
        let s = match server.take() {
            Some(s) => s,
            None => Server::start(&data, &[]),
        };
        // From round 5 on, live writes race the kill as well.
        let writer = (round >= 5).then(|| {
            let url = s.url.clone();
            let seed = round as u64;
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(100 + seed);
                for _ in 0..20 {
                    let mutations: Vec<Value> = (0..200)
                        .map(|_| random_mutation(&mut rng, "crash", 2000))
                        .collect();
                    let sent = client()
                        .post(format!("{url}/v1/mutations"))
                        .header("content-type", "application/json")
                        .body(json!({ "mutations": mutations }).to_string())
                        .send();
                    if sent.is_err() {
                        return;
                    }
                }
            })
        });
        std::thread::sleep(Duration::from_millis(rng.u64(150..900)));
        s.kill();
        if let Some(w) = writer {
            let _ = w.join();
        }
    }
    let server = Server::start(&data, &[]);
    wait_written(&server, "crash-lake", Duration::from_secs(300));
    // Every event of the log is in the lake once: compare ids with the log itself.
    let in_log: HashSet<String> = log_events(&Backend::Embedded, &data)
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_string())
        .collect();
    let seen = read_lake(&lake);
    assert_eq!(seen["duplicate_ids"], json!([]), "{seen}");
    assert_eq!(seen["not_parquet"], json!([]), "{seen}");
    assert_eq!(
        seen["duckdb_rows"],
        in_log.len(),
        "rows vs events in the log"
    );
    assert_eq!(seen["duckdb_distinct_ids"], in_log.len());
    assert_eq!(seen["pyarrow_rows"], in_log.len());
}

#[test]
fn bad_lake_settings_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let lake = dir.path().join("lake");
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, b"not a directory").unwrap();
    let cases = [
        (
            json!({"type": "parquet", "path": lake, "partition": "bucket={bukket}"}),
            "sink.partition",
            "bukket",
        ),
        (
            json!({"type": "parquet", "path": lake, "partition": "no-equals-sign"}),
            "sink.partition",
            "",
        ),
        (
            json!({"type": "parquet", "path": blocked.join("lake")}),
            "sink.path",
            "cannot create",
        ),
        (
            json!({"type": "parquet", "path": "s3://b/p", "s3": {"endpoint": "http://10.0.0.5:9000"}}),
            "sink.s3.endpoint",
            "private",
        ),
        (
            json!({"type": "parquet", "path": lake, "roll": {"max_rows": 0}}),
            "sink.roll.max_rows",
            "0 is out of range 1..=10000000",
        ),
        (
            json!({"type": "parquet", "path": lake, "roll": {"max_rows": 10_000_001}}),
            "sink.roll.max_rows",
            "10000001 is out of range 1..=10000000",
        ),
        (
            json!({"type": "parquet", "path": lake, "roll": {"max_bytes": 2u64 << 30}}),
            "sink.roll.max_bytes",
            "2147483648 is out of range 1..=1073741824",
        ),
        (
            json!({"type": "parquet", "path": lake, "roll": {"max_age_ms": 0}}),
            "sink.roll.max_age_ms",
            "must be positive",
        ),
        (
            json!({"type": "parquet", "path": lake, "parquet": {"compression": "lz4000"}}),
            "sink.parquet",
            "",
        ),
        (
            json!({"type": "parquet", "path": lake, "colour": "blue"}),
            "sink",
            "colour",
        ),
    ];
    for (sink, field, needle) in cases {
        let spec = json!({"name": "bad", "sink": sink});
        let (status, v) = server.post("/v1/subscriptions", spec.to_string());
        assert_eq!(status, 400, "{spec}: {v}");
        let got = v["error"]["field"].as_str().unwrap_or_default();
        assert!(
            got.starts_with(field),
            "{spec}: want field {field}, got {v}"
        );
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{spec}: want '{needle}' in {v}"
        );
    }
    // Nothing else stopped: a good lake subscription still works.
    create_subscription(&server, &lake_spec("good", &lake, "latest"));
    let acked = put_keys(&server, "photos", &["a".into(), "b".into()]);
    wait_for("two rows in the lake", Duration::from_secs(30), || {
        let seen = read_lake(&lake);
        if seen["duckdb_rows"] == acked.len() {
            Ok(())
        } else {
            Err(seen.to_string())
        }
    });
}

#[test]
fn a_lake_on_an_s3_compatible_server_is_read_back_by_duckdb_and_pyarrow() {
    let moto = Moto::start();
    moto.script("s3_lake.py", "mkbucket", &["lakehouse"]);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--allow-destinations", "loopback"],
    );
    let spec = json!({
        "name": "s3-lake",
        "start": "earliest",
        "sink": {"type": "parquet", "path": "s3://lakehouse/events/v1",
                 "s3": {"endpoint": moto.endpoint, "access_key_id": "test",
                        "secret_access_key": "test"},
                 "roll": {"max_rows": 700, "idle_ms": 200},
                 "parquet": {"compression": "snappy"}},
    });
    let created = create_subscription(&server, &spec);
    // The secret is kept apart, as every subscription secret.
    assert!(
        created["sink"]["s3"]["secret_access_key"]
            .as_str()
            .unwrap()
            .starts_with("secret:"),
        "{created}"
    );
    let mut rng = fastrand::Rng::with_seed(3);
    let mut acked = 0;
    for _ in 0..3 {
        let mutations: Vec<Value> = (0..1000)
            .map(|_| random_mutation(&mut rng, "photos", 500))
            .collect();
        let (_, v) = server.post(
            "/v1/mutations",
            json!({ "mutations": mutations }).to_string(),
        );
        acked += acked_ids(&v).len();
    }
    let status = wait_written(&server, "s3-lake", Duration::from_secs(120));
    assert_eq!(status["delivered"], acked, "{status}");
    assert_eq!(status["endpoint"], "s3://lakehouse/events/v1", "{status}");
    let local = dir.path().join("downloaded");
    let files: usize = moto
        .script(
            "s3_lake.py",
            "download",
            &["lakehouse", "events/v1", local.to_str().unwrap()],
        )
        .trim()
        .parse()
        .unwrap();
    assert!(files >= 4, "{files} files");
    let seen = read_lake(&local);
    assert_eq!(seen["duckdb_rows"], acked, "{seen}");
    assert_eq!(seen["duckdb_distinct_ids"], acked);
    assert_eq!(seen["pyarrow_rows"], acked);

    // An S3 endpoint nobody answers at: status says why, and the other lake carries on.
    let mut broken = spec.clone();
    broken["name"] = "s3-broken".into();
    broken["sink"]["s3"]["endpoint"] = format!("http://127.0.0.1:{}", free_port()).into();
    create_subscription(&server, &broken);
    let s = wait_status(
        &server,
        "s3-broken",
        "an error in status",
        Duration::from_secs(60),
        |s| {
            s["last_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("the lake: cannot"))
        },
    );
    assert_eq!(s["delivered"], 0, "{s}");
    let more = put_keys(&server, "photos", &["after-1".into(), "after-2".into()]);
    let status = wait_status(
        &server,
        "s3-lake",
        "the new events",
        Duration::from_secs(60),
        |s| s["delivered"] == acked + more.len() && s["lag"] == 0,
    );
    assert!(status["last_error"].is_null(), "{status}");
}

#[test]
fn wrong_s3_credentials_show_in_status_and_nothing_else_stops() {
    // moto checking signatures: it issues a real key pair, and refuses others. (It also
    // refuses some correctly signed requests, listings with a prefix and keys with `=`, for
    // boto3 as well, so the writing itself is tested against moto without key checks.)
    let moto = Moto::start_checking_keys();
    let key: Value = serde_json::from_str(&moto.script("s3_lake.py", "auth", &["keyed"])).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--allow-destinations", "loopback"],
    );
    create_subscription(
        &server,
        &json!({
            "name": "wrong",
            "start": "earliest",
            "sink": {"type": "parquet", "path": "s3://keyed",
                     "s3": {"endpoint": moto.endpoint, "access_key_id": key["id"],
                            "secret_access_key": "not-the-secret"},
                     "roll": {"idle_ms": 200}},
        }),
    );
    let local = dir.path().join("lake");
    create_subscription(&server, &lake_spec("local", &local, "earliest"));
    let acked = put_keys(&server, "photos", &["a".into(), "b".into(), "c".into()]);
    let s = wait_status(
        &server,
        "wrong",
        "the refusal in status",
        Duration::from_secs(60),
        |s| {
            s["last_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("the lake: cannot"))
        },
    );
    assert_eq!(s["delivered"], 0, "{s}");
    let message = s["last_error"]["message"].as_str().unwrap();
    assert!(message.contains("403"), "{message}");
    wait_status(&server, "local", "written", Duration::from_secs(60), |s| {
        s["delivered"] == acked.len() && s["lag"] == 0
    });
    assert_eq!(read_lake(&local)["duckdb_rows"], acked.len());
}

/// Every committed Parquet file under `root`, as paths relative to it.
fn lake_files(root: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.insert(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

fn now_rfc3339() -> String {
    std::thread::sleep(Duration::from_millis(30));
    let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    std::thread::sleep(Duration::from_millis(30));
    t
}

#[test]
fn a_damaged_lake_is_backfilled_by_a_replay_and_a_second_backfill_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut wave = |n: usize| {
        let mutations: Vec<Value> = (0..n)
            .map(|_| random_mutation(&mut rng, "backfill", 300))
            .collect();
        let (status, v) = server.post(
            "/v1/mutations",
            json!({ "mutations": mutations }).to_string(),
        );
        assert_eq!(status, 200, "{v}");
    };
    let t0 = now_rfc3339();
    wave(1200);
    let t1 = now_rfc3339();
    wave(1200);
    let t2 = now_rfc3339();
    wave(600);
    let mut spec = lake_spec("bf", &lake, "earliest");
    spec["sink"]["roll"] = json!({"max_rows": 150, "idle_ms": 200});
    create_subscription(&server, &spec);
    let status = wait_written(&server, "bf", Duration::from_secs(120));
    let original = lake_files(&lake);
    let whole = read_lake(&lake);
    let total = whole["duckdb_rows"].as_u64().unwrap();
    assert!(total > 1500, "{whole}");
    assert!(original.len() > 10, "{original:?}");

    // The lake is lost; a backfill of [t1, t2) writes the files of the segments it covers.
    std::fs::remove_dir_all(&lake).unwrap();
    let replay = |from: &str, to: Option<&str>| -> Value {
        let mut args = vec![
            "replay",
            "--server",
            &server.url,
            "--json",
            "--subscription",
            "bf",
            "--from",
            from,
        ];
        if let Some(to) = to {
            args.extend(["--to", to]);
        }
        let out = run(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let job: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(job["state"], "succeeded", "{job}");
        job
    };
    let job = replay(&t1, Some(&t2));
    let partial = lake_files(&lake);
    assert!(
        !partial.is_empty() && partial.is_subset(&original),
        "{partial:?} vs {original:?}"
    );
    assert_eq!(job["result"]["lake_files"], partial.len(), "{job}");
    let seen = read_lake(&lake);
    assert_eq!(seen["duplicate_ids"], json!([]), "{seen}");
    assert!(seen["duckdb_rows"].as_u64().unwrap() >= 500, "{seen}");

    // The whole log: exactly the files the lake had, each event once.
    let job = replay(&t0, None);
    assert_eq!(lake_files(&lake), original);
    assert_eq!(
        job["result"]["lake_files"],
        original.len() - partial.len(),
        "{job}"
    );
    let seen = read_lake(&lake);
    assert_eq!(seen["duckdb_rows"], total, "{seen}");
    assert_eq!(seen["duplicate_ids"], json!([]), "{seen}");
    let latest = |v: &Value| -> BTreeSet<String> {
        v["latest"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.to_string())
            .collect()
    };
    assert_eq!(latest(&seen), latest(&whole));

    // Again: nothing to write.
    let job = replay(&t0, None);
    assert_eq!(job["result"]["lake_files"], 0, "{job}");
    assert_eq!(lake_files(&lake), original);
    // The lake subscription's own position did not move.
    let after = subscription_status(&server, "bf");
    assert_eq!(after["position"], status["position"], "{after}");
}

#[test]
fn a_quiet_streams_events_land_within_the_default_idle_interval() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let server = Server::start(&dir.path().join("data"), &[]);
    // Default roll settings: nothing but the path.
    create_subscription(
        &server,
        &json!({"name": "quiet", "sink": {"type": "parquet", "path": lake}}),
    );
    let (status, v) = server.post(
        "/v1/mutations",
        json!({"mutations": [{"op": "put", "bucket": "quiet", "key": "only", "size": 1}]})
            .to_string(),
    );
    assert_eq!(status, 200, "{v}");
    let started = std::time::Instant::now();
    // Nothing else arrives: the open segment is written once the stream has been idle for
    // 30 s (the default), well within 2 × that.
    wait_for(
        "the quiet stream's file",
        Duration::from_secs(60),
        || match lake_files(&lake).is_empty() {
            false => Ok(()),
            true => Err("no file yet".to_string()),
        },
    );
    assert!(
        started.elapsed() >= Duration::from_secs(25),
        "closed for idleness, not at once ({:?})",
        started.elapsed()
    );
    let seen = read_lake(&lake);
    assert_eq!(
        (&seen["duckdb_rows"], &seen["pyarrow_rows"]),
        (&json!(1), &json!(1)),
        "{seen}"
    );
}
