//! `tidemark filter upload|ls|rm|test`: WASM filters on a running server.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{Value, json};

use super::remote::{ServerArg, print_json, text};

#[derive(Subcommand)]
pub enum FilterCommand {
    /// Upload a .wasm module as the next version of a filter (checked and compiled first).
    Upload(UploadArgs),
    /// List filters, or one filter's versions.
    Ls(ListArgs),
    /// Delete a filter (every version) or one version, `NAME@VERSION`; refused while a
    /// subscription needs it.
    Rm(RmArgs),
    /// Run a filter on sample events (--events FILE.jsonl) or on events of the log
    /// (--since T, --last N), and print each verdict and the match rate. Nothing is delivered.
    Test(TestArgs),
}

#[derive(Args)]
pub struct UploadArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Filter name (1-100 characters from [A-Za-z0-9._-]).
    name: String,
    /// The module: a binary .wasm file (`-` for stdin), or WebAssembly text (.wat), which is
    /// assembled here first.
    file: PathBuf,
    /// Linear memory limit in bytes (default 16 MiB).
    #[arg(long)]
    memory_bytes: Option<usize>,
    /// Fuel per event (about one unit per instruction; default 10,000,000).
    #[arg(long)]
    fuel: Option<u64>,
    /// Wall-clock limit per event in milliseconds (default 10).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Print the server's answer as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Show this filter's versions.
    name: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RmArgs {
    #[command(flatten)]
    server: ServerArg,
    /// `NAME` or `NAME@VERSION`.
    reference: String,
}

#[derive(Args)]
pub struct TestArgs {
    #[command(flatten)]
    server: ServerArg,
    /// `NAME` (latest version) or `NAME@VERSION`.
    reference: String,
    /// Sample events, one JSON event per line (the `log tail --json` form); `-` for stdin.
    #[arg(long, value_name = "FILE.jsonl", conflicts_with_all = ["since", "last"])]
    events: Option<PathBuf>,
    /// Test on events appended to the log at or after this RFC 3339 instant.
    #[arg(long, value_name = "RFC3339", conflicts_with = "last")]
    since: Option<String>,
    /// Test on the newest N events of the log.
    #[arg(long, value_name = "N")]
    last: Option<usize>,
    /// At most this many events from the log.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// Parameters for the filter's init, as JSON.
    #[arg(long, value_name = "JSON")]
    params: Option<String>,
    /// Per-event lines printed (the totals cover every event).
    #[arg(long, default_value_t = 50)]
    show: usize,
    /// The whole test stops after this long and prints what it did (server default 10 s,
    /// at most 60 s).
    #[arg(long, value_name = "MS")]
    deadline_ms: Option<u64>,
    #[arg(long)]
    json: bool,
}

/// Events one test evaluates at most (the server's cap): lines past it are not read.
const MAX_TEST_EVENTS: usize = 100_000;

pub async fn run(cmd: FilterCommand) -> anyhow::Result<()> {
    match cmd {
        FilterCommand::Upload(args) => upload(args).await,
        FilterCommand::Ls(args) => list(args).await,
        FilterCommand::Rm(args) => {
            let path = format!("/v1/filters/{}", args.reference);
            let v = args.server.call(Method::DELETE, &path, None).await?;
            println!(
                "deleted filter {} (versions {})",
                text(&v["name"]),
                text(&v["deleted_versions"])
            );
            Ok(())
        }
        FilterCommand::Test(args) => test(args).await,
    }
}

