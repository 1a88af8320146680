//! HTTP ingest: acknowledged mutations per second with group commit, and acknowledgement
//! latency at a fixed offered rate (open loop: latency counts from when a request was due, so
//! a stalled server cannot hide its stall).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};

use super::quantile;
use tidemark_server::args::Fsync;
use tidemark_server::serve::ServeArgs;

#[derive(Args)]
pub struct IngestArgs {
    /// Target a running server instead of starting one on a temporary data directory.
    #[arg(long)]
    server: Option<String>,
    /// Total mutations to send.
    #[arg(long, default_value_t = 1_000_000)]
    mutations: usize,
    /// Mutations per request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Concurrent connections (throughput mode).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Offer this many mutations per second instead of as many as possible (latency mode).
    #[arg(long)]
    rate: Option<u64>,
    /// Do not wait for (or report) the index catching up; only acknowledgements count.
    #[arg(long)]
    skip_index: bool,
    /// Distinct keys the mutations cycle through.
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// Log fsync policy of the started server; `both` runs `always`, then `interval` as the
    /// peer that shows what fsync costs.
    #[arg(long, value_enum, default_value_t = FsyncChoice::Both)]
    fsync: FsyncChoice,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FsyncChoice {
    Always,
    Interval,
    Both,
}

/// http:// or https:// (`bench tls`).
pub(super) type HttpClient = tidemark_server::http::HttpClient;

/// A request body of `batch` puts, cycling through `keys` keys from mutation `start` on.
pub(super) fn body(start: usize, batch: usize, keys: usize) -> Bytes {
    let mut s = String::with_capacity(batch * 160);
    s.push_str("{\"mutations\":[");
    for i in 0..batch {
        let n = start + i;
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"op\":\"put\",\"bucket\":\"bench\",\"key\":\"obj/{:06}.bin\",\"size\":{},\"etag\":\"e{n}\",\"content_type\":\"application/octet-stream\",\"metadata\":{{\"team\":\"ml\"}}}}",
            n % keys,
            n % 65536
        ));
    }
    s.push_str("]}");
    Bytes::from(s)
}

async fn post(client: &HttpClient, url: &str, body: Bytes, expect: usize) -> anyhow::Result<()> {
    let req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(body))?;
    let resp = client.request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!(
            "server answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    // Counting acknowledgements without a full JSON parse keeps the load generator light.
    let ok = bytes.windows(9).filter(|w| w == b"\"offset\":").count();
    if ok != expect {
        bail!("{} of {expect} mutations acknowledged", ok);
    }
    Ok(())
}

pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    if args.server.is_some() {
        run_one(&args, None).await?;
        return Ok(());
    }
    let policies = match args.fsync {
        FsyncChoice::Always => vec![Fsync::Always],
        FsyncChoice::Interval => vec![Fsync::Interval],
        FsyncChoice::Both => vec![Fsync::Always, Fsync::Interval],
    };
    let mut rates = Vec::new();
    for policy in policies {
        rates.push(run_one(&args, Some(policy)).await?);
    }
    if let [always, interval] = rates[..] {
        println!(
            "fsync=always reaches {:.0}% of the fsync=interval throughput",
            100.0 * always / interval
        );
    }
    Ok(())
}

