//! `tidemark sub create|ls|status|rm|dead-letters|redrive`: subscriptions on a running server.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{Value, json};

use super::remote::{ServerArg, print_json, text};

#[derive(Subcommand)]
pub enum SubCommand {
    /// Create a subscription: from a JSON spec (--spec, as POST /v1/subscriptions takes), or
    /// a webhook from flags (--url and the rule flags), or both (flags win).
    Create(Box<CreateArgs>),
    /// List subscriptions.
    Ls(ListArgs),
    /// Delivery status: position, lag, counts, circuit, last error.
    Status(NameArgs),
    /// Remove a subscription (and its dead letters).
    Rm(NameArgs),
    /// List a subscription's dead letters, oldest first, a page at a time.
    DeadLetters(DeadLetterArgs),
    /// Deliver dead letters again (all, or those given with --id).
    Redrive(RedriveArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Subscription name (1-100 characters from [A-Za-z0-9._-]).
    name: Option<String>,
    /// A JSON spec file (`-` for stdin); see PRODUCT.md for the fields.
    #[arg(long, value_name = "FILE")]
    spec: Option<PathBuf>,
    /// Webhook URL.
    #[arg(long)]
    url: Option<String>,
    /// Payload format: s3, cloudevents-binary, cloudevents-structured, avro.
    #[arg(long)]
    format: Option<String>,
    /// Standard Webhooks secret (`whsec_…`) or a reference (`env:NAME`, `file:PATH`).
    #[arg(long)]
    secret: Option<String>,
    /// Where delivery starts: latest, earliest or an RFC 3339 instant.
    #[arg(long)]
    start: Option<String>,
    /// Event types (repeatable), e.g. `ObjectCreated:*`.
    #[arg(long = "event", value_name = "TYPE")]
    events: Vec<String>,
    /// Buckets (repeatable).
    #[arg(long = "bucket")]
    buckets: Vec<String>,
    /// Key prefixes (repeatable).
    #[arg(long = "prefix")]
    prefixes: Vec<String>,
    /// Key suffixes (repeatable).
    #[arg(long = "suffix")]
    suffixes: Vec<String>,
    /// Smallest object size in bytes.
    #[arg(long)]
    min_size: Option<i64>,
    /// Largest object size in bytes.
    #[arg(long)]
    max_size: Option<i64>,
    /// Metadata that must equal, `name=value` (repeatable).
    #[arg(long = "metadata", value_parser = super::parse_property)]
    metadata: Vec<(String, String)>,
    /// Attempts per event before it goes to the dead-letter queue.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// A WASM filter run after the rules: `NAME` (follows its latest version) or
    /// `NAME@VERSION`.
    #[arg(long, value_name = "NAME[@VERSION]")]
    filter: Option<String>,
    /// Parameters for the filter's init, as JSON.
    #[arg(long, value_name = "JSON", requires = "filter")]
    filter_params: Option<String>,
    /// What an event the filter fails on gets: dead_letter, skip or deliver.
    #[arg(long, value_name = "POLICY")]
    on_filter_error: Option<String>,
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Print the JSON the server returns.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct NameArgs {
    #[command(flatten)]
    server: ServerArg,
    name: String,
    /// Print the JSON the server returns.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct DeadLetterArgs {
    #[command(flatten)]
    server: ServerArg,
    name: String,
    /// Letters per page (1-1000).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Start after this letter id (the id the previous page ends with).
    #[arg(long)]
    after: Option<String>,
    /// Print the JSON the server returns.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RedriveArgs {
    #[command(flatten)]
    server: ServerArg,
    name: String,
    /// Dead letter ids (repeatable); all when none is given.
    #[arg(long = "id")]
    ids: Vec<String>,
}

pub async fn run(cmd: SubCommand) -> anyhow::Result<()> {
    match cmd {
        SubCommand::Create(args) => create(*args).await,
        SubCommand::Ls(args) => {
            let v = args
                .server
                .call(Method::GET, "/v1/subscriptions", None)
                .await?;
            if args.json {
                return print_json(&v);
            }
            println!(
                "{:<24} {:<9} {:<9} {:<24} URL",
                "NAME", "STATE", "SINK", "FORMAT"
            );
            for s in v["subscriptions"].as_array().into_iter().flatten() {
                let sink = &s["sink"];
                println!(
                    "{:<24} {:<9} {:<9} {:<24} {}",
                    text(&s["name"]),
                    text(&s["state"]),
                    text(&sink["type"]),
                    text(&sink["format"]),
                    text(&sink["url"])
                );
            }
            Ok(())
        }
        SubCommand::Status(args) => {
            let path = format!("/v1/subscriptions/{}/status", args.name);
            let v = args.server.call(Method::GET, &path, None).await?;
            if args.json {
                return print_json(&v);
            }
            for key in [
                "name",
                "state",
                "disabled_reason",
                "endpoint",
                "circuit",
                "position",
                "end",
                "lag",
                "delivered",
                "lake_files",
                "dead_lettered",
                "dead_letters",
                "failed_attempts",
                "in_flight",
            ] {
                if !v[key].is_null() {
                    println!("{key:<16} {}", text(&v[key]));
                }
            }
            if let Some(f) = v["filter"].as_object() {
                println!(
                    "{:<16} {} (version {}, {}{})",
                    "filter",
                    text(&f["reference"]),
                    text(&f["version"]),
                    text(&f["state"]),
                    f.get("reason")
                        .map(|r| format!(": {}", text(r)))
                        .unwrap_or_default()
                );
                println!(
                    "{:<16} {} dropped, {} failed {}",
                    "filtered",
                    text(&v["filtered_out"]),
                    text(&v["filter_failed"]),
                    text(&f["errors"])
                );
            }
            if let Some(e) = v["last_error"].as_object() {
                println!(
                    "{:<16} {} (attempt {}, at {})",
                    "last_error",
                    text(&e["message"]),
                    text(&e["attempt"]),
                    text(&e["at"])
                );
            }
            Ok(())
        }
        SubCommand::Rm(args) => {
            let path = format!("/v1/subscriptions/{}", args.name);
            args.server.call(Method::DELETE, &path, None).await?;
            println!("removed subscription {}", args.name);
            Ok(())
        }
        SubCommand::DeadLetters(args) => {
            let mut path = format!(
                "/v1/subscriptions/{}/dead-letters?limit={}",
                args.name, args.limit
            );
            if let Some(after) = &args.after {
                path.push_str(&format!("&after={after}"));
            }
            let v = args.server.call(Method::GET, &path, None).await?;
            if args.json {
                return print_json(&v);
            }
            println!(
                "{:<36} {:<9} {:<36} {:>8} ERROR",
                "ID", "POSITION", "EVENT", "ATTEMPTS"
            );
            for l in v["dead_letters"].as_array().into_iter().flatten() {
                println!(
                    "{:<36} {:<9} {:<36} {:>8} {}",
                    text(&l["id"]),
                    format!("{}:{}", text(&l["partition"]), text(&l["offset"])),
                    text(&l["event_id"]),
                    text(&l["attempts"]),
                    text(&l["error"])
                );
            }
            if let Some(next) = v["next_after"].as_str() {
                eprintln!(
                    "{} dead letters in all; next page: --after {next}",
                    text(&v["count"])
                );
            }
            Ok(())
        }
        SubCommand::Redrive(args) => {
            let path = format!("/v1/subscriptions/{}/dead-letters/redrive", args.name);
            let body = if args.ids.is_empty() {
                json!({})
            } else {
                json!({ "ids": args.ids })
            };
            let v = args.server.call(Method::POST, &path, Some(&body)).await?;
            println!(
                "redriving {} dead letters of {}",
                text(&v["redriving"]),
                args.name
            );
            Ok(())
        }
    }
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let mut spec = match &args.spec {
        Some(path) => read_spec(path)?,
        None => json!({}),
    };
    if !spec.is_object() {
        bail!("--spec: the file must hold a JSON object");
    }
    if let Some(name) = &args.name {
        spec["name"] = json!(name);
    }
    if spec["name"].is_null() {
        bail!("give the subscription a name: `tidemark sub create NAME ...` or \"name\" in --spec");
    }
    if let Some(url) = &args.url {
        if spec["sink"].is_null() {
            spec["sink"] = json!({"type": "webhook"});
        }
        spec["sink"]["url"] = json!(url);
    }
    if spec["sink"].is_null() {
        bail!("say where events go: --url URL for a webhook, or a \"sink\" in --spec");
    }
    for (flag, value) in [("format", &args.format), ("secret", &args.secret)] {
        if let Some(v) = value {
            spec["sink"][flag] = json!(v);
        }
    }
    if let Some(start) = &args.start {
        spec["start"] = json!(start);
    }
    if let Some(f) = &args.filter {
        spec["filter"] = json!(f);
    }
    if let Some(p) = &args.filter_params {
        spec["filter_params"] = serde_json::from_str(p).context("--filter-params: not JSON")?;
    }
    if let Some(p) = &args.on_filter_error {
        spec["on_filter_error"] = json!(p);
    }
    if let Some(n) = args.max_attempts {
        spec["retry"]["max_attempts"] = json!(n);
    }
    let mut rules = spec.get("rules").cloned().unwrap_or_else(|| json!({}));
    for (key, values) in [
        ("events", &args.events),
        ("buckets", &args.buckets),
        ("prefix", &args.prefixes),
        ("suffix", &args.suffixes),
    ] {
        if !values.is_empty() {
            rules[key] = json!(values);
        }
    }
    if args.min_size.is_some() || args.max_size.is_some() {
        rules["size"] = json!({"min": args.min_size, "max": args.max_size});
    }
    if !args.metadata.is_empty() {
        let m: BTreeMap<_, _> = args.metadata.iter().cloned().collect();
        rules["metadata"] = json!(m);
    }
    spec["rules"] = rules;
    let v = args
        .server
        .call(Method::POST, "/v1/subscriptions", Some(&spec))
        .await?;
    println!(
        "created subscription {} (start {})",
        text(&v["name"]),
        text(&v["start"])
    );
    Ok(())
}

fn read_spec(path: &PathBuf) -> anyhow::Result<Value> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("--spec -: reading stdin")?
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("--spec: cannot read {}", path.display()))?
    };
    serde_json::from_str(&text)
        .with_context(|| format!("--spec {}: not valid JSON", path.display()))
}
