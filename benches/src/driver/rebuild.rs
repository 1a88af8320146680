//! Rebuild throughput: events per second from the log into a fresh index.

use std::time::{Duration, Instant};

use clap::Args;
use tidemark_core::OBJECTS_TOPIC;
use tidemark_core::codec::EventCodec;
use tidemark_core::ingest::{Mutation, Op, RequestContext};
use tidemark_core::log::Log;
use tidemark_core::log::embedded::EmbeddedLog;

use super::median;
use tidemark_server::node::{LogChoice, Node, NodeConfig};

#[derive(Args)]
pub struct RebuildArgs {
    /// Events in the log to rebuild from.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Distinct keys the events touch.
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// Rebuilds to run (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// A workload like production: mostly puts (new objects and overwrites), some deletes, tag and
/// metadata changes.
fn mutation(i: usize, keys: usize, exists: &mut [bool]) -> Mutation {
    let k = (i.wrapping_mul(2_654_435_761)) % keys;
    let op = if !exists[k] {
        Op::Put
    } else {
        match i % 10 {
            0 => Op::Delete,
            1 => Op::Tag,
            2 => Op::Metadata,
            _ => Op::Put,
        }
    };
    exists[k] = op != Op::Delete;
    Mutation {
        op,
        bucket: "photos".into(),
        key: format!("raw/2026/11/{:02}/img-{k:08}.jpg", k % 28 + 1),
        size: (op == Op::Put).then_some(1_048_576 + (i % 4096) as i64),
        etag: (op == Op::Put).then(|| format!("\"{i:032x}\"")),
        content_type: (op == Op::Put).then(|| "image/jpeg".into()),
        sha256: None,
        storage_class: None,
        metadata: matches!(op, Op::Put | Op::Metadata)
            .then(|| [("camera".to_string(), format!("cam-{}", i % 17))].into()),
        tags: (op == Op::Tag).then(|| [("reviewed".to_string(), "yes".to_string())].into()),
        version_id: None,
        event_time: None,
        event_type: None,
        condition: None,
        headers: None,
        checksum: None,
        part_sizes: None,
        removed_version_id: None,
        after: None,
    }
}

pub async fn run(args: RebuildArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = Node::open(NodeConfig {
        data_dir: dir.path().to_path_buf(),
        log: LogChoice::Embedded(Default::default()),
        schema_registry: None,
        advertise_url: String::new(),
        static_membership: false,
        partitions: 4,
        retention: (None, None),
        origin: Default::default(),
        destinations: Default::default(),
        webhook_ca_file: None,
        cache_bytes: 256 << 20,
        functions: Default::default(),
        filter_instances: 16,
        filter_defaults: Default::default(),
        filter_maxima: tidemark_plugins::Limits::maxima(),
        filter_server: Default::default(),
        s3_dedup_window: tidemark_core::ingest::dedup::DEFAULT_WINDOW,
        snapshots: tidemark_replay::snapshot::Policy::never(),
        blob_gc: Default::default(),
    })
    .await?;
    let mut exists = vec![false; args.keys];
    let load = Instant::now();
    let ctx = RequestContext::default();
    for chunk in (0..args.events).collect::<Vec<_>>().chunks(10_000) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|&i| mutation(i, args.keys, &mut exists))
            .collect();
        node.ingestor.apply(batch, &ctx).await?;
    }
    println!(
        "loaded {} events over {} keys in {:.1}s",
        args.events,
        args.keys,
        load.elapsed().as_secs_f64()
    );
    let ends = node.materializer.log_ends().await?;
    node.materializer
        .wait_for(&ends, Duration::from_secs(600))
        .await;
    let log = node.log.log.clone();
    let embedded = node.log.embedded.clone().expect("embedded log");
    let codec = node.codec();
    let mut rates = Vec::new();
    for run in 0..args.runs {
        let into = dir.path().join(format!("rebuild-{run}.redb"));
        let stats =
            tidemark_core::rebuild::rebuild_index(log.clone(), codec.clone(), &into, |_, _| {})
                .await?;
        let rate = stats.records as f64 / stats.elapsed.as_secs_f64();
        println!(
            "  run {run}: {} events in {:.2}s = {rate:.0} events/s",
            stats.records,
            stats.elapsed.as_secs_f64()
        );
        rates.push(rate);
        std::fs::remove_file(&into)?;
    }
    let rebuild = median(rates);
    // Peer: reading and fully decoding every event once, on one core, with nothing written.
    let mut scans = Vec::new();
    for _ in 0..args.runs {
        scans.push(scan_rate(embedded.as_ref(), &codec).await?);
    }
    let scan = median(scans);
    println!("rebuild median: {rebuild:.0} events/s");
    println!(
        "peer, read + decode every event on one core: {scan:.0} events/s (rebuild is {:.2}x)",
        rebuild / scan
    );
    Ok(())
}

async fn scan_rate(log: &EmbeddedLog, codec: &EventCodec) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut n = 0u64;
    for stats in log.stats(OBJECTS_TOPIC)? {
        let mut next = stats.start;
        while next < stats.end {
            let records = log
                .read(
                    OBJECTS_TOPIC,
                    stats.partition,
                    next,
                    100_000,
                    Duration::ZERO,
                )
                .await?;
            next = records.last().map_or(stats.end, |r| r.offset + 1);
            for rec in &records {
                std::hint::black_box(codec.decode(&rec.value)?);
            }
            n += records.len() as u64;
        }
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}
