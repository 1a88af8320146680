//! Ingest at scale: acknowledged mutations/s and resident memory as the number of distinct
//! keys grows (100,000 to tens of millions), with the default cache, and how long a restart
//! takes to be ready. Each size gets a fresh `tidemark serve` (the binary beside this one, so
//! its memory is its own): first every key is created, then the measured pass writes
//! `--mutations` more puts cycling through all the keys, so every one needs its head (its
//! sequence and previous state) while the keys far outnumber what the cache holds.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;

use super::ingest;

#[derive(Args)]
pub struct ScaleArgs {
    /// Distinct key counts, one server each.
    #[arg(long, value_delimiter = ',', default_value = "100000,5000000,20000000")]
    keys: Vec<usize>,
    /// Puts of the measured pass (cycling through the keys).
    #[arg(long, default_value_t = 2_000_000)]
    mutations: usize,
    /// Mutations per request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Where the data directories go (about 1 KB of log and index per event).
    #[arg(long, default_value = "/tmp/tidemark-scale")]
    dir: PathBuf,
    /// Extra `serve` flags (e.g. `--cache-bytes=134217728`).
    #[arg(long, allow_hyphen_values = true)]
    serve_arg: Vec<String>,
}

/// A `tidemark serve` child on a data directory.
pub(super) struct Serve {
    child: Child,
    pub(super) url: String,
}

/// The server's log: discarded, or appended to the file `TIDEMARK_BENCH_SERVER_LOG` names
/// (to see what a run did, with timestamps).
fn server_log() -> anyhow::Result<Stdio> {
    Ok(match std::env::var_os("TIDEMARK_BENCH_SERVER_LOG") {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?
            .into(),
        None => Stdio::null(),
    })
}

impl Serve {
    pub(super) fn start(data: &Path, port: u16, extra: &[String]) -> anyhow::Result<Serve> {
        let me = std::env::current_exe()?;
        let tidemark = me.with_file_name("tidemark");
        if !tidemark.is_file() {
            bail!(
                "{} is not built: cargo build --release -p tidemark",
                tidemark.display()
            );
        }
        let child = Command::new(&tidemark)
            .args(["serve", "--fsync", "always", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(server_log()?)
            .spawn()
            .with_context(|| format!("start {}", tidemark.display()))?;
        Ok(Serve {
            child,
            url: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Wait (at most 10 s) until the server has used under 5 % of a core for 200 ms: work
    /// the load left behind (a periodic index snapshot after ingest) is not timed as the
    /// next step's.
    pub(super) async fn settle(&self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            let before = self.cpu_ticks()?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            // Clock ticks are 10 ms: at most one tick in 200 ms is under 5 %.
            if self.cpu_ticks()? - before <= 1 {
                break;
            }
        }
        Ok(started.elapsed())
    }

    /// CPU time the server has used (user and system), in clock ticks of 10 ms.
    pub(super) fn cpu_ticks(&self) -> anyhow::Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command's closing parenthesis: utime and stime are 12th and 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let field = |i: usize| {
            rest.split_whitespace()
                .nth(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(field(11) + field(12))
    }

    /// `VmRSS` and `VmHWM`, in MiB.
    fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
                / 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// SIGTERM and wait.
    pub(super) fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        self.child.wait()?;
        Ok(())
    }
}

pub(super) async fn wait_ready(
    client: &crate::driver::ingest::HttpClient,
    url: &str,
) -> anyhow::Result<()> {
    use http_body_util::Full;
    for _ in 0..60_000 {
        let req = hyper::Request::get(format!("{url}/readyz")).body(Full::new(Bytes::new()))?;
        if let Ok(resp) = client.request(req).await
            && resp.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bail!("{url} was not ready within 5 minutes")
}

/// One pass of `requests` POSTs whose bodies start at mutation `from`.
async fn pass(
    client: &crate::driver::ingest::HttpClient,
    url: &str,
    args: &ScaleArgs,
    keys: usize,
    from: usize,
    mutations: usize,
) -> anyhow::Result<f64> {
    let requests = mutations.div_ceil(args.batch);
    // Bodies are made on the fly in chunks so memory stays the server's to show.
    let started = Instant::now();
    let chunk = 200;
    let mut done = 0;
    while done < requests {
        let n = chunk.min(requests - done);
        let bodies: Arc<Vec<Bytes>> = Arc::new(
            (0..n)
                .map(|r| ingest::body(from + (done + r) * args.batch, args.batch, keys))
                .collect(),
        );
        ingest::closed_loop(client, url, bodies, n, args.connections, args.batch).await?;
        done += n;
    }
    Ok((requests * args.batch) as f64 / started.elapsed().as_secs_f64())
}

pub async fn run(args: ScaleArgs) -> anyhow::Result<()> {
    let client = tidemark_server::http::http_client();
    let mut rates = Vec::new();
    for &keys in &args.keys {
        let data = args.dir.join(format!("keys-{keys}"));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data)?;
        let port = free_port()?;
        let serve = Serve::start(&data, port, &args.serve_arg)?;
        wait_ready(&client, &serve.url).await?;
        let endpoint = format!("{}/v1/mutations", serve.url);
        let created = pass(&client, &endpoint, &args, keys, 0, keys).await?;
        let rate = pass(&client, &endpoint, &args, keys, keys, args.mutations).await?;
        let (rss, hwm) = serve.memory();
        println!(
            "{keys} keys: created at {created:.0} mutations/s; then {} puts over all of them at \
             {rate:.0} acknowledged mutations/s; resident {rss} MiB (peak {hwm} MiB)",
            args.mutations
        );
        rates.push((keys, rate, hwm));
        // Restart: the index has to be caught up first (a graceful stop), then time to ready.
        wait_caught_up(&client, &serve.url).await?;
        serve.stop()?;
        let started = Instant::now();
        let serve = Serve::start(&data, port, &args.serve_arg)?;
        wait_ready(&client, &serve.url).await?;
        let ready = started.elapsed();
        let (_, hwm) = serve.memory();
        println!("  restart: ready in {ready:.2?} (peak {hwm} MiB)");
        serve.stop()?;
        let _ = std::fs::remove_dir_all(&data);
    }
    if let (Some(first), Some(last)) = (rates.first(), rates.last()) {
        println!(
            "rate at {} keys / rate at {} keys: {:.2}; peak resident at most {} MiB",
            last.0,
            first.0,
            last.1 / first.1,
            rates.iter().map(|r| r.2).max().unwrap_or(0)
        );
    }
    Ok(())
}

async fn wait_caught_up(
    client: &crate::driver::ingest::HttpClient,
    url: &str,
) -> anyhow::Result<()> {
    use http_body_util::{BodyExt, Full};
    for _ in 0..120_000 {
        let req = hyper::Request::get(format!("{url}/healthz")).body(Full::new(Bytes::new()))?;
        let resp = client.request(req).await?;
        let v: serde_json::Value =
            serde_json::from_slice(&resp.into_body().collect().await?.to_bytes())?;
        if v["index_lag"] == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("the index did not catch up within 20 minutes")
}

pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
