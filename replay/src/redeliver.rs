//! `tidemark replay` / `POST /v1/replays`: re-send the events appended in `[from, to)` through
//! a subscription's current rules, filter and sink, as a job beside the live delivery.
//!
//! Times are log append times (monotonic per partition, and indexed), so the range is one
//! offset range per partition, found with the time index. The events keep their ids (the
//! idempotency key) and carry the job id as a replay marker; see `tidemark_sinks::delivery::
//! replay` for the delivery itself.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tidemark_core::OBJECTS_TOPIC;
use tidemark_core::log::Log;
use tidemark_core::time::{format_us, now_us, parse_past_us};
use tidemark_sinks::delivery::{Engine, Replay};

use crate::jobs::{Job, Jobs};
use crate::{Error, Result};

/// Matching events shown by a dry run unless asked otherwise.
const DRY_RUN_FIRST: usize = 10;

/// The body of `POST /v1/replays`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    pub subscription: String,
    /// Start of the range (included): RFC 3339, `-2h`, `14:00`.
    pub from: String,
    /// End of the range (excluded); now when absent.
    #[serde(default)]
    pub to: Option<String>,
    /// At most this many events per second.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Count what would be sent, send nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// With `dry_run`: how many of the first matching events to show.
    #[serde(default)]
    pub first: Option<usize>,
}

/// A checked request: the instants and the offset range of every partition.
pub struct Plan {
    pub from: i64,
    pub to: i64,
    pub ranges: BTreeMap<u32, Range<u64>>,
}

impl Plan {
    fn ranges_json(&self) -> Value {
        self.ranges
            .iter()
            .map(|(p, r)| (p.to_string(), json!([r.start, r.end])))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

/// Check `req` against the subscriptions and the log; every error names its field.
pub async fn plan(engine: &Engine, log: &dyn Log, req: &ReplayRequest) -> Result<Plan> {
    engine
        .subscriptions
        .get(&req.subscription)
        .map_err(|e| match e {
            tidemark_sinks::Error::NotFound(m) => Error::NotFound(m),
            other => other.into(),
        })?;
    let from = parse_past_us(&req.from).map_err(|m| Error::invalid("from", m))?;
    let to = match &req.to {
        Some(t) => parse_past_us(t).map_err(|m| Error::invalid("to", m))?,
        None => now_us(),
    };
    if from >= to {
        return Err(Error::invalid(
            "from",
            format!(
                "{} is not before the end of the range ({}); the range is [from, to)",
                format_us(from),
                format_us(to)
            ),
        ));
    }
    if let Some(rate) = req.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        return Err(Error::invalid(
            "rate",
            format!("{rate} is not a positive number of events per second"),
        ));
    }
    let mut ranges = BTreeMap::new();
    for p in 0..log.partitions(OBJECTS_TOPIC)? {
        let held = log.offsets(OBJECTS_TOPIC, p).await?;
        let start = log.offset_for_time(OBJECTS_TOPIC, p, from).await?;
        let end = log.offset_for_time(OBJECTS_TOPIC, p, to).await?;
        // Events at or after `from` may have been removed by retention: refuse rather than
        // re-deliver a range with a hole at its start.
        if held.start > 0 && held.end > held.start && start <= held.start {
            let oldest = log
                .read(OBJECTS_TOPIC, p, held.start, 1, Duration::ZERO)
                .await?
                .first()
                .map(|r| format_us(r.timestamp))
                .unwrap_or_default();
            return Err(Error::invalid(
                "from",
                format!(
                    "{} is before the oldest event the log still holds (partition {p} starts \
                     at offset {}, appended at {oldest}); choose a later instant",
                    format_us(from),
                    held.start
                ),
            ));
        }
        ranges.insert(p, start..end.max(start));
    }
    Ok(Plan { from, to, ranges })
}

/// Check `req` and start its job (recorded in `_config` first); the job is returned at once.
pub async fn start(
    engine: &Arc<Engine>,
    log: &dyn Log,
    jobs: &Jobs,
    req: ReplayRequest,
) -> Result<Arc<Job>> {
    let plan = plan(engine, log, &req).await?;
    let spec = json!({
        "subscription": req.subscription,
        "from": format_us(plan.from),
        "to": format_us(plan.to),
        "rate": req.rate,
        "dry_run": req.dry_run,
        "ranges": plan.ranges_json(),
    });
    let job = jobs.prepare(KIND, spec, json!({"first": req.first}));
    job.set_total(plan.ranges.values().map(|r| r.end - r.start).sum());
    let work = run(engine.clone(), job.clone());
    jobs.start(job, work).await
}

/// The work of replay `job`, from its spec and its checkpoint: a first run, or the rest of
/// one another process began (each partition from the position it had recorded: what was
/// in flight then is sent again, so receivers see every event at least once). A dry run
/// starts over.
pub async fn run(engine: Arc<Engine>, job: Arc<Job>) -> Result<Value> {
    let spec = Resumable::of(&job)?;
    let base = match (spec.dry_run, job.checkpoint()) {
        (false, Some(c)) => Checkpoint::parse(&c),
        _ => Checkpoint::default(),
    };
    let ranges: BTreeMap<u32, Range<u64>> = spec
        .ranges
        .iter()
        .map(|(p, r)| {
            let from = base
                .positions
                .get(p)
                .map_or(r.start, |at| (*at).clamp(r.start, r.end));
            (*p, from..r.end)
        })
        .collect();
    let replay = Arc::new(engine.replay(&spec.subscription, &job.id, ranges, spec.rate)?);
    job.set_total(spec.total());
    let r = replay.clone();
    let stop = job.cancelled();
    let mut task = if spec.dry_run {
        let first = spec.first.unwrap_or(DRY_RUN_FIRST);
        tokio::spawn(async move {
            let dry = r.dry_run(stop, first).await;
            Ok(serde_json::to_value(dry).unwrap_or_default())
        })
    } else {
        tokio::spawn(async move { r.run(stop).await.map(|()| Value::Null) })
    };
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let outcome = loop {
        tokio::select! {
            done = &mut task => break done,
            _ = tick.tick() => {
                show(&job, &spec, &replay, &base);
            }
        }
    };
    let mut result = show(&job, &spec, &replay, &base);
    let done = result["done"].as_u64().unwrap_or(0);
    match outcome {
        Ok(Ok(Value::Object(dry))) => {
            result.as_object_mut().expect("an object").extend(dry);
            Ok(result)
        }
        Ok(Ok(_)) => Ok(result),
        Ok(Err(e)) => Err(Error::Stopped {
            done,
            total: spec.total(),
            source: Box::new(e.into()),
        }),
        Err(e) => Err(Error::Internal(format!("the replay task failed: {e}"))),
    }
}

const KIND: &str = "replay";
/// The counters of [`tidemark_sinks::delivery::ReplayProgress`] that add up across runs.
const COUNTERS: [&str; 7] = [
    "delivered",
    "dead_lettered",
    "skipped",
    "filtered_out",
    "filter_failed",
    "failed_attempts",
    "lake_files",
];

/// What a replay job needs to run, read back from its record.
struct Resumable {
    subscription: String,
    rate: Option<f64>,
    dry_run: bool,
    first: Option<usize>,
    ranges: BTreeMap<u32, Range<u64>>,
}

impl Resumable {
    fn of(job: &Job) -> Result<Resumable> {
        let s = &job.spec;
        let bad = || Error::Internal(format!("replay {} has a damaged spec: {s}", job.id));
        let ranges = s["ranges"]
            .as_object()
            .ok_or_else(bad)?
            .iter()
            .map(|(p, r)| {
                let p = p.parse::<u32>().ok()?;
                Some((p, r[0].as_u64()?..r[1].as_u64()?))
            })
            .collect::<Option<BTreeMap<_, _>>>()
            .ok_or_else(bad)?;
        Ok(Resumable {
            subscription: s["subscription"].as_str().ok_or_else(bad)?.to_string(),
            rate: s["rate"].as_f64(),
            dry_run: s["dry_run"].as_bool().unwrap_or(false),
            first: job.private["first"].as_u64().map(|n| n as usize),
            ranges,
        })
    }

