//! Queue sinks: events/s Tidemark delivers to Redis Streams, NATS JetStream, SQS (moto's
//! server), Kafka (Tansu), RabbitMQ and a Lambda stand-in (`tests/py/lambda_receiver.py`,
//! which checks every request's signature with botocore), each against the destination's Python client from PyPI sending
//! the same messages (copied from what Tidemark delivered) to the same server in the same run
//! (`tests/py/queue_peer.py`). Servers are started by the benchmark on loopback.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use hyper::Method;
use serde_json::{Value, json};

use super::delivery::{call, start_server, write_events};
use super::median;
use tidemark_core::log::kafka::test_broker::TestBroker;

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/py/queue_peer.py");
const READ: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/py/queue_read.py");
const LAMBDA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/py/lambda_receiver.py"
);

#[derive(Args)]
pub struct QueueArgs {
    /// Destinations to measure: redis-stream, nats, sqs, kafka, amqp.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "redis-stream,nats,sqs,kafka,amqp"
    )]
    sinks: Vec<String>,
    /// Events delivered per run (SQS: a tenth, moto slows as a queue grows).
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Events per batch (SQS: 10, its limit).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Runs per destination (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// A server process, killed on drop, with the processes whose command line holds the
/// pattern (RabbitMQ's script starts the Erlang VM as a child of its own).
struct Process(Child, Option<String>);

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(pattern) = &self.1 {
            let _ = Command::new("pkill")
                .args(["-9", "-f", "--", pattern])
                .status();
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn listening(port: u16) -> anyhow::Result<()> {
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nothing listens on port {port}")
}

fn python(script: &str, args: &[&str]) -> anyhow::Result<Value> {
    let out = Command::new("python3").arg(script).args(args).output()?;
    if !out.status.success() {
        bail!(
            "{script} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    let last = text.lines().last().unwrap_or("null");
    Ok(serde_json::from_str(last).unwrap_or(Value::Null))
}

/// A running destination: how to name run `run`'s target, its sink, and its peer.
struct Destination {
    kind: String,
    _process: Option<Process>,
    _broker: Option<TestBroker>,
    port: u16,
    brokers: String,
    /// Where the Lambda stand-in records invocations.
    record: std::path::PathBuf,
}

impl Destination {
    async fn start(kind: &str, dir: &std::path::Path) -> anyhow::Result<Destination> {
        let port = free_port()?;
        let p = port.to_string();
        let (process, broker, brokers) = match kind {
            "redis-stream" => {
                let c = Command::new("redis-server")
                    .args(["--port", &p, "--bind", "127.0.0.1", "--save", ""])
                    .stdout(Stdio::null())
                    .spawn()
                    .context("redis-server (apt install redis-server)")?;
                (Some(Process(c, None)), None, String::new())
            }
            "nats" => {
                let c = Command::new("nats-server")
                    .args(["-js", "-a", "127.0.0.1", "-p", &p, "-sd"])
                    .arg(dir.join("nats"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("nats-server (apt install nats-server)")?;
                (Some(Process(c, None)), None, String::new())
            }
            "sqs" => {
                let c = Command::new("python3")
                    .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &p])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("moto's server (pip install 'moto[server]')")?;
                (Some(Process(c, None)), None, String::new())
            }
            "amqp" => {
                std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
                let c = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server")
                    .env("RABBITMQ_NODENAME", format!("bench{port}@localhost"))
                    .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
                    .env("RABBITMQ_NODE_PORT", &p)
                    .env("RABBITMQ_DIST_PORT", free_port()?.to_string())
                    .env("RABBITMQ_MNESIA_BASE", dir.join("rabbit"))
                    .env("RABBITMQ_LOG_BASE", dir.join("rabbit-log"))
                    .env("ERL_CRASH_DUMP", dir.join("erl_crash.dump"))
                    .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
                    .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
                    .env("HOME", dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("rabbitmq-server (apt install rabbitmq-server)")?;
                let vm = format!("-home {} ", dir.display());
                (Some(Process(c, Some(vm))), None, String::new())
            }
            "lambda" => {
                let c = Command::new("python3")
                    .arg(LAMBDA)
                    .args(["--port", &p, "--out"])
                    .arg(dir.join("lambda.jsonl"))
                    .args([
                        "--access-key",
                        "AKIDTIDEMARKTEST",
                        "--secret",
                        "tidemark/secret+key",
                    ])
                    .stdout(Stdio::null())
                    // The readiness probe's dropped connection makes it print a traceback.
                    .stderr(Stdio::null())
                    .spawn()
                    .context("python3 tests/py/lambda_receiver.py")?;
                (Some(Process(c, None)), None, String::new())
            }
            "kafka" => {
                let b = tokio::task::spawn_blocking(TestBroker::start).await?;
                let addr = b.addr.clone();
                (None, Some(b), addr)
            }
            other => bail!(
                "unknown destination '{other}': redis-stream, nats, sqs, kafka, amqp or lambda"
            ),
        };
        if kind != "kafka" {
            listening(port).await?;
        }
        Ok(Destination {
            kind: kind.to_string(),
            _process: process,
            _broker: broker,
            port,
            brokers,
            record: dir.join("lambda.jsonl"),
        })
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Make run `run`'s targets (Tidemark's and the peer's); Tidemark's sink.
    fn prepare(&self, run: usize) -> anyhow::Result<Value> {
        let p = self.port.to_string();
        Ok(match self.kind.as_str() {
            "redis-stream" => {
                json!({"type": "redis-stream", "url": format!("redis://127.0.0.1:{p}"),
                                     "stream": format!("tm{run}")})
            }
            "nats" => {
                for (name, subject) in [
                    (format!("TM{run}"), format!("tm{run}.>")),
                    (format!("PEER{run}"), format!("peer{run}.>")),
                ] {
                    python(READ, &["nats-stream", &p, &name, &subject])?;
                }
                json!({"type": "nats", "url": format!("nats://127.0.0.1:{p}"),
                       "subject": format!("tm{run}.{{bucket}}")})
            }
            "sqs" => {
                for name in [format!("tm{run}"), format!("peer{run}")] {
                    python(READ, &["sqs-create", &self.endpoint(), &name])?;
                }
                json!({"type": "sqs", "queue_url": format!("{}/123456789012/tm{run}", self.endpoint()),
                       "credentials": {"access_key_id": "testing", "secret_access_key": "testing"}})
            }
            "lambda" => {
                json!({"type": "lambda", "function": format!("tm{run}"), "endpoint": self.endpoint(),
                       "credentials": {"access_key_id": "AKIDTIDEMARKTEST",
                                       "secret_access_key": "tidemark/secret+key"}})
            }
            "amqp" => {
                for name in [format!("tm{run}"), format!("peer{run}")] {
                    python(READ, &["amqp-setup", &p, &name, &name, "#"])?;
                }
                json!({"type": "amqp", "url": format!("amqp://127.0.0.1:{p}"),
                       "exchange": format!("tm{run}")})
            }
            _ => {
                for topic in [format!("tm{run}"), format!("peer{run}")] {
                    python(
                        concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/py/consume_topic.py"),
                        &["create", &self.brokers, &topic, "4"],
                    )?;
                }
                let props: serde_json::Map<String, Value> = TestBroker::producer_workaround()
                    .into_iter()
                    .map(|(k, v)| (k, v.into()))
                    .collect();
                json!({"type": "kafka", "brokers": self.brokers, "topic": format!("tm{run}"),
                       "properties": props})
            }
        })
    }

    /// The peer sending `n` copies of Tidemark's first message; messages per second.
    fn peer(&self, run: usize, n: usize, batch: usize) -> anyhow::Result<f64> {
        let (p, n, b) = (self.port.to_string(), n.to_string(), batch.to_string());
        let (tm, peer) = (format!("tm{run}"), format!("peer{run}"));
        let v = match self.kind.as_str() {
            "redis-stream" => python(PEER, &["redis", &p, &tm, &peer, &n, &b])?,
            "nats" => python(
                PEER,
                &[
                    "nats",
                    &p,
                    &format!("TM{run}"),
                    &format!("peer{run}.x"),
                    &n,
                    &b,
                ],
            )?,
            "sqs" => {
                let q = |name: &str| format!("{}/123456789012/{name}", self.endpoint());
                python(PEER, &["sqs", &self.endpoint(), &q(&tm), &q(&peer), &n])?
            }
            "amqp" => python(PEER, &["amqp", &p, &tm, &peer, "bench", &n, &b])?,
            "lambda" => {
                let record = self.record.display().to_string();
                // The same invocations Tidemark made, from 8 threads: as many calls open as
                // Tidemark's (2 in flight per partition, 4 partitions).
                python(
                    PEER,
                    &["lambda", &self.endpoint(), &record, &tm, &peer, "8"],
                )?
            }
            _ => python(PEER, &["kafka", &self.brokers, &tm, &peer, &n])?,
        };
        let seconds = v["seconds"].as_f64().context("the peer printed no time")?;
        Ok(v["messages"].as_f64().unwrap_or(0.0) / seconds)
    }
}

pub async fn run(args: QueueArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (api, _server) = start_server(dir.path()).await?;
    write_events(&api, 0, args.events).await?;
    while call(&format!("{api}/healthz"), Method::GET, None).await?["index_lag"] != 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut summary = Vec::new();
    for kind in &args.sinks {
        let dest = Destination::start(kind, dir.path()).await?;
        let (events, batch) = match kind.as_str() {
            "sqs" => (args.events / 10, 10),
            _ => (args.events, args.batch),
        };
        let (mut ours, mut peers) = (Vec::new(), Vec::new());
        for run in 0..args.runs {
            let sink = dest.prepare(run)?;
            let name = format!("bench-{kind}-{run}");
            // The first `events` events of the log (SQS: a tenth of them, by rule).
            let mut spec = json!({
                "name": name, "start": "earliest", "sink": sink,
                "batch": {"max_events": batch, "max_wait_ms": 5},
            });
            if events < args.events {
                spec["rules"] = json!({"prefix": ["obj/000"]});
            }
            if kind == "lambda" {
                // 2 invocations in flight per partition, 8 in all: the peer's 8 threads.
                spec["delivery"] = json!({"max_in_flight": 2});
            }
            let started = Instant::now();
            call(&format!("{api}/v1/subscriptions"), Method::POST, Some(spec)).await?;
            let want = match events < args.events {
                true => (0..args.events).filter(|i| i % 10_000 < 1_000).count(),
                false => events,
            };
            // Steady state, as the peer's figure (which starts with its first send): from the
            // first status showing deliveries to the last event; the rate from the create
            // request (adding the subscription's and the client's start) is printed too.
            let mut first: Option<(Instant, u64)> = None;
            loop {
                let s = call(
                    &format!("{api}/v1/subscriptions/{name}/status"),
                    Method::GET,
                    None,
                )
                .await?;
                let delivered = s["delivered"].as_u64().unwrap_or(0);
                if delivered > 0 && first.is_none() {
                    first = Some((Instant::now(), delivered));
                }
                if delivered >= want as u64 {
                    break;
                }
                if started.elapsed() > Duration::from_secs(900) {
                    bail!("{kind}: only {delivered} of {want} delivered: {s}");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let (t0, n0) = first.expect("delivered");
            let rate = match (want as u64 - n0, t0.elapsed().as_secs_f64()) {
                (n, secs) if n > 0 && secs > 0.0 => n as f64 / secs,
                _ => want as f64 / started.elapsed().as_secs_f64(),
            };
            let from_create = want as f64 / started.elapsed().as_secs_f64();
            call(
                &format!("{api}/v1/subscriptions/{name}"),
                Method::DELETE,
                None,
            )
            .await?;
            let peer = tokio::task::block_in_place(|| dest.peer(run, want, batch))?;
            println!(
                "{kind} run {run}: tidemark {rate:.0} events/s ({from_create:.0}/s from the create request), python client {peer:.0} messages/s ({:.2}x), {want} events, batches of {batch}",
                rate / peer
            );
            ours.push(rate);
            peers.push(peer);
        }
        let ratios: Vec<f64> = ours.iter().zip(&peers).map(|(o, p)| o / p).collect();
        summary.push(format!(
            "{kind}: tidemark {:.0} events/s, python client {:.0} messages/s, median ratio {:.2}x",
            median(ours),
            median(peers),
            median(ratios)
        ));
    }
    println!("medians over {} runs:", args.runs);
    for line in summary {
        println!("  {line}");
    }
    Ok(())
}
