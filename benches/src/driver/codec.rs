//! Codec throughput: encode + decode round trips per second on one core.

use std::time::Instant;

use anyhow::Context;
use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use clap::Args;
use tidemark_core::codec::{object_event, value};
use tidemark_core::event::{ObjectEvent, sample_event};

use super::median;

#[derive(Args)]
pub struct CodecArgs {
    /// Round trips per measurement.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Measurements per path (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Skip the fastavro peer (python3 with fastavro is needed for it).
    #[arg(long)]
    no_fastavro: bool,
}

fn direct(events: &[ObjectEvent], n: usize) -> f64 {
    let mut buf = Vec::with_capacity(512);
    let start = Instant::now();
    for i in 0..n {
        buf.clear();
        object_event::encode(&events[i % events.len()], &mut buf);
        let back = object_event::decode(&buf).expect("decodes");
        std::hint::black_box(back);
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn generic(schema: &Schema, events: &[ObjectEvent], n: usize) -> f64 {
    // Resolved once, as a careful user of the Value path would.
    let writer = GenericDatumWriter::builder(schema)
        .validate(false)
        .build()
        .expect("writer");
    let reader = GenericDatumReader::builder(schema).build().expect("reader");
    let mut buf = Vec::with_capacity(512);
    let start = Instant::now();
    for i in 0..n {
        buf.clear();
        writer
            .write_value(&mut buf, value::to_value(&events[i % events.len()]))
            .expect("encodes");
        let v = reader.read_value(&mut &buf[..]).expect("decodes");
        std::hint::black_box(value::from_value(v).expect("converts"));
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn fastavro(n: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("bench_fastavro.py");
    std::fs::write(&script, include_str!("../../../scripts/bench_fastavro.py"))?;
    let schema = dir.path().join("object_event.avsc");
    std::fs::write(&schema, tidemark_schemas::object_event_latest().text)?;
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&schema)
        .arg(n.to_string())
        .output()
        .context("run python3 (install fastavro with `pip install fastavro`)")?;
    if !out.status.success() {
        anyhow::bail!(
            "fastavro benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    v["events_per_s"]
        .as_f64()
        .context("fastavro output has events_per_s")
}

pub fn run(args: CodecArgs) -> anyhow::Result<()> {
    let schema = Schema::parse_str(tidemark_schemas::object_event_latest().text)?;
    let events: Vec<_> = (0..1000).map(sample_event).collect();
    let size = {
        let mut buf = Vec::new();
        object_event::encode(&events[0], &mut buf);
        buf.len()
    };
    println!(
        "ObjectEvent encode + decode, one core, {} round trips x {} runs (event: {size} bytes)",
        args.events, args.runs
    );
    // Warm up caches and the allocator.
    direct(&events, args.events / 10);
    generic(&schema, &events, args.events / 20);
    let d = median(
        (0..args.runs)
            .map(|_| direct(&events, args.events))
            .collect(),
    );
    let g = median(
        (0..args.runs)
            .map(|_| generic(&schema, &events, args.events / 5))
            .collect(),
    );
    println!("  direct codec (tidemark)        {:>12.0} events/s", d);
    println!(
        "  apache-avro Value path         {:>12.0} events/s   direct is {:.1}x",
        g,
        d / g
    );
    if !args.no_fastavro {
        let f = median(
            (0..args.runs.min(3))
                .map(|_| fastavro(args.events / 10))
                .collect::<anyhow::Result<Vec<_>>>()?,
        );
        println!(
            "  fastavro (python3)             {:>12.0} events/s   direct is {:.1}x",
            f,
            d / f
        );
    }
    Ok(())
}
