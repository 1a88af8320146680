//! The S3 API: PUT and GET of 4 KiB and 1 MiB objects per second through `serve --s3-listen`
//! on the embedded log with `--fsync always`, against a plain HTTP server that answers as an
//! S3 server doing nothing would (read the body, 200 and an ETag; a canned body with its
//! headers). Both are driven by the same client (object_store's AmazonS3, SigV4-signed
//! payloads) with the same requests in flight, in this process and run, so the plain server's
//! figure is the load generator's ceiling on this machine.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer, AwsCredential};
use object_store::client::{HttpRequest, HttpRequestBody};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStoreExt, PutPayload, RetryConfig};

use super::delivery::call;
use super::{median, quantile};
use tidemark_server::args::Fsync;
use tidemark_server::serve::ServeArgs;

#[derive(Args)]
pub struct S3Args {
    /// Requests in flight, each target.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Objects per 4 KiB case (PUT, then GET of the same keys).
    #[arg(long, default_value_t = 4000)]
    small_objects: usize,
    /// Objects per 1 MiB case.
    #[arg(long, default_value_t = 400)]
    large_objects: usize,
    /// Runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

const BUCKET: &str = "bench";
pub(super) const ACCESS_KEY: &str = "AKBENCH";
pub(super) const SECRET_KEY: &str = "bench-secret";
const REGION: &str = "us-east-1";

/// One measurement: a target answering `n` requests of one kind.
pub(super) struct Sample {
    pub per_s: f64,
    /// Request latencies in ms, sorted.
    latencies: Vec<f64>,
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Op {
    Put,
    Get,
}

pub async fn run(args: S3Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let tidemark = start_tidemark(dir.path()).await?;
    let plain = start_plain_server().await?;
    let targets = [client(&tidemark, None)?, client(&plain, None)?];
    let cases = [
        (Op::Put, 4096, args.small_objects),
        (Op::Get, 4096, args.small_objects),
        (Op::Put, 1 << 20, args.large_objects),
        (Op::Get, 1 << 20, args.large_objects),
    ];
    // samples[case][target][run]
    let mut samples: Vec<[Vec<Sample>; 2]> = cases.iter().map(|_| Default::default()).collect();
    for run in 0..args.runs {
        for (c, &(op, size, n)) in cases.iter().enumerate() {
            // Tidemark first, then the plain server, so both see the same machine state.
            for (t, store) in targets.iter().enumerate() {
                let s = drive(store.clone(), op, size, run, n, args.concurrency).await?;
                samples[c][t].push(s);
            }
            let [tm, ceiling] = &samples[c];
            let (tm, ceiling) = (&tm[run], &ceiling[run]);
            println!(
                "run {run}: {} {}: tidemark {} ({:.0}% of the ceiling); ceiling {}",
                op_name(op),
                size_name(size),
                describe(tm, size),
                100.0 * tm.per_s / ceiling.per_s,
                describe(ceiling, size),
            );
        }
    }
    println!(
        "median over {} runs, {} requests in flight, fsync=always:",
        args.runs, args.concurrency
    );
    for (c, &(op, size, n)) in cases.iter().enumerate() {
        let [tm, ceiling] = &samples[c];
        let ratios = tm.iter().zip(ceiling).map(|(a, b)| a.per_s / b.per_s);
        let (t, p) = (summary(tm, size), summary(ceiling, size));
        println!(
            "{} {} x{n}: tidemark {t}; ceiling {p}; ratio {:.3}",
            op_name(op),
            size_name(size),
            median(ratios.collect())
        );
    }
    Ok(())
}

/// `n` requests of one kind on `store`, `concurrency` in flight; keys `<size>/<run>/<i>`,
/// so a GET case reads what the PUT case of its run wrote.
pub(super) async fn drive(
    store: Arc<AmazonS3>,
    op: Op,
    size: usize,
    run: usize,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Sample> {
    // Not all zeros, in case anything on the way compresses.
    let body = Bytes::from(
        (0..size)
            .map(|i| (i * 131 % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (store, next, body) = (store.clone(), next.clone(), body.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let path = Path::from(format!("{size}/{run}/{i:06}"));
                // Distinct content per object, made before the clock starts: Tidemark stores
                // blobs by SHA-256, and identical bodies would skip its rename and dir fsync.
                let payload = (op == Op::Put).then(|| {
                    let mut unique = body.to_vec();
                    unique[..8].copy_from_slice(&(run as u64).to_le_bytes());
                    unique[8..16].copy_from_slice(&(i as u64).to_le_bytes());
                    PutPayload::from(unique)
                });
                let sent = Instant::now();
                match payload {
                    Some(payload) => {
                        store.put(&path, payload).await?;
                    }
                    None => {
                        let got = store.get(&path).await?.bytes().await?;
                        if got.len() != size {
                            bail!("GET {path}: {} bytes, not {size}", got.len());
                        }
                    }
                }
                latencies.push(sent.elapsed().as_secs_f64() * 1e3);
            }
        });
    }
    let mut latencies = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        latencies.extend(r??);
    }
    let per_s = n as f64 / started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok(Sample { per_s, latencies })
}

/// object_store's S3 client on `endpoint`, path style, without retries (a failed request is
/// an error of the benchmark, not hidden time); `ca_pem` is trusted for https endpoints.
pub(super) fn client(endpoint: &str, ca_pem: Option<&[u8]>) -> anyhow::Result<Arc<AmazonS3>> {
    let mut options = ClientOptions::new().with_timeout(Duration::from_secs(120));
    if let Some(pem) = ca_pem {
        options = options.with_root_certificate(object_store::Certificate::from_pem(pem)?);
    }
    // Client options first: they replace the ones `with_allow_http` sets.
    let store = AmazonS3Builder::new()
        .with_client_options(options)
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_region(REGION)
        .with_bucket_name(BUCKET)
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .with_retry(RetryConfig {
            max_retries: 0,
            ..Default::default()
        })
        .build()?;
    Ok(Arc::new(store))
}

/// A node in this process on the embedded log with fsync=always and the S3 API on; returns
/// the S3 endpoint once the bench bucket exists.
async fn start_tidemark(dir: &std::path::Path) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // `--s3-listen` takes an address, not a listener: a free port, released for the server.
    let s3_addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?;
    let mut serve = ServeArgs::new(dir.to_path_buf(), addr);
    serve.log.fsync = Fsync::Always;
    serve.s3_listen = Some(s3_addr);
    serve.s3_access_key = Some(ACCESS_KEY.into());
    serve.s3_secret_key = Some(SECRET_KEY.into());
    tokio::spawn(tidemark_server::serve::run_on(serve, listener));
    let api = format!("http://{addr}");
    let endpoint = format!("http://{s3_addr}");
    for _ in 0..200 {
        if call(&format!("{api}/healthz"), Method::GET, None)
            .await
            .is_ok()
            && create_bucket(&endpoint).await.is_ok()
        {
            return Ok(endpoint);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    create_bucket(&endpoint).await?;
    Ok(endpoint)
}

/// CreateBucket, signed with object_store's SigV4 signer (its client has no such call).
async fn create_bucket(endpoint: &str) -> anyhow::Result<()> {
    create_bucket_with(&tidemark_server::http::http_client(), endpoint).await
}

pub(super) async fn create_bucket_with(
    client: &tidemark_server::http::HttpClient,
    endpoint: &str,
) -> anyhow::Result<()> {
    let credential = AwsCredential {
        key_id: ACCESS_KEY.into(),
        secret_key: SECRET_KEY.into(),
        token: None,
    };
    let mut req: HttpRequest = Request::put(format!("{endpoint}/{BUCKET}"))
        .body(HttpRequestBody::empty())
        .context("CreateBucket request")?;
    AwsAuthorizer::new(&credential, "s3", REGION).try_authorize(&mut req, None)?;
    let (parts, _) = req.into_parts();
    let req = Request::from_parts(parts, Full::new(Bytes::new()));
    let resp = client.request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("CreateBucket: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(())
}

/// The ceiling: an HTTP/1.1 server on a loopback port that does what an S3 server must at
/// the least — read a PUT's body and answer 200 with an ETag; answer a GET with a canned
/// body of the key's size (`<size>/...`) and the headers a client needs.
async fn start_plain_server() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let canned = Bytes::from(vec![7u8; 1 << 20]);
    let last_modified = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (canned, last_modified) = (canned.clone(), last_modified.clone());
            let service = hyper::service::service_fn(move |req| {
                plain_answer(req, canned.clone(), last_modified.clone())
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    Ok(format!("http://{addr}"))
}

async fn plain_answer(
    req: Request<hyper::body::Incoming>,
    canned: Bytes,
    last_modified: String,
) -> Result<Response<Full<Bytes>>, Infallible> {
    const ETAG: &str = "\"0123456789abcdef0123456789abcdef\"";
    let answer = Response::builder().header("etag", ETAG);
    let resp = match *req.method() {
        Method::PUT => {
            let _ = req.into_body().collect().await;
            answer.body(Full::default())
        }
        Method::GET => {
            // The path is /<bucket>/<size>/<run>/<i>.
            let size = req
                .uri()
                .path()
                .split('/')
                .nth(2)
                .and_then(|s| s.parse::<usize>().ok())
                .unwrap_or(0)
                .min(canned.len());
            answer
                .header("content-length", size)
                .header("last-modified", last_modified)
                .header("content-type", "application/octet-stream")
                .body(Full::new(canned.slice(..size)))
        }
        _ => answer
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .body(Full::default()),
    };
    Ok(resp.expect("static headers are valid"))
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Put => "PUT",
        Op::Get => "GET",
    }
}

fn size_name(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s => format!("{} KiB", s >> 10),
    }
}

fn mib_per_s(per_s: f64, size: usize) -> f64 {
    per_s * size as f64 / (1 << 20) as f64
}

pub(super) fn describe(s: &Sample, size: usize) -> String {
    format!(
        "{:.0} objects/s, {:.1} MiB/s, p50 {:.2} ms, p99 {:.2} ms",
        s.per_s,
        mib_per_s(s.per_s, size),
        quantile(&s.latencies, 0.5),
        quantile(&s.latencies, 0.99)
    )
}

/// Medians over runs: objects/s, MiB/s, and the runs' p50 and p99 latencies.
pub(super) fn summary(runs: &[Sample], size: usize) -> String {
    let per_s = median(runs.iter().map(|s| s.per_s).collect());
    let p50 = median(runs.iter().map(|s| quantile(&s.latencies, 0.5)).collect());
    let p99 = median(runs.iter().map(|s| quantile(&s.latencies, 0.99)).collect());
    format!(
        "{per_s:.0} objects/s, {:.1} MiB/s, p50 {p50:.2} ms, p99 {p99:.2} ms",
        mib_per_s(per_s, size)
    )
}
