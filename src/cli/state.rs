//! `tidemark state ls` and `tidemark state rebuild`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tidemark_core::index::ObjectIndex;
use tidemark_core::time::format_us;
use tidemark_replay::snapshot;
use tidemark_replay::state::{AsOf, AsOfReport, Clock};

use super::{DataDir, LogArgs};
use tidemark_server::node::{OpenLog, index_path, open_offline, rebuild_in_place};

#[derive(Args)]
pub struct LsArgs {
    #[command(flatten)]
    data: DataDir,
    #[command(flatten)]
    log: LogArgs,
    /// The objects as they were at this instant (RFC 3339, `-2h`, `14:00`, `now`): the events
    /// the log appended at or before it (see --time). Starts from the newest index snapshot
    /// before it and replays only the events after that; with --history, replays the whole
    /// log (snapshots hold no history). Says on stderr how it was built.
    #[arg(long, value_name = "INSTANT")]
    at: Option<String>,
    #[command(flatten)]
    time: TimeArgs,
    /// Only this bucket.
    #[arg(long)]
    bucket: Option<String>,
    /// Only keys starting with this (needs --bucket).
    #[arg(long, default_value = "", requires = "bucket")]
    prefix: String,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Include each object's history (with --json).
    #[arg(long, requires = "json")]
    history: bool,
}

/// `--time`: which clock `--at` is read on.
#[derive(Args)]
struct TimeArgs {
    /// The clock of --at: `append`, when the log appended each event (monotonic per
    /// partition and indexed, so snapshots apply), or `event`, each event's own event_time
    /// as its writer gave it (not monotonic: every event is read and no snapshot is used;
    /// each key gets its newest event, in log order, whose event_time is at or before --at).
    #[arg(long = "time", value_enum, value_name = "CLOCK", requires = "at")]
    clock: Option<ClockArg>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ClockArg {
    Append,
    Event,
}

impl TimeArgs {
    fn clock(&self) -> Clock {
        match self.clock {
            Some(ClockArg::Event) => Clock::Event,
            Some(ClockArg::Append) | None => Clock::Append,
        }
    }
}

/// `--at`: an instant in the past, in µs.
fn parse_at(at: &str) -> anyhow::Result<i64> {
    tidemark_core::time::parse_past_us(at).map_err(|e| anyhow::anyhow!("--at: {e}"))
}

pub async fn ls(args: LsArgs) -> anyhow::Result<()> {
    let Some(at) = &args.at else {
        let index = ObjectIndex::open_read_only(&index_path(&args.data.data_dir))?;
        return print(&index, &args);
    };
    let want = AsOf {
        at: parse_at(at)?,
        clock: args.time.clock(),
        snapshots: Some(snapshot::dir_of(&args.data.data_dir)),
        // History needs every event from the log start; a snapshot holds heads only.
        history: args.history,
    };
    let scratch = tempfile::tempdir().context("a scratch directory for the index at --at")?;
    let target = index_path(scratch.path());
    std::fs::create_dir_all(target.parent().expect("parent"))?;
    let report = build_at(&args.data.data_dir, &args.log, &target, &want).await?;
    eprintln!("{}", report.summary());
    let index = ObjectIndex::open_read_only(&target)?;
    print(&index, &args)
}

/// Build the index as of `want` into `target`, with a progress bar on a terminal.
async fn build_at(
    data_dir: &std::path::Path,
    log: &LogArgs,
    target: &std::path::Path,
    want: &AsOf,
) -> anyhow::Result<AsOfReport> {
    let offline = open_offline(&log.choice(), data_dir, log.schema_registry.as_deref()).await?;
    let Some(codec) = offline.codec.clone() else {
        bail!("{} has no object events", data_dir.display());
    };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("replaying {bar:40} {pos}/{len} events ({per_sec})")
            .expect("progress template"),
    );
    let report = tidemark_replay::state::index_at(
        offline.log.log.clone(),
        codec,
        target,
        want,
        |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
    )
    .await?;
    bar.finish_and_clear();
    Ok(report)
}

