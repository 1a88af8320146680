//! One filter (key under `raw/`, user metadata `camera` set, size > 10 MiB), four ways, timed
//! in the same run and interleaved, on one core:
//!
//! - Tidemark's filter host running `plugins/examples/raw_camera_large.wat` through
//!   `FilterInstance::evaluate` (fields read on demand through host functions);
//! - the same decision as a native Rust closure;
//! - an Extism plug-in (`plugin/`) given the event's JSON view as its input, encoded per event
//!   by the host as an Extism host would have to;
//! - the same plug-in given `key \0 camera \0 size`, encoded once before timing: Extism's best
//!   case, the host doing no work per event beyond the call.
//!
//! Each measurement is `--events` evaluations over the 1024-event mix of
//! `benches/src/driver/filter.rs`; the figure is the median of `--runs` measurements.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use extism::Plugin;
use tidemark_core::event::{ObjectEvent, sample_event};
use tidemark_plugins::{FilterEngine, FilterInstance, FilterModule, Limits, Verdict};

// The allocator of the `tidemark` binary, so that every path allocates as it would there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RAW_CAMERA_LARGE: &str = include_str!("../../../plugins/examples/raw_camera_large.wat");

/// The native closure runs this many times more evaluations, to be long enough to time.
const NATIVE_FACTOR: usize = 10;

#[derive(Parser)]
#[command(about = "Tidemark's WASM filter host vs a native closure vs Extism, one filter")]
struct Args {
    /// Evaluations per measurement (the native closure does ten times as many).
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Measurements per variant, interleaved; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The Extism plug-in, built for wasm32-unknown-unknown (`run.sh` builds it and passes it).
    #[arg(long)]
    plugin: PathBuf,
}

/// The object size the filter compares: after the event, or before it for a removal (what the
/// ABI's `size()` returns), `-1` when neither is known.
fn size(e: &ObjectEvent) -> i64 {
    e.size.or(e.previous.as_ref().map(|p| p.size)).unwrap_or(-1)
}

/// The mix of `benches/src/driver/filter.rs`: half under `raw/`, half of those with a camera, sizes
/// `(i * 40961) % 20 MiB` (about half over the 10 MiB threshold).
fn mix() -> Vec<Arc<ObjectEvent>> {
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

/// More events for checking that the four paths agree: sizes right at the threshold,
/// removals (size from `previous`) and a key too short for the prefix.
fn check_set() -> Vec<Arc<ObjectEvent>> {
    mix()
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let i = i as i64;
            let mut e = Arc::unwrap_or_clone(e);
            e.size = Some((i * 20_483) % (20 << 20));
            if i % 8 == 0 {
                e.size = None;
                if let Some(p) = e.previous.as_mut() {
                    p.size = i << 15;
                }
            }
            if i % 16 == 4 {
                e.key = "raw".into();
            }
            Arc::new(e)
        })
        .collect()
}

/// What an Extism host hands the plug-in when it passes the event as JSON.
fn json(e: &ObjectEvent) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(&e.to_json())?)
}

/// `key \0 camera \0 size`: the least the plug-in needs.
fn compact(e: &ObjectEvent) -> Vec<u8> {
    let mut b = Vec::with_capacity(e.key.len() + 24);
    b.extend_from_slice(e.key.as_bytes());
    b.push(0);
    b.push(if e.metadata.contains_key("camera") {
        b'1'
    } else {
        b'0'
    });
    b.push(0);
    b.extend_from_slice(size(e).to_string().as_bytes());
    b
}

/// A plug-in verdict: its output is a little-endian `i32`, 1 keep, 0 drop.
fn extism_keep(plugin: &mut Plugin, function: &str, input: &[u8]) -> anyhow::Result<bool> {
    match plugin.call::<&[u8], i32>(function, input)? {
        1 => Ok(true),
        0 => Ok(false),
        v => bail!("{function} answered {v}"),
    }
}

/// Evaluations per second of `n` calls of `f(i)`.
fn rate(n: usize, mut f: impl FnMut(usize) -> anyhow::Result<bool>) -> anyhow::Result<f64> {
    let start = Instant::now();
    for i in 0..n {
        black_box(f(i)?);
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    }
}

