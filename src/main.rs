//! `tidemark`: the command line. The server is the `tidemark-server` library (`server/`);
//! the measurements of docs/PERFORMANCE.md are the `tidemark-bench` binary (`benches/`).
//!
//! # Layout
//! - `cli/`: argument definitions, the config-file layering, the offline commands (`log
//!   tail`, `state ls|rebuild|snapshot`) and the commands that call a running server.

mod cli;

// glibc's allocator spent a third of the ingest path's time in malloc/free under two threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // A child `serve` started to compile one WASM filter under limits: not a command, so it
    // is answered before anything else starts (plugins/src/compile.rs).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == tidemark_plugins::compile::CHILD_ARG)
    {
        return tidemark_plugins::compile::child_main();
    }
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    init_tracing(cli.verbose, cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(verbose: u8, format: cli::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    // Not TIDEMARK_LOG: that is `--log` (the log backend) from the environment.
    let filter =
        EnvFilter::try_from_env("TIDEMARK_LOG_LEVEL").unwrap_or_else(|_| EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log on a full disk must not take the server down: reporting a failed write
        // would go through `eprintln!`, which panics when stderr cannot be written.
        .log_internal_errors(false)
        .with_target(false);
    match format {
        cli::LogFormat::Text => fmt.init(),
        // One JSON object per line, the event's fields at the top level (`subscription`,
        // `status`, ...) so collectors index them without parsing the message.
        cli::LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}
