//! `tidemark-bench`: the measurements behind docs/PERFORMANCE.md, each against a peer measured
//! in the same run (`tidemark bench ...` runs this binary). Servers are started in this
//! process from the `tidemark-server` library, exactly as `tidemark serve` runs them.
//!
//! # Layout
//! - `driver/`: one file per measurement (`ingest.rs`, `delivery.rs`, `lake.rs`, ...).

mod driver;

use clap::Parser;

// The same allocator as the `tidemark` binary, so the figures are the product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tidemark-bench",
    version,
    about = "Measure Tidemark on this machine (figures in docs/PERFORMANCE.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: driver::BenchCommand,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDEMARK_LOG_LEVEL")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(driver::run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
