//! The Iceberg sink under live load: the inventory's sustained upserts over many live keys
//! and what reading it costs, and how long an acknowledged mutation takes to be visible.
//!
//! - `iceberg-inventory`: `--keys` objects are created, an `iceberg` subscription catches up
//!   (its inventory backfilled from the index), then `--upserts` puts over those keys are
//!   written as fast as the server takes them; upserts/s counts from the first put until both
//!   tables committed all of them (lag 0). Then `benches/py/iceberg_live.py scan` times a
//!   pyiceberg scan of the inventory against the same rows appended by pyiceberg to a fresh
//!   table (one append, no deletes): the read cost of the inventory's layout.
//! - `iceberg-freshness`: an open-loop load of `--rate` mutations/s for `--seconds` against a
//!   subscription with the default commit interval; each acknowledged event is visible from
//!   the first snapshot whose summary covers its offset (`tidemark.offsets.<partition>`), at
//!   that snapshot's timestamp (the catalog's pointer moves right after), so the latency is
//!   snapshot time minus acknowledgement time, per table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};

use super::iceberg::wait_delivered;
use super::ingest::{self, HttpClient};
use super::quantile;
use super::scale::{Serve, free_port, wait_ready};

#[derive(Args)]
pub struct InventoryArgs {
    /// Live objects.
    #[arg(long, default_value_t = 1_000_000)]
    keys: usize,
    /// Puts of the measured pass, cycling through the keys.
    #[arg(long, default_value_t = 1_000_000)]
    upserts: usize,
    /// The sink's `commit_interval_ms`.
    #[arg(long, default_value_t = 10_000)]
    commit_interval_ms: u64,
    /// Scans of each table (the median is reported).
    #[arg(long, default_value_t = 3)]
    scan_runs: usize,
    #[arg(long, default_value = "/tmp/tidemark-iceberg-live")]
    dir: PathBuf,
}

#[derive(Args)]
pub struct FreshnessArgs {
    /// Offered mutations per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// How long the load runs.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// The sink's `commit_interval_ms` (the default is the sink's).
    #[arg(long, default_value_t = 30_000)]
    commit_interval_ms: u64,
    #[arg(long, default_value = "/tmp/tidemark-iceberg-live")]
    dir: PathBuf,
}

const SCRIPT: &str = include_str!("../../../benches/py/iceberg_live.py");

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// A fresh server on `dir/data`, and an `iceberg` subscription `name` starting at `start`.
async fn server_with_sink(
    dir: &Path,
    start: &str,
    interval_ms: u64,
) -> anyhow::Result<(Serve, HttpClient, PathBuf)> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let client = tidemark_server::http::http_client();
    let serve = Serve::start(&dir.join("data"), free_port()?, &[])?;
    wait_ready(&client, &serve.url).await?;
    let warehouse = dir.join("warehouse");
    let spec = serde_json::json!({
        "name": "live",
        "start": start,
        "sink": {"type": "iceberg", "warehouse": warehouse, "commit_interval_ms": interval_ms,
                 "catalog": {"type": "sql", "path": warehouse.join("catalog.db")}},
    });
    post(
        &client,
        &format!("{}/v1/subscriptions", serve.url),
        spec.to_string(),
    )
    .await?;
    Ok((serve, client, warehouse.join("catalog.db")))
}

async fn post(client: &HttpClient, url: &str, body: String) -> anyhow::Result<serde_json::Value> {
    let req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let resp = client.request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{url}: {status}: {}", String::from_utf8_lossy(&bytes));
    }
    Ok(serde_json::from_slice(&bytes)?)
}

