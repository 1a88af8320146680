//! The Iceberg sink end to end: rows/s from the log to committed Iceberg tables, against
//! pyiceberg's `Table.append` of the same rows.
//!
//! - Tidemark: a fresh `tidemark serve` (the binary beside this one) takes `--events`
//!   metadata-bearing puts over `--keys` keys; then an `iceberg` subscription starting at
//!   `earliest` is created, and the time until it has committed everything (lag 0) is
//!   measured: once for a sink keeping the journal alone (`"inventory": false`, the peer's
//!   work), then for one keeping both tables (every event into the journal and every changed
//!   object into the inventory), each commit's data files written, manifests and the catalog
//!   commit.
//! - The peer: `benches/py/iceberg_append.py` reads the journal back into an Arrow table
//!   (untimed) and times `Table.append` of it into a new table with the same schema,
//!   partitioning, codec and zstd level (`--zstd-level`, given to both sides as the tables'
//!   `write.parquet.compression-level`), through pyiceberg's own SQL catalog: the journal's
//!   work alone, with the rows already in Arrow.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};

use super::ingest;
use super::scale::{Serve, free_port, wait_ready};

#[derive(Args)]
pub struct IcebergArgs {
    /// Events in the log before the subscription starts.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Distinct keys they cycle through.
    #[arg(long, default_value_t = 50_000)]
    keys: usize,
    /// Mutations per ingest request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// The sink's `commit_interval_ms`.
    #[arg(long, default_value_t = 1000)]
    commit_interval_ms: u64,
    /// Runs of the peer (the median is reported).
    #[arg(long, default_value_t = 3)]
    peer_runs: usize,
    /// The zstd level of both sides' data files (the tables' `write.parquet.compression-level`,
    /// which the peer's table copies); 1 is pyiceberg's default (pyarrow's), 3 the sink's.
    #[arg(long, default_value_t = 1)]
    zstd_level: i32,
    /// Where the data directory and the warehouses go.
    #[arg(long, default_value = "/tmp/tidemark-iceberg-bench")]
    dir: PathBuf,
}

/// Wait until subscription `name` has delivered `events` and has no lag.
pub(super) async fn wait_delivered(
    client: &super::ingest::HttpClient,
    url: &str,
    name: &str,
    events: u64,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let req = hyper::Request::get(format!("{url}/v1/subscriptions/{name}/status"))
            .body(Full::new(Bytes::new()))?;
        let resp = client.request(req).await?;
        let v: serde_json::Value =
            serde_json::from_slice(&resp.into_body().collect().await?.to_bytes())?;
        if v["lag"] == 0 && v["delivered"].as_u64() >= Some(events) {
            return Ok(());
        }
        if !v["last_error"].is_null() {
            bail!("the sink failed: {}", v["last_error"]);
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("not committed within 30 minutes: {v}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn run(args: IcebergArgs) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)?;
    let client = tidemark_server::http::http_client();
    let port = free_port()?;
    let serve = Serve::start(&args.dir.join("data"), port, &[])?;
    let url = serve.url.clone();
    wait_ready(&client, &url).await?;
    let endpoint = format!("{url}/v1/mutations");
    let requests = args.events.div_ceil(args.batch);
    let bodies: std::sync::Arc<Vec<Bytes>> = std::sync::Arc::new(
        (0..requests)
            .map(|r| ingest::body(r * args.batch, args.batch, args.keys))
            .collect(),
    );
    ingest::closed_loop(&client, &endpoint, bodies, requests, 8, args.batch).await?;
    let events = requests * args.batch;
    // The index materializes what ingest acknowledged; that is ingest's work, not the sink's,
    // and the peer starts from rows already in memory.
    let indexing = Instant::now();
    ingest::wait_index(&client, &url).await?;
    println!(
        "the index caught up {:.2} s after the last acknowledgement",
        indexing.elapsed().as_secs_f64()
    );
    let settled = serve.settle().await?;
    println!("the server went quiet {:.2} s later", settled.as_secs_f64());

    let warehouse = args.dir.join("warehouse");
    // One subscription keeping the journal alone (the peer's work), then one keeping both
    // tables, each timed on its own over the same log.
    let journal_only =
        subscribe(&client, &serve, &warehouse, "journal", false, &args, events).await?;
    serve.settle().await?;
    let both = subscribe(&client, &serve, &warehouse, "bench", true, &args, events).await?;
    serve.stop()?;

    let script = args.dir.join("iceberg_append.py");
    std::fs::write(
        &script,
        include_str!("../../../benches/py/iceberg_append.py"),
    )?;
    let out = Command::new("python3")
        .arg(&script)
        .arg(warehouse.join("catalog.db"))
        .arg("tidemark.bench_journal")
        .arg(args.dir.join("peer"))
        .arg(args.peer_runs.to_string())
        .output()
        .context("run python3 (pip install pyiceberg[sql-sqlite,pyarrow])")?;
    if !out.status.success() {
        bail!("the peer failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let peer: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let peer_secs = peer["median"].as_f64().context("peer median")?;
    let peer_rate = peer["rows"].as_f64().unwrap_or(0.0) / peer_secs;
    for ((secs, cpu), tables) in [
        (journal_only, "the journal"),
        (both, "journal and inventory"),
    ] {
        println!(
            "tidemark: {events} events from the log to committed {tables} in {secs:.2} s \
             ({:.0} rows/s; the server used {cpu:.2} s of CPU)",
            events as f64 / secs
        );
    }
    println!(
        "pyiceberg Table.append of the same {} rows (Arrow, zstd): median {peer_secs:.2} s \
         ({peer_rate:.0} rows/s), runs {}, CPU s {}",
        peer["rows"], peer["seconds"], peer["cpu"]
    );
    println!(
        "ratio tidemark / pyiceberg: journal {:.2}, journal and inventory {:.2}",
        events as f64 / journal_only.0 / peer_rate,
        events as f64 / both.0 / peer_rate
    );
    Ok(())
}

/// Create subscription `name` from `earliest` (keeping the inventory or not) and time it
/// until it has committed all `events`: wall seconds and the server's CPU seconds.
async fn subscribe(
    client: &super::ingest::HttpClient,
    serve: &Serve,
    warehouse: &std::path::Path,
    name: &str,
    inventory: bool,
    args: &IcebergArgs,
    events: usize,
) -> anyhow::Result<(f64, f64)> {
    let spec = serde_json::json!({
        "name": name,
        "start": "earliest",
        "sink": {"type": "iceberg", "warehouse": warehouse,
                 "catalog": {"type": "sql", "path": warehouse.join("catalog.db")},
                 "commit_interval_ms": args.commit_interval_ms,
                 "commit_max_rows": 1_000_000,
                 "inventory": inventory,
                 "properties": {"write.parquet.compression-level": args.zstd_level.to_string()}},
    });
    let started = Instant::now();
    let cpu_before = serve.cpu_ticks()?;
    let req = hyper::Request::post(format!("{}/v1/subscriptions", serve.url))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(spec.to_string())))?;
    let resp = client.request(req).await?;
    if !resp.status().is_success() {
        bail!("creating the subscription: {}", resp.status());
    }
    wait_delivered(client, &serve.url, name, events as u64).await?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = (serve.cpu_ticks()? - cpu_before) as f64 / 100.0;
    Ok((secs, cpu))
}
