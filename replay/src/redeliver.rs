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
use tidemark_sinks::delivery::Engine;

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

/// Check `req` and start its job; the job is returned at once.
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
    let job = Jobs::prepare("replay", spec);
    let replay = engine.replay(&req.subscription, &job.id, plan.ranges, req.rate)?;
    let total = replay.progress().total;
    job.set_total(total);
    let stop = job.cancelled();
    let me = job.clone();
    let work = async move {
        let replay = Arc::new(replay);
        let r = replay.clone();
        let mut task = if req.dry_run {
            let first = req.first.unwrap_or(DRY_RUN_FIRST);
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
                _ = tick.tick() => show(&me, &replay.progress()),
            }
        };
        let progress = replay.progress();
        show(&me, &progress);
        let mut result = serde_json::to_value(&progress).unwrap_or_default();
        match outcome {
            Ok(Ok(Value::Object(dry))) => {
                result.as_object_mut().expect("an object").extend(dry);
                Ok(result)
            }
            Ok(Ok(_)) => Ok(result),
            Ok(Err(e)) => Err(Error::Stopped {
                done: progress.done,
                total: progress.total,
                source: Box::new(e.into()),
            }),
            Err(e) => Err(Error::Internal(format!("the replay task failed: {e}"))),
        }
    };
    Ok(jobs.run(job, work))
}

fn show(job: &Job, p: &tidemark_sinks::delivery::ReplayProgress) {
    job.done.store(p.done, std::sync::atomic::Ordering::Relaxed);
    job.set_detail(serde_json::to_value(p).unwrap_or_default());
}
