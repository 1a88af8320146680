//! `tidemark bench`: the measurements behind docs/PERFORMANCE.md. Each prints its figures and
//! the peer it is compared with, measured in the same run.

mod codec;
mod delivery;
mod filter;
mod iceberg;
mod iceberg_live;
mod ingest;
mod kafka;
mod lake;
mod queue;
mod rebuild;
mod replay;
mod s3;
mod scale;
mod state_at;
mod tls;
mod watch;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Avro encode + decode of ObjectEvent: direct codec vs apache-avro's Value path vs fastavro.
    Codec(codec::CodecArgs),
    /// HTTP batch ingest with group commit: throughput, or latency at a fixed rate.
    Ingest(ingest::IngestArgs),
    /// Rebuilding the object index from the log.
    Rebuild(rebuild::RebuildArgs),
    /// Webhook delivery: events/s vs a plain load generator, and mutation-to-2xx latency.
    Delivery(delivery::DeliveryArgs),
    /// Re-delivery of a time range (a replay job) vs live delivery of the same events.
    Replay(replay::ReplayArgs),
    /// WASM filters: host overhead per event, a filter vs the same native closure,
    /// instantiation time.
    Filter(filter::FilterArgs),
    /// Producing to Kafka through Tidemark's log vs librdkafka directly.
    Kafka(kafka::KafkaArgs),
    /// Iceberg tables: rows/s from the log to a committed journal (alone, then with the
    /// inventory) vs pyiceberg's `Table.append` of the same rows.
    Iceberg(iceberg::IcebergArgs),
    /// The Iceberg inventory's sustained upserts over many live keys, and its read cost vs a
    /// table pyiceberg appended the same rows to.
    IcebergInventory(iceberg_live::InventoryArgs),
    /// Acknowledgement to visible in the Iceberg tables under a fixed offered load.
    IcebergFreshness(iceberg_live::FreshnessArgs),
    /// Parquet lake: encoding rows from Arrow arrays and end to end from Avro records vs
    /// pyarrow's write_table.
    Lake(lake::LakeArgs),
    /// The state at an instant from an index snapshot plus a bounded replay vs a full replay.
    StateAt(state_at::StateAtArgs),
    /// The S3 API: PUT and GET of 4 KiB and 1 MiB objects with fsync=always vs the same
    /// client against a plain HTTP server.
    S3(s3::S3Args),
    /// TLS on both listeners vs none, same load, same run: HTTP ingest and S3 GET of 1 MiB.
    Tls(tls::TlsArgs),
    /// Ingest as distinct keys grow (100,000 to 20,000,000): mutations/s, resident memory, and
    /// restart to ready.
    Scale(scale::ScaleArgs),
    /// Queue sinks: events/s delivered to Redis Streams, NATS JetStream, SQS and Kafka vs
    /// each system's Python client sending the same messages to the same server.
    Queue(queue::QueueArgs),
    /// Live watch: change-to-watcher latency with many SSE watchers, memory per idle
    /// watcher, idle watchers one server holds.
    Watch(watch::WatchArgs),
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Codec(args) => codec::run(args),
        BenchCommand::Ingest(args) => ingest::run(args).await,
        BenchCommand::Rebuild(args) => rebuild::run(args).await,
        BenchCommand::Kafka(args) => kafka::run(args).await,
        BenchCommand::Delivery(args) => delivery::run(args).await,
        BenchCommand::Replay(args) => replay::run(args).await,
        BenchCommand::Filter(args) => filter::run(args),
        BenchCommand::Lake(args) => lake::run(args),
        BenchCommand::Iceberg(args) => iceberg::run(args).await,
        BenchCommand::IcebergInventory(args) => iceberg_live::inventory(args).await,
        BenchCommand::IcebergFreshness(args) => iceberg_live::freshness(args).await,
        BenchCommand::StateAt(args) => state_at::run(args).await,
        BenchCommand::S3(args) => s3::run(args).await,
        BenchCommand::Tls(args) => tls::run(args).await,
        BenchCommand::Scale(args) => scale::run(args).await,
        BenchCommand::Watch(args) => watch::run(args).await,
        BenchCommand::Queue(args) => queue::run(args).await,
    }
}

/// Median of repeated measurements.
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The `q` quantile (0..=1) of sorted samples.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}
