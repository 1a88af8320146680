//! The index as of an instant, built into a scratch index.
//!
//! On append time (the default): the events appended at or before T. Append time never
//! decreases within a partition and the log indexes it, so where T ends each partition is
//! found without reading, and a snapshot taken before that point can stand in for everything
//! before it: the newest snapshot that ends at or before T in every partition (and not before
//! the log start) is chosen, only the events between it and T are replayed (keeping each key's
//! newest head), and the snapshot's heads are loaded with those in their place, each key
//! written once, in order. Without a usable snapshot, every event up to T is replayed the same
//! way. A snapshot holds heads but no history, so a caller that wants each key's history asks
//! for it: that is a replay from the log start that also writes the history.
//!
//! On event time: the events whose `event_time` is at or before T, applied in log order per
//! key. Event time is whatever the writer said (a backfill may carry last week's times), so it
//! does not grow along the log: every event has to be read, and no snapshot can stand in for
//! a prefix of the log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tidemark_core::codec::EventCodec;
use tidemark_core::log::{Log, OffsetRange};
use tidemark_core::rebuild::{Replay, create_scratch, log_ranges, replay_heads, replay_into};
use tidemark_core::time::format_us;

use crate::snapshot::{self, Snapshot, offsets_json};
use crate::{Error, Result};

/// Which clock an instant is read on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clock {
    /// When the log appended the event: monotonic per partition, indexed.
    #[default]
    Append,
    /// The event's own `event_time`.
    Event,
}

