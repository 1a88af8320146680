//! The state at an instant, with and without an index snapshot: an embedded log of `--events`
//! events over `--keys` keys, an index snapshot taken at `--snapshot-at` of it, then the state
//! at the log's end built three ways: from the snapshot (`state ls --at`), by a replay of every
//! event without one, and by a replay that also writes each key's history (`--history`,
//! `state rebuild --at`). Each measurement runs in a child process (this command with the
//! hidden `--measure`), so each has its own peak memory (VmHWM), and all must build the same
//! heads, byte for byte.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use tidemark_core::OBJECTS_TOPIC;
use tidemark_core::codec::EventCodec;
use tidemark_core::event::{EventType, ObjectEvent, ObjectState, StringMap, log_key};
use tidemark_core::index::ObjectIndex;
use tidemark_core::log::embedded::{FsyncPolicy, LogConfig};
use tidemark_core::log::{Log, NewRecord, TopicSpec};
use tidemark_core::registry::SchemaRegistry;
use tidemark_core::time::now_us;
use tidemark_replay::snapshot;
use tidemark_replay::state::{AsOf, Clock, index_at};

use super::median;
use tidemark_server::node::{
    LogChoice, OpenLog, Registry, index_path, open_offline, register_schemas,
};

/// How the state is built in each measurement, and what the figures call it.
const MODES: [(&str, &str); 3] = [
    ("snapshot", "snapshot + the events after it"),
    ("full", "every event, no snapshot"),
    ("history", "every event, with history"),
];

#[derive(Args)]
pub struct StateAtArgs {
    /// Events in the log.
    #[arg(long, default_value_t = 10_000_000)]
    events: usize,
    /// Distinct keys the events touch.
    #[arg(long, default_value_t = 1_000_000)]
    keys: usize,
    /// Where the snapshot is taken, as a fraction of the events.
    #[arg(long, default_value_t = 0.9)]
    snapshot_at: f64,
    /// Measurements of each kind (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Directory for the log and the snapshot (default: a temporary one, deleted after).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Where each measurement builds its index (default: --dir). The log may live on tmpfs
    /// for space (a warm log is read from the page cache anyway); the index it writes should
    /// be on a real disk.
    #[arg(long)]
    index_dir: Option<PathBuf>,
    /// Internal: build the state once in this process (`snapshot`, `full` or `history`) and
    /// print the figures as JSON.
    #[arg(long, hide = true)]
    measure: Option<String>,
    /// Internal: the instant (µs) `--measure` builds the state at.
    #[arg(long, hide = true)]
    at: Option<i64>,
}

pub async fn run(args: StateAtArgs) -> anyhow::Result<()> {
    if let Some(mode) = &args.measure {
        let (Some(dir), Some(at)) = (&args.dir, args.at) else {
            bail!("--measure needs --dir and --at");
        };
        let index_dir = args.index_dir.as_deref().unwrap_or(dir);
        return measure_once(dir, index_dir, at, mode).await;
    }
    if !(0.0..1.0).contains(&args.snapshot_at) || args.keys == 0 || args.events < args.keys {
        bail!("needs 0 <= --snapshot-at < 1 and --events >= --keys > 0");
    }
    let temp = tempfile::tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let at = prepare(&dir, &args).await?;
    let mut figures: [Vec<Value>; 3] = Default::default();
    for run in 0..args.runs {
        for (i, mode) in MODES.iter().map(|m| m.0).enumerate() {
            let f = measure_in_child(&dir, args.index_dir.as_deref(), at, mode)?;
            println!(
                "  run {run} {mode:>8}: {:.2}s (snapshot load {:.2}s), {} events replayed, \
                 peak {} MiB",
                f["seconds"].as_f64().unwrap_or(0.0),
                f["load_seconds"].as_f64().unwrap_or(0.0),
                f["events_replayed"],
                f["peak_kib"].as_u64().unwrap_or(0) / 1024,
            );
            figures[i].push(f);
        }
    }
    let digests: Vec<_> = figures.iter().flatten().map(|f| &f["digest"]).collect();
    if digests.windows(2).any(|w| w[0] != w[1]) {
        bail!("the three ways built different heads: {digests:?}");
    }
    println!(
        "state at the end of {} events over {} keys, snapshot at {:.0}% (median of {}):",
        args.events,
        args.keys,
        args.snapshot_at * 100.0,
        args.runs
    );
    for ((_, mode), runs) in MODES.iter().zip(&figures) {
        let pick = |k: &str| median(runs.iter().map(|f| f[k].as_f64().unwrap_or(0.0)).collect());
        let (secs, replayed) = (pick("seconds"), pick("events_replayed"));
        println!(
            "  {mode}: {secs:.2}s, {replayed:.0} events replayed = {:.0} events/s \
             replayed, {:.0} events/s of log covered, peak memory {:.0} MiB",
            replayed / secs,
            args.events as f64 / secs,
            pick("peak_kib") / 1024.0
        );
    }
    println!("  identical heads all three ways: yes");
    Ok(())
}

