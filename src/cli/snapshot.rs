//! `tidemark state snapshot`: an index snapshot on demand, read from the node's index while
//! its server keeps running (the server takes them periodically too, see
//! `serve --snapshot-every-events`).

use anyhow::Context;
use clap::Args;
use tidemark_core::index::ObjectIndex;
use tidemark_core::time::format_us;
use tidemark_replay::snapshot;

use super::{DataDir, LogArgs};
use tidemark_server::node::{OpenLog, index_path};

#[derive(Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    data: DataDir,
    #[command(flatten)]
    log: LogArgs,
    /// Snapshots kept afterwards (the newest); older ones, and ones the log no longer
    /// matches (before its start after retention), are deleted.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
    keep: u64,
}

pub async fn run(args: SnapshotArgs) -> anyhow::Result<()> {
    let data_dir = &args.data.data_dir;
    let index = ObjectIndex::open_read_only(&index_path(data_dir))?;
    let dir = snapshot::dir_of(data_dir);
    let into = dir.clone();
    let taken = tokio::task::spawn_blocking(move || snapshot::take(&index, &into))
        .await
        .context("snapshot task")??;
    let offsets: Vec<String> = taken
        .applied
        .iter()
        .map(|(p, o)| format!("{p}:{o}"))
        .collect();
    println!(
        "snapshot {}: {} keys, offsets {}, taken {}",
        taken.path.display(),
        taken.keys,
        offsets.join(","),
        format_us(taken.taken_at)
    );
    let log = OpenLog::open_read_only(&args.log.choice(), data_dir)?;
    let ranges = snapshot::log_offsets(log.log.as_ref()).await?;
    let keep = args.keep as usize;
    let deleted = tokio::task::spawn_blocking(move || snapshot::prune(&dir, keep, &ranges))
        .await
        .context("snapshot task")??;
    for (path, why) in deleted {
        println!("deleted {}: {why}", path.display());
    }
    Ok(())
}