impl Clock {
    /// `append` or `event`; anything else is refused naming `field`.
    pub fn parse(field: &str, text: &str) -> Result<Clock> {
        match text {
            "append" => Ok(Clock::Append),
            "event" => Ok(Clock::Event),
            other => Err(Error::invalid(
                field,
                format!(
                    "'{other}' is not a clock; use append (log append time, the default) or \
                     event (each event's event_time)"
                ),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Clock::Append => "append",
            Clock::Event => "event",
        }
    }
}

/// What state is wanted, and what may be used to build it.
#[derive(Debug, Clone)]
pub struct AsOf {
    /// The instant (µs).
    pub at: i64,
    pub clock: Clock,
    /// Where snapshots are (`None`: use none).
    pub snapshots: Option<PathBuf>,
    /// Keep each key's history too: a replay from the log start, no snapshot.
    pub history: bool,
}

/// How the index at an instant was built.
#[derive(Debug, Clone)]
pub struct AsOfReport {
    pub at: i64,
    pub clock: Clock,
    /// The snapshot loaded, if one was.
    pub snapshot: Option<Snapshot>,
    /// Snapshots passed over because they were damaged, and why.
    pub skipped: Vec<String>,
    /// Per partition: offsets replayed (`start..end`).
    pub replayed_ranges: BTreeMap<u32, OffsetRange>,
    /// Records read from the log.
    pub replayed: u64,
    /// Whether the index holds each key's history.
    pub history: bool,
    /// Of `elapsed`, the time spent loading snapshots merged with the newer heads (damaged
    /// ones included).
    pub loading: Duration,
    pub elapsed: Duration,
}

impl AsOfReport {
    pub fn to_json(&self) -> Value {
        let ranges = &self.replayed_ranges;
        let from = ranges.iter().map(|(p, r)| (*p, r.start)).collect();
        let to = ranges.iter().map(|(p, r)| (*p, r.end)).collect();
        json!({
            "at": format_us(self.at),
            "time": self.clock.as_str(),
            "snapshot": self.snapshot.as_ref().map(Snapshot::to_json),
            "skipped_snapshots": self.skipped,
            "replayed_from": offsets_json(&from),
            "replayed_to": offsets_json(&to),
            "events_replayed": self.replayed,
            "history": self.history,
            "load_seconds": self.loading.as_secs_f64(),
            "seconds": self.elapsed.as_secs_f64(),
        })
    }

    /// One line for a terminal.
    pub fn summary(&self) -> String {
        let how = match &self.snapshot {
            Some(s) => format!(
                "snapshot {} (taken {}, {} keys) + {} events replayed",
                s.path.display(),
                format_us(s.taken_at),
                s.keys,
                self.replayed
            ),
            None if self.history => {
                format!("full replay of {} events, with history", self.replayed)
            }
            None => format!("full replay of {} events", self.replayed),
        };
        format!(
            "state at {} ({} time): {how} in {:.2}s",
            format_us(self.at),
            self.clock.as_str(),
            self.elapsed.as_secs_f64()
        )
    }
}

/// Build the index as of `want` into `into` (a path that must not exist).
/// `progress(done, total)` follows the replay.
pub async fn index_at(
    log: Arc<dyn Log>,
    codec: Arc<EventCodec>,
    into: &Path,
    want: &AsOf,
    mut progress: impl FnMut(u64, u64),
) -> Result<AsOfReport> {
    let started = Instant::now();
    let (ranges, event_time_until) = match want.clock {
        Clock::Append => (log_ranges(log.as_ref(), Some(want.at)).await?, None),
        Clock::Event => (log_ranges(log.as_ref(), None).await?, Some(want.at)),
    };
    let mut report = AsOfReport {
        at: want.at,
        clock: want.clock,
        snapshot: None,
        skipped: Vec::new(),
        replayed_ranges: ranges.iter().copied().collect(),
        replayed: 0,
        history: want.history,
        loading: Duration::ZERO,
        elapsed: Duration::ZERO,
    };
    let replay = Replay {
        ranges,
        event_time_until,
    };
    if want.history {
        let index = Arc::new(create_scratch(into)?);
        report.replayed = replay_into(log, codec, index, replay, progress)
            .await?
            .records;
    } else {
        let from_snapshot = match (&want.snapshots, want.clock) {
            (Some(dir), Clock::Append) => {
                let (log, codec) = (log.clone(), codec.clone());
                from_snapshot(
                    log,
                    codec,
                    dir,
                    &replay.ranges,
                    into,
                    &mut report,
                    &mut progress,
                )
                .await?
            }
            _ => false,
        };
        if !from_snapshot {
            // Heads only: each key written once, in order, and no history to write.
            let mut heads = replay_heads(log, codec, replay, progress).await?;
            report.replayed = heads.stats.records;
            let target = into.to_path_buf();
            tidemark_core::blocking::blocking(move || {
                let rows = heads.rows()?;
                create_scratch(&target)?.load_head_rows(&heads.applied, rows)
            })
            .await?;
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Build into `into` from the newest snapshot of `dir` that ends within `ranges` in every
/// partition, plus the events after it; false if there is none. A snapshot that turns out
/// damaged is noted in the report, its partial index deleted, and the next one tried.
async fn from_snapshot(
    log: Arc<dyn Log>,
    codec: Arc<EventCodec>,
    dir: &Path,
    ranges: &[(u32, OffsetRange)],
    into: &Path,
    report: &mut AsOfReport,
    mut progress: impl FnMut(u64, u64),
) -> Result<bool> {
    let (found, damaged) = snapshot::list(dir)?;
    for warning in damaged {
        tracing::warn!("{warning}");
        report.skipped.push(warning);
    }
    let starts: u64 = ranges.iter().map(|(_, r)| r.start).sum();
    for candidate in found {
        // Past T somewhere, or no longer matching the log, or no help: not this one.
        if snapshot::mismatch(&candidate, ranges).is_some() || candidate.covered() <= starts {
            continue;
        }
        let after: Vec<_> = ranges
            .iter()
            .map(|(p, r)| {
                let start = candidate.offset(*p);
                (*p, OffsetRange { start, end: r.end })
            })
            .collect();
        let replay = Replay {
            ranges: after.clone(),
            event_time_until: None,
        };
        let mut newer = replay_heads(log.clone(), codec.clone(), replay, &mut progress).await?;
        let mut applied = candidate.applied.clone();
        applied.extend(&newer.applied);
        let replayed = newer.stats.records;
        let loading = Instant::now();
        let (snap, target) = (candidate.clone(), into.to_path_buf());
        let loaded = tidemark_core::blocking::blocking(move || {
            let index = create_scratch(&target)?;
            Ok(snapshot::load_merged(
                &snap,
                newer.rows()?,
                &applied,
                &index,
            ))
        })
        .await?;
        report.loading += loading.elapsed();
        match loaded {
            Ok(_) => {
                report.snapshot = Some(candidate);
                report.replayed_ranges = after.into_iter().collect();
                report.replayed = replayed;
                return Ok(true);
            }
            Err(e) => {
                // Deleted since the listing (a newer one replaced it): no damage to report.
                if !is_not_found(&e) {
                    let warning = format!("ignoring damaged snapshot: {e}");
                    tracing::warn!("{warning}");
                    report.skipped.push(warning);
                }
                std::fs::remove_file(into)
                    .map_err(|e| tidemark_core::Error::io("delete", into, e))?;
            }
        }
    }
    Ok(false)
}

fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Core(tidemark_core::Error::Io { source, .. })
        if source.kind() == std::io::ErrorKind::NotFound)
}
