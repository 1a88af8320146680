//! The Iceberg sink against pyiceberg (and polars and DuckDB through pyiceberg's scan),
//! reading through the SQL catalog file and through Tidemark's REST catalog (`/iceberg`): the
//! journal holds every acknowledged event exactly
//! once, across a randomized workload and across SIGKILLs during backfill and live commits;
//! a quiet stream is visible within the default interval; bad settings are refused by name.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const READER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/iceberg_read.py");

/// `catalog`: the SQLite catalog file, or `rest:<uri>` (a REST catalog).
fn read_table(catalog: impl AsRef<std::ffi::OsStr>, table: &str, rows: bool) -> Value {
    read_table_with(catalog, table, rows, &[])
}

/// As [`read_table`], with more of the reader's options (`--s3 URL`).
fn read_table_with(
    catalog: impl AsRef<std::ffi::OsStr>,
    table: &str,
    rows: bool,
    options: &[&str],
) -> Value {
    let mut cmd = Command::new("python3");
    cmd.arg(READER).arg(catalog).arg(table).args(options);
    if rows {
        cmd.arg("--rows");
    }
    let out = cmd.output().expect("run python3");
    assert!(
        out.status.success(),
        "iceberg_read.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn iceberg_spec(name: &str, warehouse: &Path, interval_ms: Option<u64>) -> Value {
    let mut sink = json!({"type": "iceberg", "warehouse": warehouse});
    if let Some(ms) = interval_ms {
        sink["commit_interval_ms"] = json!(ms);
    }
    json!({"name": name, "start": "earliest", "sink": sink})
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// An inventory's objects of `bucket` as `index_objects` gives them: key -> (sequence, size,
/// etag).
fn inventory_objects(table: &Value, bucket: &str) -> Objects {
    table["row_list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["bucket"] == bucket)
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                (
                    r["sequence_number"].as_str().unwrap().parse().unwrap(),
                    r["size"].as_i64().unwrap(),
                    r["e_tag"].clone(),
                ),
            )
        })
        .collect()
}

type Objects = std::collections::BTreeMap<String, (i64, i64, Value)>;

