//! Command-line interface. Offline commands take `--data-dir`; commands that act on a running
//! server take `--server`.

mod log_tail;
pub mod serve;
mod state;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use serve::ServeArgs;

#[derive(Parser)]
#[command(
    name = "tidemark",
    version,
    about = "Event-sourced change-data-capture for object storage",
    long_about = "Tidemark records every object-storage mutation as a versioned Avro event in a \
                  durable log, materializes an object index from it, and can rebuild that \
                  index from the log at any time."
)]
pub struct Cli {
    /// More log output (-v debug, -vv trace); TIDEMARK_LOG=<filter> overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: ingest API, object index, schema registry (embedded log by default).
    Serve(ServeArgs),
    /// Read the log.
    #[command(subcommand)]
    Log(LogCommand),
    /// Inspect or rebuild the object index.
    #[command(subcommand)]
    State(StateCommand),
    /// Measure Tidemark on this machine (figures in docs/PERFORMANCE.md).
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
}

#[derive(Subcommand)]
enum LogCommand {
    /// Print events from the log, decoded (works while the server runs).
    Tail(log_tail::TailArgs),
}

#[derive(Subcommand)]
enum StateCommand {
    /// List objects in the index (works while the server runs).
    Ls(state::LsArgs),
    /// Rebuild the object index from the log.
    Rebuild(state::RebuildArgs),
}

/// `--data-dir`, shared by every offline command.
#[derive(clap::Args, Clone)]
pub struct DataDir {
    /// Data directory of a Tidemark node.
    #[arg(long, default_value = "./tidemark-data", env = "TIDEMARK_DATA_DIR")]
    pub data_dir: PathBuf,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Log(LogCommand::Tail(args)) => log_tail::run(args).await,
        Command::State(StateCommand::Ls(args)) => state::ls(args),
        Command::State(StateCommand::Rebuild(args)) => state::rebuild(args).await,
        Command::Bench(cmd) => crate::bench::run(cmd).await,
    }
}
