//! Webhook delivery: events per second from the log to a local keep-alive receiver, unbatched
//! and batched, against a plain load generator posting to the same receiver with the same
//! concurrency; and the latency from an acknowledged mutation to the receiver's 2xx at a
//! fixed rate. Server, receiver and load generator share this process and its two cores, so
//! the comparison is like for like.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use serde_json::{Value, json};

use super::{median, quantile};
use tidemark_server::serve::ServeArgs;

#[derive(Args)]
pub struct DeliveryArgs {
    /// Events delivered per throughput run.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Deliveries in flight per log partition (4 partitions); the load generator uses as
    /// many connections in total.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Events per request in the batched run.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Offered mutations per second in the latency run.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Length of the latency run, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Throughput runs per mode (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

/// What the receiver has seen.
#[derive(Default)]
pub(super) struct Received {
    pub(super) events: AtomicU64,
    requests: AtomicU64,
    /// webhook-id -> arrival, for the latency run.
    arrivals: Mutex<HashMap<String, Instant>>,
    record: std::sync::atomic::AtomicBool,
    /// One delivery as it arrived (headers and body), for the load generator to replay.
    sample: Mutex<Option<(HeaderMap, Bytes)>>,
}

async fn receive(
    axum::extract::State(r): axum::extract::State<Arc<Received>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // A batch's id is `<first event id>_<count>`.
    let n = id
        .rsplit_once('_')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(1);
    r.requests.fetch_add(1, Ordering::Relaxed);
    r.events.fetch_add(n, Ordering::Relaxed);
    if n == 1 && id != "peer" {
        let mut sample = r.sample.lock().unwrap();
        if sample.is_none() {
            *sample = Some((headers.clone(), body));
        }
    }
    if r.record.load(Ordering::Relaxed) {
        r.arrivals
            .lock()
            .unwrap()
            .insert(id.to_string(), Instant::now());
    }
    StatusCode::OK
}

pub(super) async fn start_receiver(state: Arc<Received>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// Signing secret of the benchmark's subscriptions: signing is part of every delivery.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A JSON request on one shared keep-alive client; an error unless the answer is 2xx.
pub(super) async fn call(url: &str, method: Method, body: Option<Value>) -> anyhow::Result<Value> {
    static CLIENT: std::sync::OnceLock<tidemark_server::http::HttpClient> =
        std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(tidemark_server::http::http_client);
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(body))?;
    let resp = client.request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{url}: {status}: {}", String::from_utf8_lossy(&bytes));
    }
    Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Wait until the receiver counted `target` events (more than `base`); returns when the
/// first of them arrived and when the last did.
pub(super) async fn wait_events(
    r: &Received,
    base: u64,
    target: u64,
) -> anyhow::Result<(Instant, Instant)> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first = None;
    loop {
        let n = r.events.load(Ordering::Relaxed);
        if n > base && first.is_none() {
            first = Some(Instant::now());
        }
        if n >= target {
            return Ok((first.unwrap_or_else(Instant::now), Instant::now()));
        }
        if Instant::now() > deadline {
            bail!("only {} of {target} events arrived", n - base);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The peer: `requests` POSTs over `connections` keep-alive connections, as fast as the
/// receiver answers, each a replay of one real delivery (same headers, same signed body), so
/// the receiver and the wire do the same work and the difference is Tidemark's. Returns
/// requests per second.
async fn load_generator(
    hook: &str,
    requests: usize,
    connections: usize,
    sample: (HeaderMap, Bytes),
) -> anyhow::Result<f64> {
    let (mut headers, body) = sample;
    headers.remove("host");
    headers.remove("content-length");
    headers.insert("webhook-id", "peer".parse()?);
    let client = tidemark_server::http::http_client();
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (client, next, hook, body, headers) = (
            client.clone(),
            next.clone(),
            hook.to_string(),
            body.clone(),
            headers.clone(),
        );
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < requests as u64 {
                let mut req = hyper::Request::post(&hook).body(Full::new(body.clone()))?;
                *req.headers_mut() = headers.clone();
                let resp = client.request(req).await?;
                resp.into_body().collect().await?;
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(requests as f64 / started.elapsed().as_secs_f64())
}

pub(super) fn subscription(
    name: &str,
    hook: &str,
    start: &str,
    in_flight: usize,
    batch: usize,
) -> Value {
    json!({
        "name": name,
        "start": start,
        "rules": {"events": ["ObjectCreated:*"]},
        "sink": {"type": "webhook", "url": hook, "format": "s3",
                 "secret": SECRET},
        "delivery": {"max_in_flight": in_flight},
        "batch": {"max_events": batch, "max_wait_ms": if batch > 1 { 5 } else { 0 }},
    })
}

pub(super) async fn write_events(api: &str, from: usize, n: usize) -> anyhow::Result<()> {
    for chunk_start in (from..from + n).step_by(1000) {
        let end = (chunk_start + 1000).min(from + n);
        let muts: Vec<Value> = (chunk_start..end)
            .map(|i| json!({"op": "put", "bucket": "bench", "key": format!("obj/{:06}.jpg", i % 10_000), "size": 1000 + i % 4096,
                            "content_type": "image/jpeg", "metadata": {"team": "ml"}}))
            .collect();
        call(
            &format!("{api}/v1/mutations"),
            Method::POST,
            Some(json!({"mutations": muts})),
        )
        .await?;
    }
    Ok(())
}

/// A server in this process on a fresh data directory in `dir`, sending to loopback; returns
/// its API's URL once it answers.
pub(super) async fn start_server(
    dir: &std::path::Path,
) -> anyhow::Result<(String, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut serve = ServeArgs::new(dir.to_path_buf(), addr);
    serve.allow_destinations = vec!["loopback".into()];
    let server = tokio::spawn(tidemark_server::serve::run_on(serve, listener));
    let api = format!("http://{addr}");
    for _ in 0..200 {
        if call(&format!("{api}/healthz"), Method::GET, None)
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((api, server))
}

pub async fn run(args: DeliveryArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (api, server) = start_server(dir.path()).await?;
    let received = Arc::new(Received::default());
    let hook = format!("http://{}/hook", start_receiver(received.clone()).await?);
    let connections = args.in_flight * 4;

    let (mut peer, mut unbatched, mut batched) = (Vec::new(), Vec::new(), Vec::new());
    let mut from_create = Vec::new();
    let mut written = 0;
    for run in 0..args.runs {
        write_events(&api, written, args.events).await?;
        // The index applies the new events in this process too; let it finish first, so
        // delivery and the load generator are measured on the same otherwise idle machine.
        while call(&format!("{api}/healthz"), Method::GET, None).await?["index_lag"] != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for (mode, batch, rates) in [
            ("unbatched", 1, &mut unbatched),
            ("batched", args.batch, &mut batched),
        ] {
            let name = format!("bench-{mode}-{run}");
            // From the start of the log: run k delivers everything written by runs 0..=k.
            let base = received.events.load(Ordering::Relaxed);
            let start = Instant::now();
            let spec = subscription(&name, &hook, "earliest", args.in_flight, batch);
            call(&format!("{api}/v1/subscriptions"), Method::POST, Some(spec)).await?;
            let n = (written + args.events) as u64;
            let (first, last) = wait_events(&received, base, base + n).await?;
            // Steady state, like the load generator's figure: first to last arrival. The time
            // from the create request is reported too (it adds the subscription's start).
            rates.push((n - 1) as f64 / (last - first).as_secs_f64());
            from_create.push(n as f64 / (last - start).as_secs_f64());
            call(
                &format!("{api}/v1/subscriptions/{name}"),
                Method::DELETE,
                None,
            )
            .await?;
        }
        let before = received.events.load(Ordering::Relaxed);
        let sample = received
            .sample
            .lock()
            .unwrap()
            .clone()
            .context("no delivery arrived")?;
        peer.push(load_generator(&hook, written + args.events, connections, sample).await?);
        received.events.store(before, Ordering::Relaxed);
        written += args.events;
        println!(
            "run {run}: load generator {:.0} req/s; unbatched {:.0} events/s ({:.2}x; {:.0}/s from the create request); batched x{} {:.0} events/s",
            peer[run],
            unbatched[run],
            unbatched[run] / peer[run],
            from_create[2 * run],
            args.batch,
            batched[run]
        );
    }
    let ratios: Vec<f64> = unbatched.iter().zip(&peer).map(|(u, p)| u / p).collect();
    let batch_ratios: Vec<f64> = batched.iter().zip(&peer).map(|(b, p)| b / p).collect();
    let (p, u, b) = (median(peer), median(unbatched), median(batched));
    println!(
        "median over {} runs of {}..{} events: load generator {p:.0} req/s ({connections} connections); \
         unbatched {u:.0} events/s, median ratio {:.2}x the load generator; batched x{} {b:.0} events/s, \
         median ratio {:.1}x",
        args.runs,
        args.events,
        written,
        median(ratios),
        args.batch,
        median(batch_ratios)
    );

    // Latency at a fixed rate: one mutation per request, open loop.
    received.record.store(true, Ordering::Relaxed);
    call(
        &format!("{api}/v1/subscriptions"),
        Method::POST,
        Some(subscription(
            "bench-latency",
            &hook,
            "latest",
            args.in_flight,
            1,
        )),
    )
    .await?;
    // Per event id: when its request was sent and when its acknowledgement arrived.
    let acks: Arc<Mutex<HashMap<String, (Instant, Instant)>>> = Default::default();
    let total = args.rate * args.seconds;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let began = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        tokio::time::sleep_until(began + interval * i as u32).await;
        let (api, acks) = (api.clone(), acks.clone());
        tasks.spawn(async move {
            let m = json!({"mutations": [{"op": "put", "bucket": "bench", "key": format!("lat/{:05}", i % 5000), "size": 2048}]});
            let sent = Instant::now();
            let v = call(&format!("{api}/v1/mutations"), Method::POST, Some(m)).await?;
            let id = v["results"][0]["event_id"].as_str().context("no event id")?.to_string();
            acks.lock().unwrap().insert(id, (sent, Instant::now()));
            Ok::<(), anyhow::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.arrivals.lock().unwrap().len() < total as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let arrivals = received.arrivals.lock().unwrap().clone();
    let acks = acks.lock().unwrap().clone();
    let ms = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64() * 1e3;
    let (mut from_ack, mut from_sent) = (Vec::new(), Vec::new());
    for (id, (sent, acked)) in &acks {
        if let Some(at) = arrivals.get(id) {
            from_ack.push(ms(*acked, *at));
            from_sent.push(ms(*sent, *at));
        }
    }
    from_ack.sort_by(f64::total_cmp);
    from_sent.sort_by(f64::total_cmp);
    println!(
        "at {} events/s over {} s, {} of {total} arrived. Acknowledgement to receiver: p50 {:.2} ms, \
         p99 {:.2} ms, max {:.2} ms (0 when the webhook beats the HTTP answer). Mutation request \
         sent to receiver (ingest + fsync + delivery): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        args.rate,
        args.seconds,
        from_ack.len(),
        quantile(&from_ack, 0.5),
        quantile(&from_ack, 0.99),
        from_ack.last().copied().unwrap_or(f64::NAN),
        quantile(&from_sent, 0.5),
        quantile(&from_sent, 0.99),
        from_sent.last().copied().unwrap_or(f64::NAN),
    );
    server.abort();
    Ok(())
}