/// Every bucket's objects at instant `at`, by bucket (each page of a listing at an instant
/// rebuilds the state, so pages are as large as the API allows).
fn objects_at(server: &Server, at: &str) -> std::collections::BTreeMap<String, Objects> {
    let mut out: std::collections::BTreeMap<String, Objects> = Default::default();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/v1/objects?limit=10000&at={}", urlencode(at));
        if let Some(a) = &after {
            path.push_str(&format!("&after={}", urlencode(a)));
        }
        let (status, v) = server.get(&path);
        assert_eq!(status, 200, "{v}");
        for o in v["objects"].as_array().unwrap() {
            out.entry(o["bucket"].as_str().unwrap().to_string())
                .or_default()
                .insert(
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

/// Whether `table` (an inventory read with rows) holds exactly the index's objects of each
/// of `buckets`; else how far it is.
fn inventory_is_index(server: &Server, table: &Value, buckets: &[&str]) -> Result<(), String> {
    for bucket in buckets {
        let (got, want) = (
            inventory_objects(table, bucket),
            index_objects(server, bucket, None),
        );
        if got != want {
            return Err(format!("{bucket}: {} of {} objects", got.len(), want.len()));
        }
    }
    Ok(())
}

/// Post `n` random mutations of `bucket` over `keys` keys; the acknowledged event ids.
fn post_random(
    server: &Server,
    rng: &mut fastrand::Rng,
    bucket: &str,
    n: usize,
    keys: usize,
) -> Vec<String> {
    let mutations: Vec<Value> = (0..n).map(|_| random_mutation(rng, bucket, keys)).collect();
    let (status, v) = server.post(
        "/v1/mutations",
        json!({ "mutations": mutations }).to_string(),
    );
    assert_eq!(status, 200, "{v}");
    acked_ids(&v)
}

fn wait_committed(server: &Server, name: &str, timeout: Duration) -> Value {
    wait_status(server, name, "the journal caught up", timeout, |s| {
        s["lag"] == 0 && s["state"] == "running"
    })
}

#[test]
fn pyiceberg_polars_and_duckdb_read_every_acknowledged_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut rng = fastrand::Rng::with_seed(19);
    let buckets = ["photos", "videos", "docs"];
    let mut acked: HashSet<String> = HashSet::new();
    let (mut round, mut created) = (0, false);
    let mut instants: Vec<i64> = Vec::new();
    // 100,000 acknowledged mutations over 3 × 2,000 keys; the subscription starts (from
    // `earliest`) on the way, so it backfills history and then follows live writes.
    while acked.len() < 100_000 {
        let bucket = buckets[round % 3];
        let mutations: Vec<Value> = (0..5000)
            .map(|_| random_mutation(&mut rng, bucket, 2000))
            .collect();
        let (status, v) = server.post(
            "/v1/mutations",
            json!({ "mutations": mutations }).to_string(),
        );
        assert_eq!(status, 200);
        acked.extend(acked_ids(&v));
        round += 1;
        if !created && acked.len() >= 60_000 {
            create_subscription(&server, &iceberg_spec("chg", &warehouse, Some(1000)));
            created = true;
        } else if created && instants.len() < 5 {
            // An instant to travel back to: every write before it is committed.
            wait_committed(&server, "chg", Duration::from_secs(300));
            std::thread::sleep(Duration::from_millis(20));
            instants.push(now_us());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let status = wait_committed(&server, "chg", Duration::from_secs(300));
    assert_eq!(status["delivered"], acked.len(), "{status}");

    let seen = read_table(
        dir.path().join("data/iceberg/catalog.db"),
        "tidemark.chg_journal",
        true,
    );
    assert_eq!(seen["format_version"], 2);
    assert_eq!(seen["rows"], acked.len(), "{}", seen["snapshots"]);
    assert_eq!(seen["distinct_event_ids"], acked.len());
    assert_eq!(seen["polars_rows"], acked.len());
    assert_eq!(seen["duckdb_rows"], acked.len());
    assert_eq!(seen["duckdb_distinct"], acked.len());
    let ids: HashSet<String> = seen["row_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids, acked,
        "the journal's event ids are the acknowledged ones"
    );
    // The same table through Tidemark's own REST catalog.
    let rest = read_table(
        format!("rest:{}/iceberg", server.url),
        "tidemark.chg_journal",
        false,
    );
    assert_eq!(rest["rows"], acked.len());
    let ids = |v: &Value| -> std::collections::BTreeSet<u64> {
        v["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(ids(&rest), ids(&seen));
    // S3 Metadata's columns lead, Tidemark's follow.
    let columns: Vec<&str> = seen["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(
        &columns[..5],
        &[
            "bucket",
            "key",
            "sequence_number",
            "record_type",
            "record_timestamp"
        ]
    );
    assert_eq!(
        seen["partition_fields"],
        json!(["record_timestamp_day", "bucket"])
    );
    // Every snapshot records the offsets it covers, and every snapshot can be read.
    let snapshots = seen["snapshots"].as_array().unwrap();
    assert!(!snapshots.is_empty());
    for s in snapshots {
        assert!(s["summary"]["tidemark.commit-id"].is_string(), "{s}");
    }
    assert_eq!(
        seen["snapshot_rows"].as_array().unwrap().len(),
        snapshots.len()
    );
    // The inventory is the index: every live object once, with its current state.
    let catalog = dir.path().join("data/iceberg/catalog.db");
    let inventory = read_table(&catalog, "tidemark.chg_inventory", true);
    assert_eq!(
        inventory["partition_fields"],
        json!(["bucket", "key_bucket"])
    );
    for bucket in buckets {
        assert_eq!(
            inventory_objects(&inventory, bucket),
            index_objects(&server, bucket, None),
            "inventory of {bucket} vs the index"
        );
    }
    // Time travel: the inventory as of each instant is the state at that instant.
    assert_eq!(instants.len(), 5);
    for at in &instants {
        let then = Command::new("python3")
            .arg(READER)
            .arg(&catalog)
            .arg("tidemark.chg_inventory")
            .args(["--as-of", &(at / 1000).to_string()])
            .output()
            .expect("run python3");
        assert!(
            then.status.success(),
            "{}",
            String::from_utf8_lossy(&then.stderr)
        );
        let then: Value = serde_json::from_slice(&then.stdout).unwrap();
        let at = tidemark_core::time::format_us(*at);
        let state = objects_at(&server, &at);
        for bucket in buckets {
            assert_eq!(
                inventory_objects(&then, bucket),
                state.get(bucket).cloned().unwrap_or_default(),
                "inventory of {bucket} as of {at} vs the state then"
            );
        }
    }
    // Rows carry their log position and per-key order: for each key, sequences ascend with
    // offsets.
    let mut last: std::collections::HashMap<(String, String), (u64, String)> = Default::default();
    let mut rows: Vec<&Value> = seen["row_list"].as_array().unwrap().iter().collect();
    rows.sort_by_key(|r| r["log_offset"].as_u64().unwrap());
    for r in rows {
        let k = (
            r["bucket"].as_str().unwrap().to_string(),
            r["key"].as_str().unwrap().to_string(),
        );
        let seq = r["sequence_number"].as_str().unwrap().to_string();
        let off = r["log_offset"].as_u64().unwrap();
        if let Some((o, s)) = last.get(&k) {
            assert!(*o < off && *s < seq, "{k:?}: {s}@{o} then {seq}@{off}");
        }
        last.insert(k, (off, seq));
    }
}

#[test]
fn sigkill_during_backfill_and_live_commits_leaves_no_duplicate_and_no_gap() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let warehouse = dir.path().join("warehouse");
    let mut rng = fastrand::Rng::with_seed(23);
    let server = Server::start(&data, &[]);
    for _ in 0..4 {
        post_random(&server, &mut rng, "crash", 2000, 5000);
    }
    let mut spec = iceberg_spec("crash", &warehouse, Some(1000));
    // Small commits: many of them to interrupt.
    spec["sink"]["commit_max_rows"] = json!(1500);
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
                let mut rng = fastrand::Rng::with_seed(200 + seed);
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
        std::thread::sleep(Duration::from_millis(rng.u64(300..1500)));
        s.kill();
        if let Some(w) = writer {
            let _ = w.join();
        }
    }
    let server = Server::start(&data, &[]);
    wait_committed(&server, "crash", Duration::from_secs(300));
    let in_log: HashSet<String> = log_events(&Backend::Embedded, &data)
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_string())
        .collect();
    let seen = read_table(
        dir.path().join("data/iceberg/catalog.db"),
        "tidemark.crash_journal",
        true,
    );
    let ids: Vec<String> = seen["row_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_string())
        .collect();
    let distinct: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), distinct.len(), "no duplicate event id");
    assert_eq!(distinct, in_log, "every event of the log, and nothing else");
    let inventory = read_table(
        dir.path().join("data/iceberg/catalog.db"),
        "tidemark.crash_inventory",
        true,
    );
    assert_eq!(
        inventory_objects(&inventory, "crash"),
        index_objects(&server, "crash", None),
        "the inventory is the index"
    );
    assert_eq!(
        inventory["snapshot_rows"].as_array().unwrap().len(),
        inventory["snapshots"].as_array().unwrap().len(),
        "every inventory snapshot can be read"
    );
    assert_eq!(
        seen["snapshot_rows"].as_array().unwrap().len(),
        seen["snapshots"].as_array().unwrap().len(),
        "every snapshot can be read"
    );
}

#[test]
fn a_quiet_stream_is_visible_within_the_default_interval() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let server = Server::start(&dir.path().join("data"), &[]);
    create_subscription(&server, &iceberg_spec("quiet", &warehouse, None));
    let (status, v) = server.post(
        "/v1/mutations",
        json!({"mutations": [{"op": "put", "bucket": "quiet", "key": "one", "size": 1}]})
            .to_string(),
    );
    assert_eq!(status, 200, "{v}");
    let id = acked_ids(&v).remove(0);
    let started = Instant::now();
    // Default interval 30 s: visible well within 2 × 30 s. The catalog file exists once the
    // table does.
    let catalog = dir.path().join("data/iceberg/catalog.db");
    loop {
        if catalog.exists() {
            let seen = read_table(&catalog, "tidemark.quiet_journal", true);
            if seen["rows"] == 1 {
                assert_eq!(seen["row_list"][0]["event_id"], id);
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not visible after 60 s"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
fn bad_iceberg_settings_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let warehouse = dir.path().join("warehouse");
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, b"not a directory").unwrap();
    let cases = [
        (
            json!({"type": "iceberg", "warehouse": warehouse, "catalog": {"type": "hive"}}),
            "sink",
            "hive",
        ),
        (
            json!({"type": "iceberg", "warehouse": "relative/wh"}),
            "sink.warehouse",
            "absolute",
        ),
        (
            json!({"type": "iceberg", "warehouse": warehouse, "inventory": "off"}),
            "sink",
            "boolean",
        ),
        (
            json!({"type": "iceberg", "warehouse": blocked.join("wh")}),
            "sink.warehouse",
            "cannot create",
        ),
        (
            json!({"type": "iceberg", "warehouse": warehouse,
                   "catalog": {"type": "sql", "path": "rel/catalog.db"}}),
            "sink.catalog.path",
            "absolute",
        ),
        (
            json!({"type": "iceberg", "warehouse": "s3://bucket/wh",
                   "catalog": {"type": "sql", "path": warehouse.join("c.db")},
                   "s3": {"endpoint": "http://169.254.169.254"}}),
            "sink.s3.endpoint",
            "link-local",
        ),
        (
            json!({"type": "iceberg", "warehouse": warehouse,
                   "catalog": {"type": "rest", "uri": "ftp://catalog/iceberg"}}),
            "sink.catalog.uri",
            "http://",
        ),
        (
            json!({"type": "iceberg", "warehouse": warehouse,
                   "catalog": {"type": "rest", "uri": "http://127.0.0.1:9/iceberg"}}),
            "sink.catalog.uri",
            "loopback",
        ),
        (
            json!({"type": "iceberg", "warehouse": warehouse,
                   "catalog": {"type": "rest", "uri": "https://catalog.example/iceberg",
                               "token": "t", "credential": "id:secret"}}),
            "sink.catalog.credential",
            "not both",
        ),
        (
            json!({"type": "iceberg", "warehouse": warehouse,
                   "catalog": {"type": "rest", "uri": "https://catalog.example/iceberg",
                               "token": "env:TIDEMARK_NO_SUCH_VARIABLE"}}),
            "sink.secret",
            "TIDEMARK_NO_SUCH_VARIABLE",
        ),
        (
            json!({"type": "iceberg", "warehouse": "gs://bucket/wh"}),
            "sink.warehouse",
            "s3://bucket/prefix",
        ),
        (
            json!({"type": "iceberg", "warehouse": warehouse, "s3": {"region": "eu-west-1"}}),
            "sink.s3",
            "only for s3://",
        ),
        (
            json!({"type": "iceberg", "warehouse": warehouse, "partition": ["day", "week"]}),
            "sink.partition",
            "'week'",
        ),
        (
            json!({"type": "iceberg", "warehouse": warehouse, "partition": ["day", "hour"]}),
            "sink.partition",
            "at most one",
        ),
        (
            json!({"type": "iceberg", "warehouse": warehouse, "namespace": "a.b"}),
            "sink.namespace",
            "a.b",
        ),
        (
            json!({"type": "iceberg", "warehouse": warehouse, "commit_max_rows": 2_000_000}),
            "sink.commit_max_rows",
            "2000000",
        ),
        (
            json!({"type": "iceberg", "warehouse": warehouse, "commit_interval_ms": 5}),
            "sink.commit_interval_ms",
            "5",
        ),
        (
            json!({"type": "iceberg", "warehouse": warehouse,
                   "properties": {"write.parquet.compression-level": "fast"}}),
            "sink.properties.write.parquet.compression-level",
            "not a zstd level",
        ),
        (
            json!({"type": "iceberg", "warehouse": warehouse,
                   "properties": {"write.parquet.page-size-bytes": "100"}}),
            "sink.properties.write.parquet.page-size-bytes",
            "'100' is not a page size in bytes (1024 to 67108864)",
        ),
        (
            json!({"type": "iceberg", "warehouse": warehouse,
                   "properties": {"write.parquet.compression-codec": "snappy"}}),
            "sink.properties.write.parquet.compression-codec",
            "only 'zstd'",
        ),
        (
            json!({"type": "iceberg", "warehouse": warehouse,
                   "properties": {"format-version": "1"}}),
            "sink.properties.format-version",
            "reserved",
        ),
        (
            json!({"type": "iceberg", "warehouse": warehouse,
                   "properties": {"tidemark.managed": "false"}}),
            "sink.properties.tidemark.managed",
            "only 'true'",
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
    // Nothing was created, and a good one still is.
    let (status, v) = server.get("/v1/subscriptions/bad");
    assert_eq!(status, 404, "{v}");
    create_subscription(&server, &iceberg_spec("good", &warehouse, None));
}

#[test]
fn tables_on_an_s3_warehouse_are_read_back_by_pyiceberg_through_both_catalogs() {
    let dir = tempfile::tempdir().unwrap();
    let moto = common::moto::Moto::start();
    moto.script("s3_lake.py", "mkbucket", &["lake"]);
    let catalog = dir.path().join("catalog.db");
    let server = Server::start(
        &dir.path().join("data"),
        &["--allow-destinations", "loopback"],
    );
    let spec = json!({"name": "s3chg", "start": "earliest", "sink": {
        "type": "iceberg",
        "warehouse": "s3://lake/warehouse",
        "s3": {"endpoint": moto.endpoint, "access_key_id": "test", "secret_access_key": "test"},
        "catalog": {"type": "sql", "path": catalog},
        "commit_interval_ms": 1000,
    }});
    create_subscription(&server, &spec);
    // The secret went to the secret store: the subscription shows a reference.
    let (_, shown) = server.get("/v1/subscriptions/s3chg");
    let key = shown["sink"]["s3"]["secret_access_key"].as_str().unwrap();
    assert!(key.starts_with("secret:"), "{shown}");
    let mut rng = fastrand::Rng::with_seed(23);
    let buckets = ["photos", "videos", "docs"];
    let mut acked: HashSet<String> = HashSet::new();
    for round in 0..6 {
        acked.extend(post_random(&server, &mut rng, buckets[round % 3], 500, 200));
    }
    let status = wait_committed(&server, "s3chg", Duration::from_secs(120));
    assert_eq!(status["delivered"], acked.len(), "{status}");
    let s3 = ["--s3", moto.endpoint.as_str()];
    let journal = read_table_with(&catalog, "tidemark.s3chg_journal", true, &s3);
    assert_eq!(journal["rows"], acked.len(), "{}", journal["snapshots"]);
    assert_eq!(journal["distinct_event_ids"], acked.len());
    assert_eq!(journal["duckdb_rows"], acked.len());
    for f in journal["live_files"].as_array().unwrap() {
        assert!(
            f.as_str()
                .unwrap()
                .starts_with("s3://lake/warehouse/tidemark.db/s3chg_journal/data/"),
            "{f}"
        );
    }
    let inventory = read_table_with(&catalog, "tidemark.s3chg_inventory", true, &s3);
    for bucket in buckets {
        assert_eq!(
            inventory_objects(&inventory, bucket),
            index_objects(&server, bucket, None),
            "inventory of {bucket} vs the index"
        );
    }
    // Tidemark's REST catalog serves the same tables; the reader brings its own S3 settings.
    let rest = read_table_with(
        format!("rest:{}/iceberg", server.url),
        "tidemark.s3chg_journal",
        false,
        &s3,
    );
    assert_eq!(rest["rows"], acked.len());
    // Nothing of the warehouse is on the local disk: only the catalog file.
    let (_, v) = server.get("/iceberg/v1/namespaces/tidemark/tables/s3chg_inventory");
    let location = v["metadata-location"].as_str().unwrap();
    assert!(location.starts_with("s3://lake/warehouse/"), "{v}");
}

#[test]
fn a_subscription_starting_at_latest_backfills_the_inventory_from_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut rng = fastrand::Rng::with_seed(29);
    let buckets = ["photos", "videos", "docs"];
    let mut write = |rounds: usize| -> HashSet<String> {
        let mut acked = HashSet::new();
        for round in 0..rounds {
            let bucket = buckets[round % 3];
            acked.extend(post_random(&server, &mut rng, bucket, 2000, 1500));
        }
        acked
    };
    write(9);
    // Started at `latest`, with rules: the inventory starts with every live object the rules
    // keep, the journal with nothing before the start.
    let mut spec = iceberg_spec("late", &warehouse, Some(1000));
    spec["start"] = json!("latest");
    spec["rules"] = json!({"buckets": ["photos", "docs"], "prefix": ["dir1/", "dir2/"]});
    create_subscription(&server, &spec);
    let catalog = dir.path().join("data/iceberg/catalog.db");
    let kept = |bucket: &str| -> Objects {
        index_objects(&server, bucket, None)
            .into_iter()
            .filter(|(k, _)| k.starts_with("dir1/") || k.starts_with("dir2/"))
            .collect()
    };
    // Nothing is written meanwhile, so only the backfill (one commit per log partition) can
    // fill it.
    let want: Vec<Objects> = ["photos", "docs"].iter().map(|b| kept(b)).collect();
    assert!(
        want.iter().all(|w| w.len() > 300),
        "too few objects to show anything"
    );
    let first = wait_for("the inventory backfilled", Duration::from_secs(60), || {
        let found = Command::new("python3")
            .arg(READER)
            .arg(&catalog)
            .arg("tidemark.late_inventory")
            .arg("--rows")
            .output()
            .unwrap();
        if !found.status.success() {
            return Err("no table yet".to_string());
        }
        let t: Value = serde_json::from_slice(&found.stdout).unwrap();
        let got = [
            inventory_objects(&t, "photos"),
            inventory_objects(&t, "docs"),
        ];
        match got.iter().zip(&want).all(|(g, w)| g == w) {
            true => Ok(t),
            false => Err(format!(
                "{} of {} objects",
                got[0].len() + got[1].len(),
                want[0].len() + want[1].len()
            )),
        }
    });
    assert!(inventory_objects(&first, "videos").is_empty());
    // Live changes after the start keep it current.
    let after = write(6);
    wait_committed(&server, "late", Duration::from_secs(120));
    let inventory = read_table(&catalog, "tidemark.late_inventory", true);
    for bucket in ["photos", "docs"] {
        assert_eq!(
            inventory_objects(&inventory, bucket),
            kept(bucket),
            "inventory of {bucket} after live changes"
        );
    }
    let journal = read_table(&catalog, "tidemark.late_journal", true);
    let ids: HashSet<String> = journal["row_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        ids.is_subset(&after),
        "the journal holds only events after the start"
    );
    assert!(!ids.is_empty());
    // Every inventory snapshot names the offsets it reflects.
    for s in inventory["snapshots"].as_array().unwrap() {
        let summary = s["summary"].as_object().unwrap();
        assert!(
            summary.keys().any(|k| k.starts_with("tidemark.offsets.")),
            "{s}"
        );
    }
}

#[test]
fn a_journal_from_before_user_agent_gains_the_column_and_reads_old_rows_as_null() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let catalog = dir.path().join("data/iceberg/catalog.db");
    let server = Server::start(&dir.path().join("data"), &[]);
    let post = |n: usize, agent: &str| -> HashSet<String> {
        let mutations: Vec<Value> = (0..n)
            .map(|i| json!({"op": "put", "bucket": "evo", "key": format!("k{i}"), "size": i}))
            .collect();
        let resp = reqwest::blocking::Client::new()
            .post(format!("{}/v1/mutations", server.url))
            .header("content-type", "application/json")
            .header("user-agent", agent)
            .body(json!({ "mutations": mutations }).to_string())
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        acked_ids(&resp.json().unwrap()).into_iter().collect()
    };
    // A current journal, then a copy of it as an older Tidemark left it: no `user_agent`
    // column, its rows written before the column existed.
    create_subscription(&server, &iceberg_spec("src", &warehouse, Some(1000)));
    let before = post(300, "old-client/1");
    wait_committed(&server, "src", Duration::from_secs(60));
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/iceberg_evolve.py"
        ))
        .arg(&catalog)
        .args(["tidemark.src_journal", "tidemark.old_journal"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(made["rows"], before.len());
    assert_eq!(
        made["last_column_id"], 42,
        "the version-1 columns have ids 1..=42"
    );
    // A subscription writing into that table adds the column (a schema update) and fills it.
    let mut spec = iceberg_spec("old", &warehouse, Some(1000));
    spec["start"] = json!("latest");
    create_subscription(&server, &spec);
    let after = post(200, "new-client/2");
    wait_committed(&server, "old", Duration::from_secs(60));
    let table = read_table(&catalog, "tidemark.old_journal", true);
    assert_eq!(
        table["field_ids"]["user_agent"], 43,
        "{}",
        table["field_ids"]
    );
    assert_eq!(table["rows"], before.len() + after.len());
    for r in table["row_list"].as_array().unwrap() {
        let id = r["event_id"].as_str().unwrap();
        let want = match (before.contains(id), after.contains(id)) {
            (true, false) => Value::Null,
            (false, true) => json!("new-client/2"),
            _ => panic!("{id} is in neither write"),
        };
        assert_eq!(r["user_agent"], want, "{r}");
    }
    // The table written from the start carries every event's User-Agent.
    let src = read_table(&catalog, "tidemark.src_journal", true);
    assert!(
        src["row_list"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["user_agent"] == "old-client/1" || r["user_agent"] == "new-client/2"),
    );
}

#[test]
fn a_journal_only_sink_keeps_no_inventory_until_it_is_turned_on() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut rng = fastrand::Rng::with_seed(41);
    let mut write = |rounds: usize, acked: &mut HashSet<String>| {
        for round in 0..rounds {
            let bucket = ["photos", "docs"][round % 2];
            acked.extend(post_random(&server, &mut rng, bucket, 1000, 800));
        }
    };
    let mut acked = HashSet::new();
    write(4, &mut acked);
    let mut spec = iceberg_spec("lean", &warehouse, Some(1000));
    spec["sink"]["inventory"] = json!(false);
    let created = create_subscription(&server, &spec);
    assert_eq!(created["sink"]["inventory"], false, "{created}");
    wait_committed(&server, "lean", Duration::from_secs(60));
    let catalog = dir.path().join("data/iceberg/catalog.db");
    let event_ids = |table: &Value| -> Vec<String> {
        table["row_list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["event_id"].as_str().unwrap().to_string())
            .collect()
    };
    let journal = read_table(&catalog, "tidemark.lean_journal", true);
    assert_eq!(
        event_ids(&journal).into_iter().collect::<HashSet<_>>(),
        acked
    );
    let tables = |server: &Server| -> Vec<String> {
        let (status, v) = server.get("/iceberg/v1/namespaces/tidemark/tables");
        assert_eq!(status, 200, "{v}");
        let mut names: Vec<String> = v["identifiers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        tables(&server),
        ["lean_journal"],
        "no inventory table is created"
    );

    // Turned on: the inventory starts from the index's live objects and follows what comes
    // next; the journal goes on without a repeat.
    spec["sink"]["inventory"] = json!(true);
    let (status, v) = server.put("/v1/subscriptions/lean", &spec);
    assert_eq!(status, 200, "{v}");
    write(4, &mut acked);
    wait_for("the inventory caught up", Duration::from_secs(120), || {
        let s = wait_committed(&server, "lean", Duration::from_secs(60));
        let found = Command::new("python3")
            .arg(READER)
            .arg(&catalog)
            .arg("tidemark.lean_inventory")
            .arg("--rows")
            .output()
            .unwrap();
        if !found.status.success() {
            return Err(format!("no inventory yet ({s})"));
        }
        let t: Value = serde_json::from_slice(&found.stdout).unwrap();
        inventory_is_index(&server, &t, &["photos", "docs"])
    });
    assert_eq!(tables(&server), ["lean_inventory", "lean_journal"]);
    let journal = event_ids(&read_table(&catalog, "tidemark.lean_journal", true));
    assert_eq!(journal.len(), acked.len(), "no event twice in the journal");
    assert_eq!(journal.into_iter().collect::<HashSet<_>>(), acked);

    // Off, then on again: the inventory stopped behind the subscription's position and reads
    // the log again from where it stopped; the journal still takes each event once.
    spec["sink"]["inventory"] = json!(false);
    assert_eq!(server.put("/v1/subscriptions/lean", &spec).0, 200);
    write(2, &mut acked);
    wait_committed(&server, "lean", Duration::from_secs(60));
    let journal = event_ids(&read_table(&catalog, "tidemark.lean_journal", true));
    assert_eq!(journal.len(), acked.len());
    spec["sink"]["inventory"] = json!(true);
    assert_eq!(server.put("/v1/subscriptions/lean", &spec).0, 200);
    write(1, &mut acked);
    wait_for(
        "the inventory caught up again",
        Duration::from_secs(120),
        || {
            wait_committed(&server, "lean", Duration::from_secs(60));
            let t = read_table(&catalog, "tidemark.lean_inventory", true);
            inventory_is_index(&server, &t, &["photos", "docs"])
        },
    );
    let journal = event_ids(&read_table(&catalog, "tidemark.lean_journal", true));
    assert_eq!(journal.len(), acked.len(), "no event twice in the journal");
    assert_eq!(journal.into_iter().collect::<HashSet<_>>(), acked);
}

#[test]
fn the_journal_partitioning_and_table_properties_are_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut spec = iceberg_spec("hourly", &warehouse, Some(1000));
    spec["sink"]["partition"] = json!(["bucket", "hour"]);
    // Properties of the created tables, the writer's zstd level among them.
    spec["sink"]["properties"] =
        json!({"write.parquet.compression-level": "9", "owner": "data-eng"});
    create_subscription(&server, &spec);
    let mut acked: HashSet<String> = HashSet::new();
    for (bucket, hour) in [("one", 1), ("one", 2), ("two", 1)] {
        let mutations: Vec<Value> = (0..50)
            .map(|i| {
                json!({"op": "put", "bucket": bucket, "key": format!("k{i}"), "size": i,
                       "event_time": format!("2026-12-01T0{hour}:{:02}:00Z", i % 60)})
            })
            .collect();
        let (status, v) = server.post(
            "/v1/mutations",
            json!({ "mutations": mutations }).to_string(),
        );
        assert_eq!(status, 200, "{v}");
        acked.extend(acked_ids(&v));
    }
    wait_committed(&server, "hourly", Duration::from_secs(60));
    let table = read_table(
        dir.path().join("data/iceberg/catalog.db"),
        "tidemark.hourly_journal",
        false,
    );
    assert_eq!(
        table["partition_fields"],
        json!(["bucket", "record_timestamp_hour"])
    );
    assert_eq!(table["rows"], acked.len());
    let props = &table["properties"];
    assert_eq!(props["write.parquet.compression-level"], "9", "{props}");
    assert_eq!(props["write.parquet.compression-codec"], "zstd", "{props}");
    // Not given: the sink's own page size, written down for every engine that writes here.
    assert_eq!(props["write.parquet.page-size-bytes"], "32768", "{props}");
    assert_eq!(props["owner"], "data-eng", "{props}");
    let dirs: std::collections::BTreeSet<String> = table["live_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let f = f.as_str().unwrap();
            let data = f.split("/data/").nth(1).unwrap();
            data.rsplit_once('/').unwrap().0.to_string()
        })
        .collect();
    assert_eq!(
        dirs,
        [
            "bucket=one/record_timestamp_hour=2026-12-01-01",
            "bucket=one/record_timestamp_hour=2026-12-01-02",
            "bucket=two/record_timestamp_hour=2026-12-01-01",
        ]
        .map(String::from)
        .into()
    );
}

#[test]
fn the_rest_catalog_answers_in_the_spec_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let server = Server::start(&dir.path().join("data"), &[]);
    // No Iceberg subscription yet: no namespace.
    let (status, v) = server.get("/iceberg/v1/namespaces");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"namespaces": []}));
    create_subscription(&server, &iceberg_spec("rest", &warehouse, Some(1000)));
    // Its tables go to the server's own catalog, the one served here.
    let (_, v) = server.get("/v1/subscriptions/rest");
    assert_eq!(
        v["sink"]["catalog"],
        json!({"type": "sql", "name": "tidemark",
               "path": dir.path().join("data/iceberg/catalog.db")}),
        "{v}"
    );
    let (status, v) = server.post(
        "/v1/mutations",
        json!({"mutations": [{"op": "put", "bucket": "rest", "key": "k", "size": 1}]}).to_string(),
    );
    assert_eq!(status, 200, "{v}");
    wait_committed(&server, "rest", Duration::from_secs(60));
    let (status, v) = server.get("/iceberg/v1/config");
    assert_eq!(status, 200);
    assert!(
        v["defaults"].is_object() && v["overrides"].is_object(),
        "{v}"
    );
    let (_, v) = server.get("/iceberg/v1/namespaces");
    assert_eq!(v, json!({"namespaces": [["tidemark"]]}));
    let (_, v) = server.get("/iceberg/v1/namespaces/tidemark/tables");
    assert_eq!(
        v,
        json!({"identifiers": [
            {"namespace": ["tidemark"], "name": "rest_inventory"},
            {"namespace": ["tidemark"], "name": "rest_journal"},
        ]})
    );
    let (status, v) = server.get("/iceberg/v1/namespaces/tidemark/tables/rest_journal");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["metadata"]["format-version"], 2);
    assert!(
        Path::new(v["metadata-location"].as_str().unwrap()).exists(),
        "{v}"
    );
    for (path, kind) in [
        ("/iceberg/v1/namespaces/nope", "NoSuchNamespaceException"),
        (
            "/iceberg/v1/namespaces/nope/tables",
            "NoSuchNamespaceException",
        ),
        (
            "/iceberg/v1/namespaces/tidemark/tables/nope",
            "NoSuchTableException",
        ),
    ] {
        let (status, v) = server.get(path);
        assert_eq!(status, 404, "{path}: {v}");
        assert_eq!(v["error"]["type"], kind, "{path}: {v}");
        assert_eq!(v["error"]["code"], 404);
    }
    // What the catalog does not do is refused in the spec's shape.
    let (status, v) = server.delete("/iceberg/v1/namespaces/tidemark/tables/rest_journal");
    assert_eq!(status, 406, "{v}");
    assert_eq!(v["error"]["type"], "UnsupportedOperationException");
}