    fn total(&self) -> u64 {
        self.ranges.values().map(|r| r.end - r.start).sum()
    }
}

/// Where a replay resumes: per partition, the offset before which everything is done; and
/// the counters of the runs before.
#[derive(Default)]
struct Checkpoint {
    positions: BTreeMap<u32, u64>,
    counts: serde_json::Map<String, Value>,
}

impl Checkpoint {
    fn parse(v: &Value) -> Checkpoint {
        let positions = v["positions"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(p, at)| Some((p.parse().ok()?, at.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        Checkpoint {
            positions,
            counts: v["counts"].as_object().cloned().unwrap_or_default(),
        }
    }
}

/// Show where `replay` is (counting the runs before it), and report it as the job's
/// checkpoint; returns the counters shown.
fn show(job: &Job, spec: &Resumable, replay: &Replay, base: &Checkpoint) -> Value {
    let mut detail = serde_json::to_value(replay.progress()).unwrap_or_default();
    let mut positions = base.positions.clone();
    positions.extend(replay.positions());
    let mut counts = serde_json::Map::new();
    for name in COUNTERS {
        let before = base.counts.get(name).and_then(Value::as_u64);
        let now = detail[name].as_u64();
        if before.is_some() || now.is_some() {
            let sum = before.unwrap_or(0) + now.unwrap_or(0);
            detail[name] = sum.into();
            counts.insert(name.into(), sum.into());
        }
    }
    // Records gone through: up to each partition's position before this run, plus this run's.
    let earlier: u64 = spec
        .ranges
        .iter()
        .map(|(p, r)| {
            base.positions
                .get(p)
                .map_or(0, |at| at.clamp(&r.start, &r.end) - r.start)
        })
        .sum();
    let done = earlier + detail["done"].as_u64().unwrap_or(0);
    detail["done"] = done.into();
    detail["total"] = spec.total().into();
    job.done.store(done, std::sync::atomic::Ordering::Relaxed);
    job.set_detail(detail.clone());
    if !spec.dry_run {
        let positions: serde_json::Map<String, Value> = positions
            .iter()
            .map(|(p, at)| (p.to_string(), json!(at)))
            .collect();
        job.set_checkpoint(json!({"positions": positions, "counts": counts}));
    }
    detail
}
