//! What TLS costs: the same load against two servers in this process, one with
//! `--tls-cert/--tls-key` on both listeners and one without, alternating run by run so both
//! see the same machine state. HTTP ingest (acknowledged mutations/s, in large and in small
//! batches) and S3 GET of 1 MiB objects (object_store's client). The certificate is an ECDSA
//! P-256 one from a throwaway CA made with the `openssl` command.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;

use super::s3::{Op, Sample, create_bucket_with, describe, drive, summary};
use super::{ingest, median};
use tidemark_server::args::Fsync;
use tidemark_server::serve::ServeArgs;

#[derive(Args)]
pub struct TlsArgs {
    /// Mutations per ingest run.
    #[arg(long, default_value_t = 200_000)]
    mutations: usize,
    /// Concurrent connections of the ingest load.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// 1 MiB objects per S3 GET run.
    #[arg(long, default_value_t = 400)]
    objects: usize,
    /// S3 requests in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Runs per case (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Log fsync policy of both servers (`interval` leaves more of the time to HTTP and TLS).
    #[arg(long, value_enum, default_value_t = Fsync::Always)]
    fsync: Fsync,
}

/// One server of the comparison.
struct Target {
    name: &'static str,
    api: String,
    s3: String,
    client: tidemark_server::http::HttpClient,
}

pub async fn run(args: TlsArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    make_certs(dir.path())?;
    let ca_pem = std::fs::read(dir.path().join("ca.pem"))?;
    let plain = start(dir.path(), "plain", false, args.fsync).await?;
    let tls = start(dir.path(), "tls", true, args.fsync).await?;
    let targets = [plain, tls];
    println!(
        "fsync={}, {} runs per case, ECDSA P-256 certificate, TLS 1.3 (rustls, ring)",
        match args.fsync {
            Fsync::Always => "always",
            Fsync::Interval => "interval",
        },
        args.runs
    );
    for batch in [1000, 10] {
        let mut rates: [Vec<f64>; 2] = Default::default();
        let requests = args.mutations.div_ceil(batch);
        let bodies: Arc<Vec<Bytes>> = Arc::new(
            (0..requests.min(1000))
                .map(|r| ingest::body(r * batch, batch, 100_000))
                .collect(),
        );
        for run in 0..args.runs {
            for (t, target) in targets.iter().enumerate() {
                let url = format!("{}/v1/mutations", target.api);
                let started = Instant::now();
                ingest::closed_loop(
                    &target.client,
                    &url,
                    bodies.clone(),
                    requests,
                    args.connections,
                    batch,
                )
                .await?;
                let rate = (requests * batch) as f64 / started.elapsed().as_secs_f64();
                println!(
                    "run {run}: ingest, batches of {batch}: {} {rate:.0} mutations/s",
                    target.name
                );
                rates[t].push(rate);
            }
        }
        let ratios = rates[1].iter().zip(&rates[0]).map(|(t, p)| t / p).collect();
        println!(
            "ingest, batches of {batch}, {} connections: plain {:.0}/s, tls {:.0}/s (medians); \
             tls/plain {:.3}",
            args.connections,
            median(rates[0].clone()),
            median(rates[1].clone()),
            median(ratios)
        );
    }
    let stores = [
        super::s3::client(&targets[0].s3, None)?,
        super::s3::client(&targets[1].s3, Some(&ca_pem))?,
    ];
    let size = 1 << 20;
    let mut samples: [Vec<Sample>; 2] = Default::default();
    for run in 0..args.runs {
        for (t, store) in stores.iter().enumerate() {
            drive(
                store.clone(),
                Op::Put,
                size,
                run,
                args.objects,
                args.concurrency,
            )
            .await?;
            let s = drive(
                store.clone(),
                Op::Get,
                size,
                run,
                args.objects,
                args.concurrency,
            )
            .await?;
            println!(
                "run {run}: S3 GET 1 MiB: {} {}",
                targets[t].name,
                describe(&s, size)
            );
            samples[t].push(s);
        }
    }
    let ratios = samples[1]
        .iter()
        .zip(&samples[0])
        .map(|(t, p)| t.per_s / p.per_s)
        .collect();
    println!(
        "S3 GET 1 MiB x{}, {} in flight: plain {}; tls {}; tls/plain {:.3}",
        args.objects,
        args.concurrency,
        summary(&samples[0], size),
        summary(&samples[1], size),
        median(ratios)
    );
    Ok(())
}

/// A CA and a server certificate for 127.0.0.1 it signed, in `dir` (ca.pem, server.pem,
/// server.key).
fn make_certs(dir: &Path) -> anyhow::Result<()> {
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         extendedKeyUsage=serverAuth\n",
    )?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: [Vec<&str>; 3] = [
        [
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat()
        .into_iter()
        .chain(["-days", "2", "-subj", "/CN=tidemark-bench-ca"])
        .collect(),
        [
            &["req"][..],
            &ec,
            &["-keyout", "server.key", "-out", "server.csr"],
        ]
        .concat()
        .into_iter()
        .chain(["-subj", "/CN=localhost"])
        .collect(),
        vec![
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    ];
    for step in steps {
        let out = Command::new("openssl")
            .args(&step)
            .current_dir(dir)
            .output()
            .context("run `openssl` (Debian's openssl package) to make the certificates")?;
        if !out.status.success() {
            bail!(
                "openssl {}: {}",
                step.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}

/// A node in this process with the HTTP and S3 APIs, with TLS or without.
async fn start(dir: &Path, name: &'static str, tls: bool, fsync: Fsync) -> anyhow::Result<Target> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // `--s3-listen` takes an address, not a listener: a free port, released for the server.
    let s3_addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?;
    let mut serve = ServeArgs::new(dir.join(name), addr);
    serve.log.fsync = fsync;
    serve.s3_listen = Some(s3_addr);
    serve.s3_access_key = Some(super::s3::ACCESS_KEY.into());
    serve.s3_secret_key = Some(super::s3::SECRET_KEY.into());
    if tls {
        serve.tls_cert = Some(dir.join("server.pem"));
        serve.tls_key = Some(dir.join("server.key"));
    }
    tokio::spawn(tidemark_server::serve::run_on(serve, listener));
    let scheme = if tls { "https" } else { "http" };
    let client = tidemark_server::http::client_trusting(Some(&dir.join("ca.pem")), "ca.pem")?;
    let target = Target {
        name,
        api: format!("{scheme}://{addr}"),
        s3: format!("{scheme}://{s3_addr}"),
        client,
    };
    ingest::wait_ready(&target.client, &target.api).await?;
    for _ in 0..200 {
        if create_bucket_with(&target.client, &target.s3).await.is_ok() {
            return Ok(target);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    create_bucket_with(&target.client, &target.s3).await?;
    Ok(target)
}