#[test]
fn old_snapshots_expire_manifests_merge_and_the_files_only_they_used_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let server = Server::start(&dir.path().join("data"), &[]);
    // A day of commits at the default interval, in miniature: a commit a second, snapshots
    // kept for 3 s.
    let mut spec = iceberg_spec("aging", &warehouse, Some(1000));
    spec["sink"]["snapshot_retention_ms"] = json!(3000);
    create_subscription(&server, &spec);
    let mut rng = fastrand::Rng::with_seed(29);
    let mut acked: HashSet<String> = HashSet::new();
    for _ in 0..12 {
        let mutations: Vec<Value> = (0..300)
            .map(|_| random_mutation(&mut rng, "aging", 200))
            .collect();
        let (status, v) = server.post(
            "/v1/mutations",
            json!({ "mutations": mutations }).to_string(),
        );
        assert_eq!(status, 200);
        acked.extend(acked_ids(&v));
        wait_committed(&server, "aging", Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(300));
    }
    // One more commit after the retention, so maintenance runs once more.
    std::thread::sleep(Duration::from_millis(3500));
    let (status, v) = server.post(
        "/v1/mutations",
        json!({"mutations": [{"op": "put", "bucket": "aging", "key": "last", "size": 1}]})
            .to_string(),
    );
    assert_eq!(status, 200);
    acked.extend(acked_ids(&v));
    wait_committed(&server, "aging", Duration::from_secs(60));
    let catalog = dir.path().join("data/iceberg/catalog.db");
    let journal = read_table(&catalog, "tidemark.aging_journal", false);
    assert_eq!(journal["rows"], acked.len(), "expiry never loses rows");
    let snapshots = journal["snapshots"].as_array().unwrap().len();
    assert!(snapshots <= 6, "{snapshots} journal snapshots after expiry");
    assert_eq!(journal["distinct_event_ids"], acked.len());
    // One manifest per append, merged once there are more than 8.
    let manifests = journal["manifests"].as_u64().unwrap();
    assert!(manifests <= 9, "{manifests} journal manifests");
    // One small data file per append into the one partition, compacted once there are more
    // than 8.
    let files: Vec<&str> = journal["live_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        files.len() <= 9,
        "{} live journal files: {files:?}",
        files.len()
    );
    assert!(files.iter().any(|f| f.contains("/compacted-")), "{files:?}");
    let inventory = read_table(&catalog, "tidemark.aging_inventory", true);
    assert_eq!(
        inventory_objects(&inventory, "aging"),
        index_objects(&server, "aging", None)
    );
    assert!(inventory["snapshots"].as_array().unwrap().len() <= 6);
    // The inventory's replaced files are gone from disk: what is there is what the table uses.
    let table_dir = warehouse.join("tidemark.db/aging_inventory/data");
    let mut on_disk: Vec<String> = Vec::new();
    let mut dirs = vec![table_dir];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                on_disk.push(e.path().to_string_lossy().into_owned());
            }
        }
    }
    on_disk.sort();
    let live: Vec<String> = inventory["live_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    // Files the retained snapshots still reference may remain; nothing else does.
    assert!(
        on_disk.len() <= live.len() * 6,
        "{} files on disk for {} live ones",
        on_disk.len(),
        live.len()
    );
    for f in &live {
        assert!(on_disk.contains(f), "live file {f} is on disk");
    }
}

