//! Re-delivery: a replay job re-sending a range of the log through a subscription, against
//! the same subscription's live delivery of the same events to the same local receiver, in
//! the same process and run.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use hyper::Method;
use serde_json::json;

use super::delivery::{
    Received, call, start_receiver, start_server, subscription, wait_events, write_events,
};
use super::median;

#[derive(Args)]
pub struct ReplayArgs {
    /// Events per run (live, then replayed).
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Deliveries in flight per log partition (4 partitions).
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (api, server) = start_server(dir.path()).await?;
    let received = Arc::new(Received::default());
    let hook = format!("http://{}/hook", start_receiver(received.clone()).await?);
    let (mut live, mut replayed) = (Vec::new(), Vec::new());
    let mut written = 0;
    for run in 0..args.runs {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let from = tidemark_core::time::format_us(tidemark_core::time::now_us());
        tokio::time::sleep(Duration::from_millis(5)).await;
        write_events(&api, written, args.events).await?;
        written += args.events;
        while call(&format!("{api}/healthz"), Method::GET, None).await?["index_lag"] != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let n = args.events as u64;
        // Live: a subscription starting at the run's first event.
        let name = format!("bench-replay-{run}");
        let base = received.events.load(Ordering::Relaxed);
        let spec = subscription(&name, &hook, &from, args.in_flight, 1);
        call(&format!("{api}/v1/subscriptions"), Method::POST, Some(spec)).await?;
        let (first, last) = wait_events(&received, base, base + n).await?;
        live.push((n - 1) as f64 / (last - first).as_secs_f64());
        // Replay: the same range through the same subscription, after live is done.
        let base = received.events.load(Ordering::Relaxed);
        let started = Instant::now();
        let job = call(
            &format!("{api}/v1/replays"),
            Method::POST,
            Some(json!({"subscription": name, "from": from})),
        )
        .await?;
        let (first, last) = wait_events(&received, base, base + n).await?;
        replayed.push((n - 1) as f64 / (last - first).as_secs_f64());
        let id = job["id"].as_str().unwrap_or_default();
        let done = loop {
            let j = call(&format!("{api}/v1/replays/{id}"), Method::GET, None).await?;
            if j["state"] != "running" {
                break j;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if done["state"] != "succeeded" || done["result"]["delivered"] != n {
            bail!("the replay did not deliver {n} events: {done}");
        }
        println!(
            "run {run}: live {:.0} events/s, replay {:.0} events/s ({:.2}x); replay job {:.2} s from request to end",
            live[run],
            replayed[run],
            replayed[run] / live[run],
            started.elapsed().as_secs_f64()
        );
        call(
            &format!("{api}/v1/subscriptions/{name}"),
            Method::DELETE,
            None,
        )
        .await?;
    }
    let ratios: Vec<f64> = replayed.iter().zip(&live).map(|(r, l)| r / l).collect();
    println!(
        "median over {} runs of {} events: live {:.0} events/s, replay {:.0} events/s, median ratio {:.2}x",
        args.runs,
        args.events,
        median(live),
        median(replayed),
        median(ratios)
    );
    server.abort();
    Ok(())
}