/// Write the log and the snapshot; returns the instant to build the state at (the end).
async fn prepare(dir: &Path, args: &StateAtArgs) -> anyhow::Result<i64> {
    let config = LogConfig {
        fsync: FsyncPolicy::Interval(Duration::from_millis(100)),
        ..LogConfig::default()
    };
    let open = OpenLog::open(&LogChoice::Embedded(config), dir)?;
    let log = open.log.clone();
    log.ensure_topic(OBJECTS_TOPIC, &TopicSpec::new(4)).await?;
    let registry = Arc::new(SchemaRegistry::open(log.clone()).await?);
    let (id, _) = register_schemas(&Registry::BuiltIn(registry.clone())).await?;
    let codec = Arc::new(EventCodec::new(id, registry)?);
    let split = (args.events as f64 * args.snapshot_at) as usize;
    let mut workload = Workload::new(args.keys);
    let started = Instant::now();
    workload.append(log.as_ref(), &codec, 0..split).await?;
    let appended = started.elapsed();
    let started = Instant::now();
    let path = index_path(dir);
    std::fs::create_dir_all(path.parent().expect("parent"))?;
    tidemark_core::rebuild::rebuild_index(log.clone(), codec.clone(), &path, |_, _| {}).await?;
    let index = ObjectIndex::open(&path)?;
    let taken = snapshot::take(&index, &snapshot::dir_of(dir))?;
    let size = std::fs::metadata(&taken.path)?.len();
    // Only the snapshot is needed from here on.
    drop(index);
    std::fs::remove_file(&path)?;
    println!(
        "{split} events in {:.1}s; index rebuilt and snapshot of {} keys ({} MiB) in {:.1}s",
        appended.as_secs_f64(),
        taken.keys,
        size >> 20,
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    workload
        .append(log.as_ref(), &codec, split..args.events)
        .await?;
    open.close();
    println!(
        "{} more events in {:.1}s",
        args.events - split,
        started.elapsed().as_secs_f64()
    );
    // Every event is appended strictly before this instant.
    std::thread::sleep(Duration::from_millis(2));
    Ok(now_us())
}

fn measure_in_child(
    dir: &Path,
    index_dir: Option<&Path>,
    at: i64,
    mode: &str,
) -> anyhow::Result<Value> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe);
    child
        .args(["state-at", "--measure", mode])
        .arg("--at")
        .arg(at.to_string())
        .arg("--dir")
        .arg(dir);
    if let Some(index_dir) = index_dir {
        child.arg("--index-dir").arg(index_dir);
    }
    let out = child.output().context("run a measurement")?;
    if !out.status.success() {
        bail!(
            "measurement ({mode}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("measurement output: {stdout}"))
}

/// One measurement: build the state at `at`, then report its figures, a digest of the heads
/// built, and this process's peak resident memory.
async fn measure_once(dir: &Path, index_dir: &Path, at: i64, mode: &str) -> anyhow::Result<()> {
    let offline = open_offline(&LogChoice::Embedded(Default::default()), dir, None).await?;
    let codec = offline
        .codec
        .clone()
        .context("the bench log has no events")?;
    std::fs::create_dir_all(index_dir)?;
    let into = index_dir.join(format!("at-{}.redb", std::process::id()));
    let want = AsOf {
        at,
        clock: Clock::Append,
        snapshots: (mode == "snapshot").then(|| snapshot::dir_of(dir)),
        history: mode == "history",
    };
    let report = index_at(offline.log.log.clone(), codec, &into, &want, |_, _| {}).await?;
    let peak_kib = peak_kib()?;
    if (mode == "snapshot") != report.snapshot.is_some() {
        bail!("{mode}: {}", report.summary());
    }
    let digest = {
        use std::hash::Hasher;
        // Same binary, same keys: the parent compares digests of its children.
        let mut hasher = std::hash::DefaultHasher::new();
        let index = ObjectIndex::open_read_only(&into)?;
        index.head_rows()?.for_each(|k, row| {
            hasher.write(k.as_bytes());
            hasher.write(row);
            Ok(())
        })?;
        hasher.finish()
    };
    std::fs::remove_file(&into)?;
    let mut out = report.to_json();
    out["peak_kib"] = peak_kib.into();
    out["digest"] = json!(format!("{digest:016x}"));
    println!("{out}");
    Ok(())
}

/// VmHWM of this process: its peak resident set.
fn peak_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/self/status")
}