#[test]
fn orphan_files_a_crash_left_are_removed_and_fresh_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let warehouse = dir.path().join("warehouse");
    let server = Server::start(&data, &[]);
    create_subscription(&server, &iceberg_spec("orphans", &warehouse, Some(1000)));
    let put = |server: &Server, key: &str| {
        let (status, v) = server.post(
            "/v1/mutations",
            json!({"mutations": [{"op": "put", "bucket": "orphans", "key": key, "size": 1}]})
                .to_string(),
        );
        assert_eq!(status, 200, "{v}");
    };
    put(&server, "a");
    wait_committed(&server, "orphans", Duration::from_secs(60));
    server.stop();
    // What a crash between writing files and committing them leaves: a data file and a
    // manifest no snapshot references, two hours old; and one just written (a commit that
    // may still be in flight), which must stay.
    let table = warehouse.join("tidemark.db/orphans_journal");
    let old_data =
        table.join("data/record_timestamp_day=2026-01-01/bucket=orphans/p0-0-0-x.parquet");
    let old_manifest = table.join("metadata/00000000-0000-7000-8000-000000000000-m0.avro");
    let fresh = table.join("data/record_timestamp_day=2026-01-01/bucket=orphans/p0-1-1-y.parquet");
    std::fs::create_dir_all(old_data.parent().unwrap()).unwrap();
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    // Not a kind of file Tidemark writes: never removed, however old.
    let foreign = table.join("data/notes.txt");
    for (path, aged) in [
        (&old_data, true),
        (&old_manifest, true),
        (&fresh, false),
        (&foreign, true),
    ] {
        let f = std::fs::File::create(path).unwrap();
        if aged {
            f.set_modified(two_hours_ago).unwrap();
        }
    }
    let server = Server::start(&data, &[]);
    put(&server, "b");
    wait_committed(&server, "orphans", Duration::from_secs(60));
    let started = Instant::now();
    while old_data.exists() || old_manifest.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "orphans still there after 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(fresh.exists(), "a file younger than the orphan age stays");
    assert!(foreign.exists(), "a file Tidemark does not write stays");
    let journal = read_table(
        dir.path().join("data/iceberg/catalog.db"),
        "tidemark.orphans_journal",
        false,
    );
    assert_eq!(journal["rows"], 2, "{journal}");
}