fn script(dir: &Path, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let path = dir.join("iceberg_live.py");
    std::fs::write(&path, SCRIPT)?;
    let out = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .context("run python3 (pip install pyiceberg[sql-sqlite,pyarrow])")?;
    if !out.status.success() {
        bail!(
            "iceberg_live.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

async fn puts(
    client: &HttpClient,
    url: &str,
    from: usize,
    count: usize,
    keys: usize,
) -> anyhow::Result<()> {
    let batch = 1000;
    let requests = count.div_ceil(batch);
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..requests)
            .map(|r| ingest::body(from + r * batch, batch, keys))
            .collect(),
    );
    ingest::closed_loop(
        client,
        &format!("{url}/v1/mutations"),
        bodies,
        requests,
        8,
        batch,
    )
    .await?;
    Ok(())
}

pub async fn inventory(args: InventoryArgs) -> anyhow::Result<()> {
    let (serve, client, catalog) =
        server_with_sink(&args.dir, "earliest", args.commit_interval_ms).await?;
    let url = serve.url.clone();
    puts(&client, &url, 0, args.keys, args.keys).await?;
    let created = args.keys.div_ceil(1000) * 1000;
    wait_delivered(&client, &url, "live", created as u64).await?;
    let started = Instant::now();
    puts(&client, &url, created, args.upserts, args.keys).await?;
    let upserts = args.upserts.div_ceil(1000) * 1000;
    let acked = started.elapsed().as_secs_f64();
    wait_delivered(&client, &url, "live", (created + upserts) as u64).await?;
    let secs = started.elapsed().as_secs_f64();
    serve.stop()?;
    println!(
        "{upserts} upserts over {} live keys, commit_interval_ms={}: acknowledged in {acked:.1} s, \
         committed to the journal and the inventory in {secs:.1} s: {:.0} upserts/s sustained",
        args.keys,
        args.commit_interval_ms,
        upserts as f64 / secs
    );
    let catalog = catalog.to_string_lossy().into_owned();
    let peer = args.dir.join("peer").to_string_lossy().into_owned();
    let v = script(
        &args.dir,
        &[
            "scan",
            &catalog,
            "tidemark.live_inventory",
            &peer,
            &args.scan_runs.to_string(),
        ],
    )?;
    let (ours, theirs) = (
        v["ours"].as_f64().context("ours")?,
        v["peer"].as_f64().context("peer")?,
    );
    println!(
        "pyiceberg scan of the inventory ({} rows, {} files): median {ours:.2} s; the same rows \
         appended by pyiceberg ({} files, no deletes): median {theirs:.2} s; ratio {:.2}",
        v["rows"],
        v["files_ours"],
        v["files_peer"],
        ours / theirs
    );
    Ok(())
}

pub async fn freshness(args: FreshnessArgs) -> anyhow::Result<()> {
    let (serve, client, catalog) =
        server_with_sink(&args.dir, "latest", args.commit_interval_ms).await?;
    let url = serve.url.clone();
    let endpoint = format!("{url}/v1/mutations");
    // 100 mutations every 10 ms at 10,000/s: batches small enough to be spread over time.
    let batch = 100usize;
    let every = Duration::from_secs_f64(batch as f64 / args.rate as f64);
    let total = (args.seconds as f64 / every.as_secs_f64()) as usize;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        tick.tick().await;
        let (client, endpoint) = (client.clone(), endpoint.clone());
        let body = ingest::body(n * batch, batch, args.keys);
        tasks.spawn(async move {
            let req = hyper::Request::post(&endpoint)
                .header("content-type", "application/json")
                .body(Full::new(body))?;
            let resp = client.request(req).await?;
            let bytes = resp.into_body().collect().await?.to_bytes();
            let at = now_ms();
            let v: serde_json::Value = serde_json::from_slice(&bytes)?;
            let acks: Vec<(u32, u64, f64)> = v["results"]
                .as_array()
                .context("results")?
                .iter()
                .filter_map(|r| Some((r["partition"].as_u64()? as u32, r["offset"].as_u64()?, at)))
                .collect();
            anyhow::Ok(acks)
        });
    }
    let mut acks = Vec::with_capacity(total * batch);
    while let Some(done) = tasks.join_next().await {
        acks.extend(done??);
    }
    let offered = acks.len();
    wait_delivered(&client, &url, "live", offered as u64).await?;
    serve.stop()?;
    let catalog = catalog.to_string_lossy().into_owned();
    println!(
        "{offered} mutations at {} /s for {} s, commit_interval_ms={}",
        args.rate, args.seconds, args.commit_interval_ms
    );
    for table in ["journal", "inventory"] {
        let v = script(
            &args.dir,
            &["snapshots", &catalog, &format!("tidemark.live_{table}")],
        )?;
        // Snapshots in time order, each with the offsets it covers.
        let mut snaps: Vec<(f64, BTreeMap<u32, u64>)> = v
            .as_array()
            .context("snapshots")?
            .iter()
            .map(|s| {
                let offsets = s["offsets"]
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .filter_map(|(p, n)| Some((p.parse().ok()?, n.as_u64()?)))
                            .collect()
                    })
                    .unwrap_or_default();
                (s["ms"].as_f64().unwrap_or(0.0), offsets)
            })
            .collect();
        snaps.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut latencies: Vec<f64> = Vec::with_capacity(acks.len());
        for (p, offset, at) in &acks {
            let visible = snaps
                .iter()
                .find(|(_, o)| o.get(p).is_some_and(|n| n > offset))
                .map(|s| s.0);
            if let Some(ms) = visible {
                latencies.push((ms - at).max(0.0) / 1000.0);
            }
        }
        latencies.sort_by(f64::total_cmp);
        println!(
            "  {table}: {} of {offered} visible; acknowledgement to visible p50 {:.1} s, p99 {:.1} \
             s, max {:.1} s ({} snapshots)",
            latencies.len(),
            quantile(&latencies, 0.50),
            quantile(&latencies, 0.99),
            latencies.last().copied().unwrap_or_default(),
            snaps.len()
        );
    }
    Ok(())
}