fn read_input(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
        return Ok(buf);
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

async fn upload(args: UploadArgs) -> anyhow::Result<()> {
    let mut bytes = read_input(&args.file)?;
    if args.file.extension().is_some_and(|e| e == "wat") {
        bytes = wat::parse_bytes(&bytes)
            .with_context(|| format!("{} is not valid WebAssembly text", args.file.display()))?
            .into_owned();
    }
    let mut query = Vec::new();
    if let Some(m) = args.memory_bytes {
        query.push(format!("memory_bytes={m}"));
    }
    if let Some(f) = args.fuel {
        query.push(format!("fuel={f}"));
    }
    if let Some(t) = args.timeout_ms {
        query.push(format!("timeout_ms={t}"));
    }
    let mut path = format!("/v1/filters/{}", args.name);
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let v = args
        .server
        .send(Method::POST, &path, bytes.into(), "application/wasm")
        .await
        .with_context(|| format!("uploading {}", args.file.display()))?;
    if args.json {
        return print_json(&v);
    }
    let what = if v["created"] == json!(true) {
        "uploaded"
    } else {
        "unchanged (same module and limits as the latest version):"
    };
    println!(
        "{what} {} ({} bytes, sha256 {})",
        text(&v["reference"]),
        text(&v["size"]),
        text(&v["sha256"])
    );
    let collected = list_text(&v["collected_versions"]);
    if collected != "-" {
        println!(
            "deleted unused versions {collected} of {} (the server keeps at most \
             --filter-max-versions live versions)",
            args.name
        );
    }
    Ok(())
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let Some(name) = args.name else {
        let v = args.server.call(Method::GET, "/v1/filters", None).await?;
        if args.json {
            return print_json(&v);
        }
        println!(
            "{:<24} {:<7} {:<9} {:<27} USED BY",
            "NAME", "LATEST", "SIZE", "UPLOADED"
        );
        for f in v["filters"].as_array().into_iter().flatten() {
            println!(
                "{:<24} {:<7} {:<9} {:<27} {}",
                text(&f["name"]),
                text(&f["latest"]),
                text(&f["size"]),
                text(&f["uploaded_at"]),
                list_text(&f["used_by"])
            );
        }
        return Ok(());
    };
    let v = args
        .server
        .call(Method::GET, &format!("/v1/filters/{name}"), None)
        .await?;
    if args.json {
        return print_json(&v);
    }
    println!(
        "{:<8} {:<8} {:<9} {:<14} {:<27} {:<20} USED BY",
        "VERSION", "STATE", "SIZE", "SHA256", "UPLOADED", "BY"
    );
    for ver in v["versions"].as_array().into_iter().flatten() {
        let sha = text(&ver["sha256"]);
        println!(
            "{:<8} {:<8} {:<9} {:<14} {:<27} {:<20} {}",
            text(&ver["version"]),
            text(&ver["state"]),
            text(&ver["size"]),
            &sha[..sha.len().min(12)],
            text(&ver["uploaded_at"]),
            text(&ver["uploaded_by"]),
            list_text(&ver["used_by"])
        );
    }
    Ok(())
}

/// Sample events from a JSON-lines file, read as far as the cap; every bad line is named by
/// its number. True when the file holds more than the cap.
fn read_events(path: &PathBuf) -> anyhow::Result<(Vec<Value>, bool)> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut events = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        if events.len() == MAX_TEST_EVENTS {
            return Ok((events, true));
        }
        let v: Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        events.push(v);
    }
    if events.is_empty() {
        bail!(
            "{} holds no events (one JSON event per line)",
            path.display()
        );
    }
    Ok((events, false))
}

async fn test(args: TestArgs) -> anyhow::Result<()> {
    let mut body = json!({ "max_results": args.show });
    if let Some(ms) = args.deadline_ms {
        body["deadline_ms"] = ms.into();
    }
    // Said after the results: the file was longer than one test evaluates.
    let mut capped = None;
    match (&args.events, &args.since, args.last) {
        (Some(file), ..) => {
            let (events, more) = read_events(file)?;
            if more {
                capped = Some(format!(
                    "stopped at the cap of {MAX_TEST_EVENTS} events per test: {} holds more, \
                     and only the first {MAX_TEST_EVENTS} were tested",
                    file.display()
                ));
            }
            body["events"] = events.into();
        }
        (None, Some(since), _) => {
            body["since"] = since.clone().into();
            body["limit"] = args.limit.into();
        }
        (None, None, Some(last)) => body["last"] = last.into(),
        (None, None, None) => bail!("give --events FILE.jsonl, --since RFC3339 or --last N"),
    }
    if let Some(p) = &args.params {
        body["params"] =
            serde_json::from_str(p).context("--params: not JSON (e.g. '{\"prefix\":\"raw/\"}')")?;
    }
    let path = format!("/v1/filters/{}/test", args.reference);
    let v = args.server.call(Method::POST, &path, Some(&body)).await?;
    if args.json {
        if let Some(message) = &capped {
            eprintln!("incomplete: {message}");
        }
        return print_json(&v);
    }
    for r in v["results"].as_array().into_iter().flatten() {
        let verdict = match r["verdict"].as_str() {
            Some("error") => format!("error ({})", text(&r["error"])),
            other => other.unwrap_or("-").to_string(),
        };
        println!(
            "{:<6} {}/{}  {}  fuel {}  {} µs",
            text(&r["index"]),
            text(&r["bucket"]),
            text(&r["key"]),
            verdict,
            text(&r["fuel"]),
            text(&r["time_us"])
        );
        for line in r["logs"].as_array().into_iter().flatten() {
            println!("       log: {}", text(line));
        }
    }
    if v["results_truncated"] == json!(true) {
        println!("       ... (--show N prints more)");
    }
    let n = v["evaluated"].as_u64().unwrap_or(0);
    println!(
        "{}@{}: {n} events, {} kept, {} dropped, {} errors; match rate {:.1}%",
        text(&v["filter"]),
        text(&v["version"]),
        text(&v["kept"]),
        text(&v["dropped"]),
        text(&v["errors"]),
        v["match_rate"].as_f64().unwrap_or(0.0) * 100.0
    );
    if let Some(t) = v["time_us"].as_object() {
        println!(
            "time per event: median {} µs, p99 {} µs; fuel median {}",
            text(&t["median"]),
            text(&t["p99"]),
            text(&v["fuel"]["median"])
        );
    }
    for message in v["stopped"]["message"]
        .as_str()
        .into_iter()
        .chain(capped.as_deref())
    {
        println!("incomplete: {message}");
    }
    Ok(())
}

fn list_text(v: &Value) -> String {
    let items: Vec<String> = v.as_array().into_iter().flatten().map(text).collect();
    if items.is_empty() {
        "-".into()
    } else {
        items.join(",")
    }
}