const ADMIN: &str = "admin-secret-for-iceberg-tests-0123456789";

/// A server whose bootstrap admin token is [`ADMIN`].
fn start_closed(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("admin.token");
    std::fs::write(&file, format!("{ADMIN}\n")).unwrap();
    let mut args = vec!["--admin-token-file", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    Server::start_with_env(&Backend::Embedded, &dir.join("data"), &args, env)
}

/// `method path` as `token` (none: no header) with `body`; status and JSON answer.
fn call_as(
    server: &Server,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &str,
    content_type: &str,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client()
        .request(method, format!("{}{path}", server.url))
        .header("content-type", content_type)
        .body(body.to_string());
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

fn json_as(
    server: &Server,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    call_as(
        server,
        token,
        method,
        path,
        &body.to_string(),
        "application/json",
    )
}

#[test]
fn pyiceberg_writes_through_the_rest_catalog_with_client_credentials_and_scopes_hold() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_closed(dir.path(), &[], &[]);
    let (status, v) = json_as(
        &server,
        Some(ADMIN),
        "POST",
        "/v1/tokens",
        json!({"scopes": ["read"]}),
    );
    assert_eq!(status, 201, "{v}");
    let reader = v["secret"].as_str().unwrap().to_string();

    // pyiceberg's REST client exchanges the credential for a token, creates a namespace and
    // a table, appends twice, and loses a race with a stale table.
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/iceberg_rest_write.py"
        ))
        .arg(format!("{}/iceberg", server.url))
        .arg(format!("credential:pyiceberg:{ADMIN}"))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wrote: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(wrote["ids"], json!([1, 2, 3, 4, 5, 99]), "{wrote}");
    assert_eq!(wrote["snapshots"], 3, "{wrote}");
    assert_eq!(wrote["linear"], true, "{wrote}");
    // (A commit on a stale snapshot is refused: the 409 case below.)
    assert_eq!(wrote["race"], "appended on top", "{wrote}");
    assert_eq!(wrote["namespaces"], json!([["analytics"]]));
    assert_eq!(wrote["tables"], json!([["analytics", "events"]]));
    let location = wrote["location"].as_str().unwrap();
    let served = dir.path().join("data").join("iceberg");
    assert!(
        location.ends_with(&format!(
            "{}/warehouse/analytics.db/events",
            served.display()
        )),
        "{wrote}"
    );
    // The server's catalog is a SQL catalog file pyiceberg reads on its own.
    let read = read_table(served.join("catalog.db"), "analytics.events", false);
    assert_eq!(read["rows"], 6, "{read}");
    assert_eq!(read["snapshots"].as_array().unwrap().len(), 3);

    // Reads need `read`, writes `admin`; the token endpoint refuses a wrong secret.
    let (status, v) = json_as(
        &server,
        Some(&reader),
        "GET",
        "/iceberg/v1/namespaces",
        Value::Null,
    );
    assert_eq!((status, v), (200, json!({"namespaces": [["analytics"]]})));
    let (status, v) = json_as(&server, None, "GET", "/iceberg/v1/namespaces", Value::Null);
    assert_eq!(status, 401, "{v}");
    let (status, v) = json_as(
        &server,
        Some(&reader),
        "POST",
        "/iceberg/v1/namespaces",
        json!({"namespace": ["sneaky"]}),
    );
    assert_eq!(status, 403, "{v}");
    let (status, v) = call_as(
        &server,
        None,
        "POST",
        "/iceberg/v1/oauth/tokens",
        "grant_type=client_credentials&client_id=x&client_secret=wrong",
        "application/x-www-form-urlencoded",
    );
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["error"], "invalid_client", "{v}");
    let (status, v) = call_as(
        &server,
        None,
        "POST",
        "/iceberg/v1/oauth/tokens",
        "grant_type=password&username=a&password=b",
        "application/x-www-form-urlencoded",
    );
    assert_eq!(
        (status, v["error"].clone()),
        (400, json!("unsupported_grant_type"))
    );

    // Bad requests name the problem in the spec's error shape, and change nothing.
    let tables = "/iceberg/v1/namespaces/analytics/tables";
    let cases = [
        (
            "POST",
            "/iceberg/v1/namespaces",
            json!({"namespace": ["analytics"]}),
            409,
            "AlreadyExistsException",
            "already exists",
        ),
        (
            "POST",
            "/iceberg/v1/namespaces",
            json!({"namespace": ["a", "b"]}),
            400,
            "BadRequestException",
            "one level",
        ),
        (
            "POST",
            tables,
            json!({"name": "nameless"}),
            400,
            "BadRequestException",
            "schema",
        ),
        (
            "POST",
            tables,
            json!({"name": "x", "location": "s3://bucket/x",
            "schema": {"type": "struct", "schema-id": 0, "fields": []}}),
            400,
            "BadRequestException",
            "s3://bucket/x",
        ),
        (
            "POST",
            tables,
            json!({"name": "x", "location": "/tmp/../etc/x",
            "schema": {"type": "struct", "schema-id": 0, "fields": []}}),
            400,
            "BadRequestException",
            "/tmp/../etc/x",
        ),
        (
            "POST",
            tables,
            json!({"name": "events",
            "schema": {"type": "struct", "schema-id": 0, "fields": []}}),
            409,
            "AlreadyExistsException",
            "already exists",
        ),
        (
            "POST",
            "/iceberg/v1/namespaces/nope/tables",
            json!({"name": "x",
            "schema": {"type": "struct", "schema-id": 0, "fields": []}}),
            404,
            "NoSuchNamespaceException",
            "nope",
        ),
        (
            "POST",
            "/iceberg/v1/namespaces/analytics/tables/missing",
            json!({"requirements": [], "updates": []}),
            404,
            "NoSuchTableException",
            "missing",
        ),
        (
            "POST",
            "/iceberg/v1/namespaces/analytics/tables/events",
            json!({"requirements": [{"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": 1}], "updates": []}),
            409,
            "CommitFailedException",
            "snapshot",
        ),
        (
            "POST",
            "/iceberg/v1/namespaces/analytics/tables/events",
            json!({"updates": [{"action": "fly"}]}),
            400,
            "BadRequestException",
            "updates",
        ),
    ];
    for (method, path, body, want, kind, needle) in cases {
        let (status, v) = json_as(&server, Some(ADMIN), method, path, body.clone());
        assert_eq!(status, want, "{method} {path} {body}: {v}");
        assert_eq!(v["error"]["type"], kind, "{method} {path} {body}: {v}");
        assert_eq!(v["error"]["code"], want);
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{method} {path} {body}: want '{needle}' in {v}"
        );
    }
    let read = read_table(served.join("catalog.db"), "analytics.events", false);
    assert_eq!(read["rows"], 6, "{read}");
    assert_eq!(read["snapshots"].as_array().unwrap().len(), 3);
}