/// One measurement against `--server`, or against a server started here with `policy`.
/// Returns acknowledged mutations per second.
async fn run_one(args: &IngestArgs, policy: Option<Fsync>) -> anyhow::Result<f64> {
    let (_dir, server, url) = match (&args.server, policy) {
        (Some(url), _) => (None, None, url.trim_end_matches('/').to_string()),
        (None, policy) => {
            let dir = tempfile::tempdir()?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr: SocketAddr = listener.local_addr()?;
            let mut serve = ServeArgs::new(dir.path().to_path_buf(), addr);
            serve.log.fsync = policy.unwrap_or(Fsync::Always);
            let handle = tokio::spawn(tidemark_server::serve::run_on(serve, listener));
            (Some(dir), Some(handle), format!("http://{addr}"))
        }
    };
    let endpoint = format!("{url}/v1/mutations");
    let client: HttpClient = tidemark_server::http::http_client();
    wait_ready(&client, &url).await?;
    let requests = args.mutations.div_ceil(args.batch);
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..requests.min(1000))
            .map(|r| body(r * args.batch, args.batch, args.keys))
            .collect(),
    );
    println!(
        "HTTP ingest: {} mutations in requests of {} ({} distinct keys), fsync={}",
        requests * args.batch,
        args.batch,
        args.keys,
        match policy {
            Some(Fsync::Always) => "always",
            Some(Fsync::Interval) => "interval",
            None => "(as configured on the server)",
        }
    );
    let start = Instant::now();
    let latencies = match args.rate {
        None => {
            closed_loop(
                &client,
                &endpoint,
                bodies,
                requests,
                args.connections,
                args.batch,
            )
            .await?
        }
        Some(rate) => open_loop(&client, &endpoint, bodies, requests, rate, args.batch).await?,
    };
    let elapsed = start.elapsed().as_secs_f64();
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let acked = requests * args.batch;
    let rate = acked as f64 / elapsed;
    match args.rate {
        None => println!(
            "  {} connections: {rate:.0} acknowledged mutations/s ({acked} in {elapsed:.2}s)",
            args.connections
        ),
        Some(offered) => println!("  offered {offered} mutations/s: achieved {rate:.0}/s"),
    }
    println!(
        "  acknowledgement latency per request: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        quantile(&ms, 0.5),
        quantile(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN)
    );
    // The index is materialized behind the acknowledgements; report how far behind.
    if !args.skip_index {
        let caught_up = Instant::now();
        wait_index(&client, &url).await?;
        println!(
            "  index caught up {:.2}s after the last acknowledgement ({:.0} mutations/s end to end into the index)",
            caught_up.elapsed().as_secs_f64(),
            acked as f64 / start.elapsed().as_secs_f64()
        );
    }
    if let Some(h) = server {
        h.abort();
        let _ = h.await;
    }
    Ok(rate)
}

pub(super) async fn wait_ready(client: &HttpClient, url: &str) -> anyhow::Result<()> {
    for _ in 0..200 {
        let req = hyper::Request::get(format!("{url}/healthz")).body(Full::new(Bytes::new()))?;
        if let Ok(resp) = client.request(req).await
            && resp.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("server at {url} did not become healthy")
}

pub(super) async fn wait_index(client: &HttpClient, url: &str) -> anyhow::Result<()> {
    for _ in 0..60_000 {
        let req = hyper::Request::get(format!("{url}/healthz")).body(Full::new(Bytes::new()))?;
        let resp = client.request(req).await?;
        let v: serde_json::Value =
            serde_json::from_slice(&resp.into_body().collect().await?.to_bytes())?;
        if v["index_lag"] == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("the index did not catch up within 10 minutes")
}

/// `requests` POSTs of `bodies` over `connections` connections, each waiting for its answer;
/// the latency of each request.
pub(super) async fn closed_loop(
    client: &HttpClient,
    url: &str,
    bodies: Arc<Vec<Bytes>>,
    requests: usize,
    connections: usize,
    batch: usize,
) -> anyhow::Result<Vec<Duration>> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (client, url, bodies, next) = (
            client.clone(),
            url.to_string(),
            bodies.clone(),
            next.clone(),
        );
        tasks.spawn(async move {
            let mut lat = Vec::new();
            loop {
                let r = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if r >= requests {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let t = Instant::now();
                post(&client, &url, bodies[r % bodies.len()].clone(), batch).await?;
                lat.push(t.elapsed());
            }
        });
    }
    let mut all = Vec::new();
    while let Some(res) = tasks.join_next().await {
        all.extend(res.context("load task panicked")??);
    }
    Ok(all)
}

async fn open_loop(
    client: &HttpClient,
    url: &str,
    bodies: Arc<Vec<Bytes>>,
    requests: usize,
    rate: u64,
    batch: usize,
) -> anyhow::Result<Vec<Duration>> {
    let interval = Duration::from_secs_f64(batch as f64 / rate as f64);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for r in 0..requests {
        let due = start + interval * r as u32;
        tokio::time::sleep_until(due.into()).await;
        let (client, url, body) = (
            client.clone(),
            url.to_string(),
            bodies[r % bodies.len()].clone(),
        );
        tasks.spawn(async move {
            post(&client, &url, body, batch).await?;
            Ok::<_, anyhow::Error>(due.elapsed())
        });
    }
    let mut all = Vec::with_capacity(requests);
    while let Some(res) = tasks.join_next().await {
        all.push(res.context("load task panicked")??);
    }
    Ok(all)
}