/// Events like production (the mix of `bench rebuild`): mostly puts, some deletes, tag and
/// metadata changes, each with the object's state before and after it.
struct Workload {
    /// Per key: sequence so far, the event number of its last put + 1 (0: absent).
    keys: Vec<(u32, u32)>,
    started: i64,
}

impl Workload {
    fn new(keys: usize) -> Workload {
        Workload {
            keys: vec![(0, 0); keys],
            started: now_us(),
        }
    }

    fn key_name(k: usize) -> String {
        format!("raw/2026/11/{:02}/img-{k:08}.jpg", k % 28 + 1)
    }

    /// The object as the put numbered `put` left it.
    fn put_state(&self, put: u32, sequence: i64) -> ObjectState {
        ObjectState {
            sequence,
            size: 1_048_576 + i64::from(put % 4096),
            etag: Some(format!("\"{put:032x}\"")),
            content_type: Some("image/jpeg".into()),
            metadata: StringMap::from([("camera".to_string(), format!("cam-{}", put % 17))]),
            last_modified: self.started + i64::from(put),
            ..ObjectState::default()
        }
    }

    fn event(&mut self, i: usize) -> ObjectEvent {
        let n = self.keys.len();
        let k = i.wrapping_mul(2_654_435_761) % n;
        let (seq, put) = self.keys[k];
        let previous = (put > 0).then(|| self.put_state(put - 1, i64::from(seq)));
        let event_type = match (put > 0, i % 10) {
            (false, _) => EventType::ObjectCreatedPut,
            (true, 0) => EventType::ObjectRemovedDelete,
            (true, 1) => EventType::ObjectTaggingPut,
            (true, 2) => EventType::ObjectMetadataUpdate,
            (true, _) => EventType::ObjectCreatedPut,
        };
        let sequence = i64::from(seq) + 1;
        let after = match event_type {
            EventType::ObjectCreatedPut => Some(self.put_state(i as u32, sequence)),
            EventType::ObjectRemovedDelete => None,
            _ => previous.clone().map(|mut s| {
                s.sequence = sequence;
                s.tags.insert("reviewed".into(), "yes".into());
                s
            }),
        };
        self.keys[k] = match event_type {
            EventType::ObjectCreatedPut => (seq + 1, i as u32 + 1),
            EventType::ObjectRemovedDelete => (seq + 1, 0),
            _ => (seq + 1, put),
        };
        let mut e = ObjectEvent::new(
            uuid::Uuid::now_v7(),
            event_type,
            now_us(),
            "photos".into(),
            Self::key_name(k),
            sequence,
            after,
        );
        e.previous = previous;
        e.node = Some("bench-node".into());
        e.requester = Some("bench".into());
        e
    }

    async fn append(
        &mut self,
        log: &dyn Log,
        codec: &EventCodec,
        range: std::ops::Range<usize>,
    ) -> anyhow::Result<()> {
        let mut pending = std::collections::VecDeque::new();
        let ids: Vec<usize> = range.collect();
        for chunk in ids.chunks(10_000) {
            let records = chunk
                .iter()
                .map(|&i| {
                    let e = self.event(i);
                    let mut value = Vec::with_capacity(512);
                    codec.encode(&e, &mut value);
                    NewRecord::new(log_key(&e.bucket, &e.key), value)
                })
                .collect();
            // A few appends in flight, as a busy ingest path has.
            pending.push_back(log.append(OBJECTS_TOPIC, records));
            if pending.len() >= 4 {
                pending.pop_front().expect("in flight").await?;
            }
        }
        for append in pending {
            append.await?;
        }
        Ok(())
    }
}