#[test]
fn a_sink_commits_through_another_nodes_rest_catalog_exactly_once_across_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let catalog_node = start_closed(&dir.path().join("a"), &[], &[]);
    let uri = format!("{}/iceberg", catalog_node.url);
    let credential = format!("tidemark:{ADMIN}");
    let env = [("TIDEMARK_TEST_ICEBERG_CREDENTIAL", credential.as_str())];
    let b_data = dir.path().join("b");
    let start_b = || {
        Server::start_with_env(
            &Backend::Embedded,
            &b_data,
            &["--allow-destinations", "loopback"],
            &env,
        )
    };
    let mut sink_node = start_b();
    let warehouse = dir.path().join("warehouse");
    // A catalog nobody answers at: its status says so, and the other sink is not held up.
    let mut down = iceberg_spec("down", &warehouse, Some(1000));
    down["sink"]["catalog"] =
        json!({"type": "rest", "uri": format!("http://127.0.0.1:{}/iceberg", free_port())});
    create_subscription(&sink_node, &down);
    // A table the catalog places outside the sink's warehouse: the sink refuses to write
    // (or clean up) there, and says so in status.
    let elsewhere = dir.path().join("elsewhere");
    for (path, body) in [
        ("/iceberg/v1/namespaces", json!({"namespace": ["tidemark"]})),
        (
            "/iceberg/v1/namespaces/tidemark/tables",
            json!({"name": "evil_journal", "location": elsewhere,
                   "schema": {"type": "struct", "schema-id": 0,
                              "fields": [{"id": 1, "name": "x", "required": false, "type": "long"}]}}),
        ),
    ] {
        let (status, v) = json_as(&catalog_node, Some(ADMIN), "POST", path, body);
        assert_eq!(status, 200, "{path}: {v}");
    }
    let mut evil = iceberg_spec("evil", &warehouse, Some(1000));
    evil["sink"]["catalog"] = json!({"type": "rest", "uri": uri,
                                     "credential": "env:TIDEMARK_TEST_ICEBERG_CREDENTIAL"});
    create_subscription(&sink_node, &evil);
    let mut far = iceberg_spec("far", &warehouse, Some(1000));
    far["sink"]["catalog"] = json!({"type": "rest", "uri": uri,
                                    "credential": "env:TIDEMARK_TEST_ICEBERG_CREDENTIAL"});
    far["sink"]["snapshot_retention_ms"] = json!(1000);
    create_subscription(&sink_node, &far);

    let mut rng = fastrand::Rng::with_seed(7);
    let buckets = ["red", "green", "blue"];
    let mut acked: HashSet<String> = HashSet::new();
    for round in 0..6 {
        let mutations: Vec<Value> = (0..1000)
            .map(|_| random_mutation(&mut rng, buckets[round % 3], 300))
            .collect();
        let (status, v) = sink_node.post(
            "/v1/mutations",
            json!({ "mutations": mutations }).to_string(),
        );
        assert_eq!(status, 200, "{v}");
        acked.extend(acked_ids(&v));
        if round == 2 {
            // Killed between commits: on start the worker reads what the table covers from
            // the REST catalog and neither repeats nor skips.
            wait_committed(&sink_node, "far", Duration::from_secs(120));
            sink_node.kill();
            sink_node = start_b();
        } else if round == 4 {
            // Killed with commits in flight.
            std::thread::sleep(Duration::from_millis(1200));
            sink_node.kill();
            sink_node = start_b();
        }
    }
    let status = wait_committed(&sink_node, "far", Duration::from_secs(180));
    assert!(status["last_error"].is_null(), "{status}");
    let s = wait_status(
        &sink_node,
        "down",
        "the unreachable catalog in status",
        Duration::from_secs(60),
        |s| {
            s["last_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("cannot be reached"))
        },
    );
    assert_eq!(s["delivered"], 0, "{s}");
    let s = wait_status(
        &sink_node,
        "evil",
        "the misplaced table in status",
        Duration::from_secs(60),
        |s| {
            s["last_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("outside the sink's warehouse"))
        },
    );
    assert_eq!(s["delivered"], 0, "{s}");
    assert!(
        !elsewhere.join("data").exists(),
        "nothing written outside the warehouse"
    );

    let journal = read_table_with(
        format!("rest:{uri}"),
        "tidemark.far_journal",
        true,
        &["--token", ADMIN],
    );
    assert_eq!(journal["rows"], acked.len(), "{}", journal["snapshots"]);
    assert_eq!(journal["distinct_event_ids"], acked.len());
    let ids: HashSet<String> = journal["row_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, acked);
    // The inventory (our own overwrite commits, sent as REST updates) is the index.
    let inventory = read_table_with(
        format!("rest:{uri}"),
        "tidemark.far_inventory",
        true,
        &["--token", ADMIN],
    );
    for bucket in buckets {
        assert_eq!(
            inventory_objects(&inventory, bucket),
            index_objects(&sink_node, bucket, None),
            "inventory of {bucket} vs the index"
        );
    }
    let log = sink_node.stderr_text();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| (l.contains("WARN") || l.contains("ERROR")) && l.contains("far_"))
        .collect();
    assert!(warned.is_empty(), "{warned:#?}");
    // Maintenance commits through the REST catalog too (snapshots older than a second).
    assert!(log.contains("tidemark.far_journal: expired"), "{log}");
    // The tables are registered in the catalog node's own catalog, and their files are in
    // the sink's warehouse.
    let registered = read_table(
        dir.path()
            .join("a")
            .join("data")
            .join("iceberg")
            .join("catalog.db"),
        "tidemark.far_journal",
        false,
    );
    assert_eq!(registered["rows"], acked.len());
    assert!(
        registered["live_files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f.as_str().unwrap().contains(warehouse.to_str().unwrap())),
        "{}",
        registered["live_files"]
    );
}
