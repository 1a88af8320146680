//! Produce throughput through Tidemark's Kafka log, against librdkafka's own producer driven
//! directly with the same settings and the same pre-encoded payloads, to the same broker, in
//! the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tidemark_core::codec::object_event;
use tidemark_core::event::sample_event;
use tidemark_core::log::kafka::{KafkaConfig, KafkaLog};
use tidemark_core::log::{Log, NewRecord, TopicSpec, partition_for};

#[derive(Args, Clone)]
pub struct KafkaArgs {
    /// Brokers to produce to (e.g. a local `tansu broker`).
    #[arg(long)]
    kafka_brokers: String,
    /// Messages per measurement.
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Records per `append` call (Tidemark's ingest appends one HTTP batch per call).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Partitions of the benchmark topics.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Rounds; each runs the three producers in a rotated order, medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[derive(Clone)]
struct Payloads {
    keys: Vec<Bytes>,
    values: Vec<Bytes>,
}

impl Payloads {
    fn bytes(&self) -> usize {
        self.keys
            .iter()
            .zip(&self.values)
            .map(|(k, v)| k.len() + v.len())
            .sum()
    }
}

fn config(args: &KafkaArgs) -> KafkaConfig {
    KafkaConfig {
        brokers: args.kafka_brokers.clone(),
        ..KafkaConfig::default()
    }
}

/// The peer: librdkafka's producer driven directly in a loop (its own thread serves delivery
/// reports), with Tidemark's producer settings.
fn direct(args: &KafkaArgs, topic: &str, p: &Payloads) -> anyhow::Result<f64> {
    let c = config(args);
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &c.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", c.linger_ms.to_string())
        .set("batch.size", c.batch_size.to_string())
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()?;
    // Connect and get a producer id before timing, as Tidemark's producer already has.
    producer
        .send(
            BaseRecord::to(topic)
                .partition(0)
                .key(&p.keys[0][..])
                .payload(&p.values[0][..]),
        )
        .map_err(|(e, _)| e)?;
    producer.flush(Duration::from_secs(30))?;
    let start = Instant::now();
    for (k, v) in p.keys.iter().zip(&p.values) {
        let part = partition_for(k, args.partitions) as i32;
        let mut record = BaseRecord::to(topic)
            .partition(part)
            .key(&k[..])
            .payload(&v[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    // Queue full: let the delivery thread catch up.
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(p.keys.len() as f64 / start.elapsed().as_secs_f64())
}

/// Tidemark's `KafkaLog::append`, `batch` records per call, several calls in flight (as
/// concurrent HTTP requests make them); with `encode`, each event is Avro-encoded first.
async fn through_log(
    log: &Arc<KafkaLog>,
    topic: &str,
    args: &KafkaArgs,
    p: &Payloads,
    encode: bool,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut in_flight = std::collections::VecDeque::new();
    for (i, chunk) in (0..p.keys.len())
        .collect::<Vec<_>>()
        .chunks(args.batch)
        .enumerate()
    {
        let records = chunk
            .iter()
            .map(|&j| {
                let value = if encode {
                    let mut buf = Vec::with_capacity(512);
                    tidemark_core::codec::wire::write_header(&mut buf, 1);
                    object_event::encode(&sample_event((i * args.batch + j) as u64), &mut buf);
                    Bytes::from(buf)
                } else {
                    p.values[j].clone()
                };
                NewRecord::new(p.keys[j].clone(), value)
            })
            .collect();
        in_flight.push_back(log.append(topic, records));
        if in_flight.len() >= 16 {
            in_flight.pop_front().expect("in flight").await?;
        }
    }
    for f in in_flight {
        f.await?;
    }
    Ok(p.keys.len() as f64 / start.elapsed().as_secs_f64())
}

pub async fn run(args: KafkaArgs) -> anyhow::Result<()> {
    let log = Arc::new(KafkaLog::connect(config(&args)).context("connect to --kafka-brokers")?);
    let payloads = Payloads {
        keys: (0..args.messages)
            .map(|i| Bytes::from(sample_event(i as u64).log_key()))
            .collect(),
        values: (0..args.messages)
            .map(|i| {
                let mut buf = Vec::with_capacity(512);
                tidemark_core::codec::wire::write_header(&mut buf, 1);
                object_event::encode(&sample_event(i as u64), &mut buf);
                Bytes::from(buf)
            })
            .collect(),
    };
    let mb = payloads.bytes() as f64 / 1e6;
    let run_id = std::process::id();
    println!(
        "Kafka produce to {}: {} messages ({mb:.1} MB), {} partitions, acks=all, idempotent",
        args.kafka_brokers, args.messages, args.partitions
    );
    let names = [
        "librdkafka producer loop (peer)",
        "tidemark KafkaLog::append, pre-encoded",
        "tidemark KafkaLog::append, encoding each event",
    ];
    let mut rates: [Vec<f64>; 3] = Default::default();
    for round in 0..args.rounds {
        // Rotate the order so no producer always meets a cold (or warm) broker.
        for k in 0..3 {
            let mode = (round + k) % 3;
            let topic = format!("bench-{run_id}-{round}-{mode}");
            log.ensure_topic(&topic, &TopicSpec::new(args.partitions))
                .await?;
            let rate = match mode {
                0 => {
                    let (a, t, p) = (args.clone(), topic.clone(), payloads.clone());
                    tokio::task::spawn_blocking(move || direct(&a, &t, &p)).await??
                }
                _ => through_log(&log, &topic, &args, &payloads, mode == 2).await?,
            };
            rates[mode].push(rate);
        }
    }
    let medians: Vec<f64> = rates.into_iter().map(super::median).collect();
    for (name, rate) in names.iter().zip(&medians) {
        println!(
            "  {name:<48} {rate:>10.0} msg/s {:>7.1} MB/s  {:.2}x the peer",
            rate * mb / args.messages as f64,
            rate / medians[0]
        );
    }
    Ok(())
}
