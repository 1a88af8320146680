//! Live watch: change-to-watcher latency at a fixed ingest rate with many SSE watchers, memory
//! per idle watcher, and how many idle watchers one server holds. The server is a child
//! process (`tidemark serve`), so its resident memory is measured apart from the clients'.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use http_body_util::{BodyExt, Full};

use super::quantile;

#[derive(Args)]
pub struct WatchArgs {
    /// Watchers receiving every change in the latency run.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Mutations per second in the latency run.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Length of the latency run, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Idle watchers whose memory is measured.
    #[arg(long, default_value_t = 1000)]
    idle: usize,
    /// Idle watchers tried at most (each is a socket on both sides: mind `ulimit -n`).
    #[arg(long, default_value_t = 10_000)]
    max_idle: usize,
}

/// A `tidemark serve` child on a fresh data directory (killed when dropped).
struct Child {
    process: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Child {
    async fn start() -> anyhow::Result<Child> {
        let dir = tempfile::tempdir()?;
        // `tidemark` is built beside this binary (cargo build --release -p tidemark).
        let tidemark = std::env::current_exe()?.with_file_name("tidemark");
        let mut process = std::process::Command::new(tidemark)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            // The capacity run holds more connections than the default limit (4,096).
            .args(["--max-connections", "20000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = process.stdout.take().context("stdout")?;
        let url = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            std::io::BufReader::new(stdout).lines().find_map(|line| {
                let line = line.ok()?;
                let rest = line.split("listening on ").nth(1)?;
                Some(rest.split_whitespace().next()?.to_string())
            })
        })
        .await?;
        match url {
            Some(url) => Ok(Child {
                process,
                url,
                _dir: dir,
            }),
            None => {
                let _ = process.kill();
                bail!("the server did not start")
            }
        }
    }

    fn rss_kib(&self) -> u64 {
        let pid = self.process.id();
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

type Body = hyper::body::Incoming;

/// Open a watch stream; returns its body once the headers arrived.
async fn open(url: &str, query: &str) -> anyhow::Result<Body> {
    let client = tidemark_server::http::http_client();
    let req = hyper::Request::get(format!("{url}/v1/watch?{query}")).body(Full::default())?;
    let resp = client.request(req).await?;
    if !resp.status().is_success() {
        bail!("watch answered {}", resp.status());
    }
    Ok(resp.into_body())
}

/// The microsecond stamps in the keys (`t<micros>`) of whole lines of events.
fn stamps(chunk: &[u8]) -> impl Iterator<Item = u64> + '_ {
    let text = std::str::from_utf8(chunk).unwrap_or("");
    text.match_indices("\"key\":\"t").filter_map(move |(i, m)| {
        let rest = &text[i + m.len()..];
        let end = rest.find('"')?;
        rest[..end].parse().ok()
    })
}

async fn latency(url: &str, args: &WatchArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let samples = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let received = Arc::new(AtomicU64::new(0));
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..args.watchers {
        let mut body = open(url, "bucket=bench-live&heartbeat_ms=60000").await?;
        let (samples, received) = (samples.clone(), received.clone());
        readers.spawn(async move {
            let mut mine = Vec::new();
            // An SSE event can be split across chunks: count only whole lines.
            let mut pending = Vec::new();
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let now = start.elapsed().as_micros() as u64;
                pending.extend_from_slice(&data);
                let Some(cut) = pending.iter().rposition(|b| *b == b'\n') else {
                    continue;
                };
                for sent in stamps(&pending[..=cut]) {
                    mine.push(now.saturating_sub(sent) as f64 / 1000.0);
                    received.fetch_add(1, Ordering::Relaxed);
                }
                pending.drain(..=cut);
                if mine.len() >= 4096 {
                    samples.lock().unwrap().append(&mut mine);
                }
            }
            samples.lock().unwrap().append(&mut mine);
        });
    }
    // Batches every 10 ms; every key carries its send time.
    let per_tick = (args.rate / 100).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let client = tidemark_server::http::http_client();
    let mut sent = 0u64;
    let end = Instant::now() + Duration::from_secs(args.seconds);
    while Instant::now() < end {
        tick.tick().await;
        let t = start.elapsed().as_micros();
        let mutations: Vec<_> = (0..per_tick)
            .map(|i| serde_json::json!({"op": "put", "bucket": "bench-live", "key": format!("t{t}"), "size": i}))
            .collect();
        let body = serde_json::json!({ "mutations": mutations }).to_string();
        let req = hyper::Request::post(format!("{url}/v1/mutations"))
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(body)))?;
        let resp = client.request(req).await?;
        if !resp.status().is_success() {
            bail!("ingest answered {}", resp.status());
        }
        sent += per_tick;
    }
    let want = sent * args.watchers as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    readers.abort_all();
    while readers.join_next().await.is_some() {}
    let mut all = std::mem::take(&mut *samples.lock().unwrap());
    all.sort_by(f64::total_cmp);
    println!(
        "latency: {} watchers, {} mutations/s for {} s: {} of {want} deliveries; \
         change-to-watcher p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        args.watchers,
        args.rate,
        args.seconds,
        received.load(Ordering::Relaxed),
        quantile(&all, 0.5),
        quantile(&all, 0.99),
        all.last().copied().unwrap_or(f64::NAN),
    );
    Ok(())
}

/// Open up to `n` idle watchers; returns the bodies (kept open) and the first error, if any.
async fn idle(url: &str, n: usize) -> (Vec<Body>, Option<String>) {
    let mut bodies = Vec::with_capacity(n);
    for _ in 0..n {
        match open(url, "bucket=bench-idle").await {
            Ok(b) => bodies.push(b),
            Err(e) => return (bodies, Some(format!("{e:#}"))),
        }
    }
    (bodies, None)
}

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let server = Child::start().await?;
    latency(&server.url, &args).await?;
    drop(server);

    let server = Child::start().await?;
    // One watcher first, so the shared live reader is running before the baseline.
    let (warm, _) = idle(&server.url, 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = server.rss_kib();
    let (bodies, error) = idle(&server.url, args.idle).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.rss_kib();
    println!(
        "memory: {} idle SSE watchers: server RSS {} -> {} KiB, {:.1} KiB per watcher{}",
        bodies.len(),
        before,
        after,
        after.saturating_sub(before) as f64 / bodies.len().max(1) as f64,
        error
            .map(|e| format!(" (stopped: {e})"))
            .unwrap_or_default()
    );
    drop((bodies, warm));
    drop(server);

    let server = Child::start().await?;
    let started = Instant::now();
    let (bodies, error) = idle(&server.url, args.max_idle).await;
    println!(
        "capacity: {} of {} idle watchers open in {:.1} s, server RSS {} KiB{}",
        bodies.len(),
        args.max_idle,
        started.elapsed().as_secs_f64(),
        server.rss_kib(),
        error
            .map(|e| format!(" (stopped: {e})"))
            .unwrap_or_default()
    );
    Ok(())
}
