//! WASM filters: what the host adds per event (a keep-all module), a real filter (key prefix,
//! a metadata key, size) against the same logic as a native Rust closure, and instantiation
//! time with `InstancePre` and the pooling allocator. One core, in-process.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use tidemark_core::event::{ObjectEvent, sample_event};
use tidemark_plugins::{Decided, FilterEngine, FilterInstance, FilterModule, Limits, Verdict};

use super::median;

#[derive(Args)]
pub struct FilterArgs {
    /// Evaluations per measurement.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Measurements per path (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

const KEEP_ALL: &str = include_str!("../../../plugins/examples/keep_all.wat");
const RAW_CAMERA_LARGE: &str = include_str!("../../../plugins/examples/raw_camera_large.wat");
const KEEP_ALL_V2: &str = include_str!("../../../plugins/examples/keep_all_v2.wat");
const RAW_CAMERA_LARGE_V2: &str = include_str!("../../../plugins/examples/raw_camera_large_v2.wat");
/// Events per call of an ABI v2 module here (the host's largest batch).
const BATCH: usize = 256;

/// The same decision as `raw_camera_large.wat`.
fn native(e: &ObjectEvent) -> bool {
    e.key.starts_with("raw/")
        && e.metadata.contains_key("camera")
        && e.size.or(e.previous.as_ref().map(|p| p.size)).unwrap_or(-1) > 10 << 20
}

/// A mix: half under `raw/`, half of those with a camera, sizes from 0 to 20 MiB (about half
/// over the 10 MiB threshold), so the filter keeps some and drops others.
fn events() -> Vec<Arc<ObjectEvent>> {
    (0..1024u64)
        .map(|i| {
            let mut e = sample_event(i);
            e.key = format!("{}/{i:05}.jpg", if i % 2 == 0 { "raw" } else { "cooked" });
            e.metadata.clear();
            if i % 4 < 2 {
                e.metadata.insert("camera".into(), "x100".into());
            }
            e.size = Some(((i * 40_961) % (20 << 20)) as i64);
            Arc::new(e)
        })
        .collect()
}

fn module(engine: &Arc<FilterEngine>, wat: &str) -> anyhow::Result<Arc<FilterModule>> {
    let bytes = wat::parse_str(wat).context("example module")?;
    Ok(Arc::new(FilterModule::compile(
        engine,
        &bytes,
        Limits::default(),
    )?))
}

/// Evaluations per second of `f` over `events`, `n` times.
fn wasm_rate(f: &mut FilterInstance, events: &[Arc<ObjectEvent>], n: usize) -> anyhow::Result<f64> {
    let start = Instant::now();
    for i in 0..n {
        let eval = f.evaluate(events[i % events.len()].clone());
        std::hint::black_box(eval.verdict?);
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Evaluations per second of an ABI v2 `f` over `events`, [`BATCH`] per call, `n` in all.
fn batch_rate(
    f: &mut FilterInstance,
    events: &[Arc<ObjectEvent>],
    n: usize,
) -> anyhow::Result<f64> {
    let calls = n.div_ceil(BATCH);
    let per_round = events.len() / BATCH;
    let start = Instant::now();
    for c in 0..calls {
        let at = (c % per_round) * BATCH;
        // As a subscription's reader calls it: verdict bytes when every event is decided.
        match f.decide(&events[at..at + BATCH]) {
            Decided::Verdicts { verdicts, .. } => {
                std::hint::black_box(verdicts);
            }
            Decided::Each(evals) => {
                for eval in evals {
                    std::hint::black_box(eval.verdict?);
                }
            }
        }
    }
    Ok((calls * BATCH) as f64 / start.elapsed().as_secs_f64())
}

fn native_rate(events: &[Arc<ObjectEvent>], n: usize) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        std::hint::black_box(native(std::hint::black_box(&events[i % events.len()])));
    }
    n as f64 / start.elapsed().as_secs_f64()
}

pub fn run(args: FilterArgs) -> anyhow::Result<()> {
    let engine = FilterEngine::new(Limits::maxima(), 64)?;
    // The same modules without fuel metering or deadlines: what the limits cost.
    let bare = FilterEngine::unmetered(Limits::maxima(), 64)?;
    let events = events();
    let keep = module(&engine, KEEP_ALL)?;
    let raw = module(&engine, RAW_CAMERA_LARGE)?;
    let mut keep_all = FilterInstance::new(keep.clone(), None)?;
    let mut filter = FilterInstance::new(raw.clone(), None)?;
    let mut bare_filter = FilterInstance::new(module(&bare, RAW_CAMERA_LARGE)?, None)?;
    let mut keep_all_v2 = FilterInstance::new(module(&engine, KEEP_ALL_V2)?, None)?;
    let mut filter_v2 = FilterInstance::new(module(&engine, RAW_CAMERA_LARGE_V2)?, None)?;
    let mut bare_filter_v2 = FilterInstance::new(module(&bare, RAW_CAMERA_LARGE_V2)?, None)?;
    // The module must decide as the closure does, or the comparison means nothing.
    let kept = events.iter().filter(|e| native(e)).count();
    if kept == 0 || kept == events.len() {
        bail!(
            "the sample keeps {kept} of {} events: no comparison",
            events.len()
        );
    }
    let batched = filter_v2.evaluate_all(&events);
    for (e, v2) in events.iter().zip(batched) {
        let wasm = filter.evaluate(e.clone()).verdict? == Verdict::Keep;
        if wasm != native(e) || (v2.verdict? == Verdict::Keep) != wasm {
            bail!("the modules and the closure disagree on {}", e.key);
        }
    }
    let (mut overhead, mut wasm, mut rust, mut inst, mut unlimited) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut overhead_v2, mut wasm_v2, mut unlimited_v2) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.runs {
        overhead_v2.push(1e9 / batch_rate(&mut keep_all_v2, &events, args.events)?);
        wasm_v2.push(batch_rate(&mut filter_v2, &events, args.events)?);
        unlimited_v2.push(batch_rate(&mut bare_filter_v2, &events, args.events)?);
        overhead.push(1e9 / wasm_rate(&mut keep_all, &events, args.events)?);
        wasm.push(wasm_rate(&mut filter, &events, args.events)?);
        unlimited.push(wasm_rate(&mut bare_filter, &events, args.events)?);
        rust.push(native_rate(&events, args.events * 10));
        let n = 10_000;
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(FilterInstance::new(keep.clone(), None)?);
        }
        inst.push(start.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
    let (o, w, r, i) = (median(overhead), median(wasm), median(rust), median(inst));
    let u = median(unlimited);
    println!(
        "keep-all module: {o:.0} ns per event (host overhead: store setup, fuel, deadline, call)"
    );
    println!(
        "prefix + metadata + size filter: WASM {w:.0} events/s, native closure {r:.0} events/s \
         (native is {:.1}x)",
        r / w
    );
    println!(
        "limits: the same filter without fuel or deadlines {u:.0} events/s; the limits cost \
         {:.1}% of throughput",
        (1.0 - w / u) * 100.0
    );
    println!("instantiation (InstancePre + pooling allocator): {i:.2} µs");
    let (o2, w2) = (median(overhead_v2), median(wasm_v2));
    println!(
        "ABI v2, batches of {BATCH}: keep-all module {o2:.1} ns per event; prefix + metadata + \
         size filter {w2:.0} events/s (native is {:.1}x; v2 is {:.1}x v1)",
        r / w2,
        w2 / w
    );
    let u2 = median(unlimited_v2);
    println!(
        "ABI v2 limits: the same filter without fuel or deadlines {u2:.0} events/s; the limits \
         cost {:.1}% of throughput",
        (1.0 - w2 / u2) * 100.0
    );
    Ok(())
}
