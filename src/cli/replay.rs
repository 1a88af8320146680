//! `tidemark replay`: re-deliver a time range through a subscription, as a job on the server.

use std::collections::BTreeMap;

use anyhow::bail;
use clap::Args;
use hyper::Method;
use serde_json::{Value, json};

use super::job;
use super::remote::{ServerArg, print_json, text};

#[derive(Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    server: ServerArg,
    /// The subscription whose current rules, filter and sink re-deliver the events.
    #[arg(long)]
    subscription: String,
    /// Start of the range, included (log append time): RFC 3339, a time today in UTC
    /// (`12:00`), or relative to now (`-2h`).
    #[arg(long, value_name = "INSTANT", allow_hyphen_values = true)]
    from: String,
    /// End of the range, excluded (default: now).
    #[arg(long, value_name = "INSTANT", allow_hyphen_values = true)]
    to: Option<String>,
    /// At most this many events per second.
    #[arg(long, value_name = "N")]
    rate: Option<f64>,
    /// Count what would be sent, per event type, and show the first events; send nothing.
    #[arg(long)]
    dry_run: bool,
    /// With --dry-run: how many of the first matching events to show.
    #[arg(long, default_value_t = 10)]
    first: usize,
    /// Print the job as JSON when it ends.
    #[arg(long)]
    json: bool,
    /// Start the job and print its id without waiting for it.
    #[arg(long)]
    detach: bool,
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let body = json!({
        "subscription": args.subscription,
        "from": args.from,
        "to": args.to,
        "rate": args.rate,
        "dry_run": args.dry_run,
        "first": args.first,
    });
    let started = args
        .server
        .call(Method::POST, "/v1/replays", Some(&body))
        .await?;
    let id = text(&started["id"]);
    if args.detach {
        println!("{id}");
        return Ok(());
    }
    eprintln!(
        "replay {id}: {} from {} to {} ({} log records)",
        args.subscription,
        text(&started["spec"]["from"]),
        text(&started["spec"]["to"]),
        started["progress"]["total"]
    );
    let done = job::follow(&args.server, &format!("/v1/replays/{id}"), "records").await?;
    if args.json {
        print_json(&done)?;
    } else if args.dry_run {
        print_dry_run(&done["result"]);
    } else {
        print_counts(&done["result"]);
    }
    eprintln!("{}", job::summary(&done, "records"));
    match done["state"].as_str() {
        Some("failed") => bail!("the replay failed: {}", text(&done["error"])),
        Some("cancelled") => bail!("the replay was cancelled; run it again to re-send the rest"),
        _ => {}
    }
    Ok(())
}

fn print_counts(r: &Value) {
    for field in [
        "delivered",
        "dead_lettered",
        "skipped",
        "filtered_out",
        "filter_failed",
        "failed_attempts",
        "lake_files",
    ] {
        if !r[field].is_null() {
            println!("{field:>16}  {}", r[field]);
        }
    }
}

fn print_dry_run(r: &Value) {
    let by_type: BTreeMap<String, Value> =
        serde_json::from_value(r["by_type"].clone()).unwrap_or_default();
    println!(
        "would send {} events ({} not matching the rules, {} filtered out)",
        r["matched"], r["skipped"], r["filtered_out"]
    );
    for (t, n) in &by_type {
        println!("{n:>10}  {t}");
    }
    if let Some(first) = r["first"].as_array().filter(|f| !f.is_empty()) {
        println!("first {}:", first.len());
        for e in first {
            println!(
                "  {}  {}  {}/{}  {}",
                text(&e["event_id"]),
                text(&e["event_type"]),
                text(&e["bucket"]),
                text(&e["key"]),
                text(&e["event_time"])
            );
        }
    }
}