const NAMES: [&str; 4] = [
    "tidemark (WAT filter, FilterInstance::evaluate)",
    "native Rust closure",
    "extism, JSON input (encoded per event)",
    "extism, compact input (pre-encoded)",
];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.events == 0 || args.runs == 0 {
        bail!("--events and --runs must be at least 1");
    }

    if std::backtrace::Backtrace::capture().status() == std::backtrace::BacktraceStatus::Captured {
        eprintln!(
            "warning: backtrace capture is on (RUST_BACKTRACE / RUST_LIB_BACKTRACE): Extism's \
             call path makes an error per call, which then pays for a backtrace; run with \
             RUST_LIB_BACKTRACE=0 (run.sh does)"
        );
    }

    let native = |e: &ObjectEvent| -> bool {
        e.key.starts_with("raw/") && e.metadata.contains_key("camera") && size(e) > 10 << 20
    };

    let engine = FilterEngine::new(Limits::maxima(), 4)?;
    let wasm = wat::parse_str(RAW_CAMERA_LARGE).context("raw_camera_large.wat")?;
    let module = Arc::new(FilterModule::compile(&engine, &wasm, Limits::default())?);
    let mut tidemark = FilterInstance::new(module, None)?;

    let plugin_wasm = std::fs::read(&args.plugin)
        .with_context(|| format!("reading the Extism plug-in {}", args.plugin.display()))?;
    let mut plugin = Plugin::new(&plugin_wasm, [], false).context("loading the Extism plug-in")?;

    // All four must decide alike, or the comparison means nothing.
    let events = mix();
    let mut kept = [0usize; 2];
    for (set, evs) in [&events, &check_set()].into_iter().enumerate() {
        for e in evs {
            let verdicts = [
                tidemark.evaluate(e.clone()).verdict? == Verdict::Keep,
                native(e),
                extism_keep(&mut plugin, "filter_json", &json(e)?)?,
                extism_keep(&mut plugin, "filter_compact", &compact(e))?,
            ];
            if verdicts.iter().any(|&v| v != verdicts[0]) {
                bail!(
                    "the paths disagree on {} (size {:?}): {verdicts:?}",
                    e.key,
                    e.size
                );
            }
            kept[set] += usize::from(verdicts[0]);
        }
    }
    let compact_inputs: Vec<Vec<u8>> = events.iter().map(|e| compact(e)).collect();
    let len = events.len();

    println!(
        "prefix + metadata + size filter (plugins/examples/raw_camera_large.wat), one core; \
         extism {}",
        extism::extism_version().trim_end_matches('\0')
    );
    println!(
        "verdicts agree on all {len} events of the mix ({} kept) and all {len} of the check set \
         ({} kept)",
        kept[0], kept[1]
    );
    println!(
        "{} evaluations per measurement (native: {}), median of {} interleaved runs",
        args.events,
        args.events * NATIVE_FACTOR,
        args.runs
    );

    println!("per run, events/s: tidemark / native / extism JSON / extism compact");
    let n = args.events;
    let mut rates: [Vec<f64>; 4] = Default::default();
    let mut encode_ns = Vec::new();
    for run in 0..args.runs {
        // Rotate the order from run to run, so no variant always goes first.
        for k in 0..4 {
            let v = (k + run) % 4;
            let r = match v {
                0 => rate(n, |i| {
                    Ok(tidemark.evaluate(events[i % len].clone()).verdict? == Verdict::Keep)
                })?,
                1 => rate(n * NATIVE_FACTOR, |i| {
                    Ok(native(black_box(&events[i % len])))
                })?,
                2 => rate(n, |i| {
                    let input = json(&events[i % len])?;
                    extism_keep(&mut plugin, "filter_json", &input)
                })?,
                _ => rate(n, |i| {
                    extism_keep(&mut plugin, "filter_compact", &compact_inputs[i % len])
                })?,
            };
            rates[v].push(r);
        }
        // The host's share of the JSON variant: encoding alone.
        let r = rate(n, |i| Ok(!black_box(json(&events[i % len])?).is_empty()))?;
        encode_ns.push(1e9 / r);
        println!(
            "run {}: {}",
            run + 1,
            rates
                .iter()
                .map(|r| format!("{:.0}", r[run]))
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }

    let m: Vec<f64> = rates.into_iter().map(median).collect();
    println!();
    println!("{:<50} {:>14} {:>10}", "variant", "events/s", "ns/event");
    for (name, r) in NAMES.iter().zip(&m) {
        println!("{name:<50} {r:>14.0} {:>10.1}", 1e9 / r);
    }
    println!();
    let target = |x: f64| if x >= 5.0 { "met" } else { "NOT met" };
    let (json_x, compact_x) = (m[0] / m[2], m[0] / m[3]);
    println!(
        "Tidemark / Extism (JSON input):    {json_x:>6.2}x  (target >= 5x: {})",
        target(json_x)
    );
    println!(
        "Tidemark / Extism (compact input): {compact_x:>6.2}x  (target >= 5x: {})",
        target(compact_x)
    );
    println!(
        "Tidemark / native closure:         {:>6.3}x  (native is {:.1}x faster)",
        m[0] / m[1],
        m[1] / m[0]
    );
    // Estimated: medians subtracted, not measured as such.
    let encode = median(encode_ns);
    let plugin_only = 1e9 / m[2] - encode;
    println!(
        "host-side JSON encoding alone (part of the Extism JSON figure): {encode:.0} ns/event; \
         without it, Extism JSON would be ~{plugin_only:.0} ns/event (Tidemark / that: ~{:.1}x)",
        plugin_only * m[0] / 1e9
    );
    Ok(())
}
