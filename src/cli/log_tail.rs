//! `tidemark log tail`: decoded events straight from the log (its files, or Kafka), alongside a
//! running server.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tidemark_core::OBJECTS_TOPIC;
use tidemark_core::log::Record;
use tidemark_core::time::{format_us, parse_rfc3339_us};

use super::{DataDir, LogArgs};
use tidemark_server::node::{OfflineLog, open_offline};

#[derive(Args)]
pub struct TailArgs {
    #[command(flatten)]
    data: DataDir,
    #[command(flatten)]
    log: LogArgs,
    /// Topic to read: `objects` (object events), `_schemas` or `_config`.
    #[arg(long, default_value = OBJECTS_TOPIC)]
    topic: String,
    /// Print every event from the start of the log.
    #[arg(long, conflicts_with_all = ["since", "lines"])]
    from_beginning: bool,
    /// Print events appended at or after this instant (RFC 3339).
    #[arg(long, conflicts_with = "lines")]
    since: Option<String>,
    /// Print the last N events of each partition (the default start).
    #[arg(short = 'n', long = "lines", default_value_t = 10)]
    lines: u64,
    /// Keep waiting for new events, like `tail -f`.
    #[arg(short, long)]
    follow: bool,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// JSON lines with the raw record (key, hex value in the Confluent wire format).
    #[arg(long, conflicts_with = "json")]
    raw: bool,
}

pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    let since = args
        .since
        .as_deref()
        .map(parse_rfc3339_us)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    let offline = open_offline(
        &args.log.choice(),
        &args.data.data_dir,
        args.log.schema_registry.as_deref(),
    )
    .await?;
    let log = offline.log.log.clone();
    let partitions = log
        .partitions(&args.topic)
        .with_context(|| match &offline.log.embedded {
            Some(e) => format!("topics here: {}", e.topic_names().join(", ")),
            None => "topics Tidemark writes: objects, _schemas, _config".to_string(),
        })?;
    let mut next = BTreeMap::new();
    for p in 0..partitions {
        let range = log.offsets(&args.topic, p).await?;
        let start = if args.from_beginning {
            range.start
        } else if let Some(ts) = since {
            log.offset_for_time(&args.topic, p, ts).await?
        } else {
            range.end.saturating_sub(args.lines).max(range.start)
        };
        next.insert(p, start);
    }
    let mut out = std::io::stdout().lock();
    loop {
        let mut batch: Vec<Record> = Vec::new();
        for (p, from) in next.iter_mut() {
            let records = log
                .read(&args.topic, *p, *from, 10_000, Duration::ZERO)
                .await?;
            if let Some(last) = records.last() {
                *from = last.offset + 1;
            }
            batch.extend(records);
        }
        // Interleave partitions by append time, as a single stream reads most naturally.
        batch.sort_by_key(|r| (r.timestamp, r.partition, r.offset));
        for rec in &batch {
            let line = render(&offline, &args, rec)?;
            if writeln!(out, "{line}").is_err() {
                return Ok(()); // stdout closed (e.g. piped into head)
            }
        }
        out.flush().ok();
        if batch.len() >= 10_000 {
            continue;
        }
        if !args.follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The embedded log's files are re-scanned; Kafka reads see new records by themselves.
        if let Some(e) = &offline.log.embedded {
            e.refresh()?;
        }
    }
}

fn render(offline: &OfflineLog, args: &TailArgs, rec: &Record) -> anyhow::Result<String> {
    if args.raw {
        return Ok(serde_json::json!({
            "partition": rec.partition,
            "offset": rec.offset,
            "append_time": format_us(rec.timestamp),
            "key": String::from_utf8_lossy(&rec.key),
            "value_hex": hex(&rec.value),
        })
        .to_string());
    }
    if args.topic != OBJECTS_TOPIC {
        let value = String::from_utf8_lossy(&rec.value);
        return Ok(if args.json {
            serde_json::json!({"partition": rec.partition, "offset": rec.offset, "key": String::from_utf8_lossy(&rec.key), "value": value}).to_string()
        } else {
            format!(
                "{} p{}@{} {} {}",
                format_us(rec.timestamp),
                rec.partition,
                rec.offset,
                String::from_utf8_lossy(&rec.key),
                value
            )
        });
    }
    let Some(codec) = &offline.codec else {
        bail!("the object event schema is not registered in this data directory yet");
    };
    let event = codec
        .decode(&rec.value)
        .with_context(|| format!("partition {} offset {}", rec.partition, rec.offset))?;
    Ok(if args.json {
        let mut v = event.to_json();
        v["partition"] = rec.partition.into();
        v["offset"] = rec.offset.into();
        v["append_time"] = format_us(rec.timestamp).into();
        v.to_string()
    } else {
        format!(
            "{} p{}@{} {} {}/{} seq={} size={} id={}",
            format_us(rec.timestamp),
            rec.partition,
            rec.offset,
            event.event_type,
            event.bucket,
            event.key,
            event.sequence,
            event.size.map_or("-".to_string(), |s| s.to_string()),
            event.event_id
        )
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
