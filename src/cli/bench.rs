//! `tidemark bench ...`: the measurements live in their own binary, `tidemark-bench` (the
//! `benches` crate), so the product binary carries no load generators. This runs it from
//! beside the running `tidemark` (the same target directory), passing every argument on.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// The measurement and its flags (`tidemark bench ingest --connections 8`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

/// `tidemark-bench` next to this executable, else on `PATH`.
fn driver() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|me| me.parent().map(|d| d.join("tidemark-bench")))
        .filter(|p| p.is_file());
    beside.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("tidemark-bench"))
                .find(|p| p.is_file())
        })
    })
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let Some(driver) = driver() else {
        anyhow::bail!(
            "the measurements are the tidemark-bench binary, which is not built: run `cargo \
             build --release -p tidemark-benches` (it lands beside tidemark) and try again"
        );
    };
    let status = std::process::Command::new(&driver)
        .args(&args.args)
        .status()
        .with_context(|| format!("run {}", driver.display()))?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}