fn print(index: &ObjectIndex, args: &LsArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let mut after: Option<String> = None;
    loop {
        let page = index.list(
            args.bucket.as_deref(),
            &args.prefix,
            after.as_deref(),
            10_000,
        )?;
        for o in &page {
            let line = if args.json {
                let mut v = tidemark_server::http::object_json(o);
                if args.history {
                    let history = index.history(&o.bucket, &o.key)?;
                    v["history"] = history
                        .iter()
                        .map(|h| h.to_json())
                        .collect::<Vec<_>>()
                        .into();
                }
                v.to_string()
            } else {
                format!(
                    "{}/{}\t{}\t{}\t{}\tseq={}",
                    o.bucket,
                    o.key,
                    o.state.size,
                    o.state.etag.as_deref().unwrap_or("-"),
                    format_us(o.state.last_modified),
                    o.state.sequence
                )
            };
            if writeln!(out, "{line}").is_err() {
                return Ok(());
            }
        }
        match page.last() {
            Some(last) if page.len() == 10_000 => {
                after = Some(if args.bucket.is_some() {
                    last.key.clone()
                } else {
                    format!("{}/{}", last.bucket, last.key)
                });
            }
            _ => return Ok(()),
        }
    }
}

#[derive(Args)]
pub struct RebuildArgs {
    #[command(flatten)]
    data: DataDir,
    #[command(flatten)]
    log: LogArgs,
    /// Write the rebuilt index under this directory (as `<DIR>/index/objects.redb`, so
    /// `tidemark state ls --data-dir <DIR>` reads it) instead of replacing the node's index.
    /// Works while the server runs.
    #[arg(long)]
    into: Option<PathBuf>,
    /// The index as it was at this instant (RFC 3339, `-2h`, `14:00`, `now`; log append time
    /// unless --time event): replayed from the log start, so it holds each key's history too
    /// (no snapshot is used). Needs --into.
    #[arg(long, value_name = "INSTANT", requires = "into")]
    at: Option<String>,
    #[command(flatten)]
    time: TimeArgs,
}

pub async fn rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    let data_dir = &args.data.data_dir;
    if let (Some(at), Some(dir)) = (&args.at, &args.into) {
        let want = AsOf {
            at: parse_at(at)?,
            clock: args.time.clock(),
            snapshots: None,
            history: true,
        };
        let target = index_path(dir);
        std::fs::create_dir_all(target.parent().expect("parent"))
            .with_context(|| format!("create {}", dir.display()))?;
        let report = build_at(data_dir, &args.log, &target, &want).await?;
        println!(
            "rebuilt {} as of {at} ({} time) from {} events in {:.2}s",
            target.display(),
            want.clock.as_str(),
            report.replayed,
            report.elapsed.as_secs_f64()
        );
        return Ok(());
    }
    let choice = args.log.choice();
    let offline = open_offline(&choice, data_dir, args.log.schema_registry.as_deref()).await?;
    let Some(codec) = offline.codec.clone() else {
        bail!(
            "{} has no object events to rebuild from",
            data_dir.display()
        );
    };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "rebuilding {bar:40} {pos}/{len} events ({per_sec}, eta {eta})",
        )
        .expect("progress template"),
    );
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let (target, stats) = match &args.into {
        Some(dir) => {
            let target = index_path(dir);
            std::fs::create_dir_all(target.parent().expect("parent"))
                .with_context(|| format!("create {}", dir.display()))?;
            let stats = tidemark_core::rebuild::rebuild_index(
                offline.log.log.clone(),
                codec,
                &target,
                progress,
            )
            .await?;
            (target, stats)
        }
        None => {
            // Replacing the live index needs the server stopped. The embedded log's writer
            // lock also keeps one from starting during the rebuild.
            let log = match offline.log.embedded {
                Some(_) => {
                    drop(offline);
                    OpenLog::open(&choice, data_dir)
                        .context(
                            "rebuilding in place needs the server stopped (or use --into DIR)",
                        )?
                        .log
                }
                None => offline.log.log,
            };
            let target = index_path(data_dir);
            std::fs::create_dir_all(target.parent().expect("parent"))?;
            let stats = rebuild_in_place(log, codec, &target, progress).await?;
            (target, stats)
        }
    };
    bar.finish_and_clear();
    let secs = stats.elapsed.as_secs_f64();
    println!(
        "rebuilt {} from {} events in {:.2}s ({:.0} events/s){}",
        target.display(),
        stats.records,
        secs,
        stats.records as f64 / secs.max(1e-9),
        if stats.undecodable > 0 {
            format!("; {} undecodable records skipped", stats.undecodable)
        } else {
            String::new()
        }
    );
    Ok(())
}
