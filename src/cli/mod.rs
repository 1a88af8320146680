//! Command-line interface. Offline commands take `--data-dir`; commands that act on a running
//! server take `--server`.

mod bench;
mod config;
mod filter;
mod job;
mod log_tail;
mod remote;
mod replay;
mod restore;
mod snapshot;
mod state;
mod sub;
mod sync;
mod token;
mod watch;

use clap::{Parser, Subcommand};

pub use tidemark_server::args::{DataDir, LogArgs, parse_property};
pub use tidemark_server::serve::{self, ServeArgs};

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
    /// More log output (-v debug, -vv trace); TIDEMARK_LOG_LEVEL=<filter> overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// How log lines on stderr look: `text` for people, `json` (one object per line) for
    /// log collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[command(args_override_self = true)]
enum Command {
    /// Run the server: ingest API, object index, schema registry (embedded log by default).
    Serve(Box<ServeArgs>),
    /// Read the log.
    #[command(subcommand)]
    Log(LogCommand),
    /// Inspect or rebuild the object index.
    #[command(subcommand)]
    State(StateCommand),
    /// Manage subscriptions on a running server.
    #[command(subcommand)]
    Sub(sub::SubCommand),
    /// Manage WASM filters on a running server: upload versions, list, remove, test.
    #[command(subcommand)]
    Filter(filter::FilterCommand),
    /// Re-deliver the events of a time range through a subscription (a job on the server;
    /// Ctrl-C cancels it).
    Replay(replay::ReplayArgs),
    /// Restore a bucket (or a prefix) to what it was at an instant: compensating mutations
    /// appended as a job on the server; --dry-run shows the plan (Ctrl-C cancels).
    Restore(restore::RestoreArgs),
    /// Reconcile an external store (a directory or an S3 bucket) into a bucket: puts for new
    /// and changed objects, deletes for removed ones, as a job on the server; --dry-run shows
    /// the counts.
    Sync(sync::SyncArgs),
    /// Manage API tokens on a running server: create (prints the secret once), list, revoke.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Print changes of a bucket as they happen (live watch; resumes after a dropped
    /// connection without missing or repeating an event; Ctrl-C stops).
    Watch(watch::WatchArgs),
    /// Measure Tidemark on this machine (figures in docs/PERFORMANCE.md): runs the
    /// `tidemark-bench` binary beside this one (`cargo build --release -p tidemark-benches`)
    /// with the same arguments; `tidemark bench --help` lists its measurements.
    #[command(disable_help_flag = true)]
    Bench(bench::BenchArgs),
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
    /// Take an index snapshot now, into <data-dir>/snapshots (works while the server runs).
    Snapshot(snapshot::SnapshotArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Parse the command line with the config file's and the environment's settings layered in.
pub fn parse() -> anyhow::Result<Cli> {
    use clap::Parser;
    let args = config::expand(std::env::args_os().collect(), |k| std::env::var(k).ok())?;
    Ok(Cli::parse_from(args))
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(mut args) => {
            // `main` answers the compile child's argument: filters compile in children of
            // this executable, bounded in time and memory.
            args.filter_compile_in_child = true;
            serve::run(*args).await
        }
        Command::Log(LogCommand::Tail(args)) => log_tail::run(args).await,
        Command::State(StateCommand::Ls(args)) => state::ls(args).await,
        Command::State(StateCommand::Rebuild(args)) => state::rebuild(args).await,
        Command::State(StateCommand::Snapshot(args)) => snapshot::run(args).await,
        Command::Sub(cmd) => sub::run(cmd).await,
        Command::Filter(cmd) => filter::run(cmd).await,
        Command::Replay(args) => replay::run(args).await,
        Command::Restore(args) => restore::run(args).await,
        Command::Sync(args) => sync::run(args).await,
        Command::Token(cmd) => token::run(cmd).await,
        Command::Watch(args) => watch::run(args).await,
        Command::Bench(args) => bench::run(args),
    }
}
