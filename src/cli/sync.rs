//! `tidemark sync`: reconcile a directory into a bucket, as a job on the server (progress bar,
//! Ctrl-C cancels it); `--dry-run` prints what would change instead.

use anyhow::bail;
use clap::Args;
use hyper::Method;
use serde_json::{Value, json};

use super::job;
use super::remote::{ServerArg, print_json, text};

#[derive(Args)]
pub struct SyncArgs {
    #[command(flatten)]
    server: ServerArg,
    /// The bucket the objects belong to.
    #[arg(long)]
    bucket: String,
    /// The store to reconcile from: a directory (read by the server; a relative path is taken
    /// from here) or s3://BUCKET[/PREFIX] (not supported by this build yet).
    #[arg(long, value_name = "DIR|s3://BUCKET[/PREFIX]")]
    source: String,
    /// Only keys starting with this.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Print what would change (counts, sample keys); append nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

const ACTIONS: [(&str, &str); 4] = [
    ("created", "new in the store: put"),
    ("updated", "content changed: put"),
    ("metadata", "content type or metadata changed"),
    ("removed", "gone from the store: deleted"),
];

pub async fn run(args: SyncArgs) -> anyhow::Result<()> {
    let source = absolute_source(&args.source)?;
    let body = json!({
        "bucket": args.bucket,
        "source": source,
        "prefix": args.prefix,
        "dry_run": args.dry_run,
    });
    let answer = args
        .server
        .call(Method::POST, "/v1/sync", Some(&body))
        .await
        .map_err(|e| anyhow::anyhow!("{}", flag_names(&e.to_string())))?;
    if args.dry_run {
        if args.json {
            return print_json(&answer);
        }
        println!(
            "dry run: sync {source} into {} (prefix '{}')",
            args.bucket, args.prefix
        );
        print_counts(&answer, "planned");
        return Ok(());
    }
    let id = text(&answer["id"]);
    eprintln!(
        "sync {id}: {source} into {} (prefix '{}')",
        args.bucket, args.prefix
    );
    let done = job::follow(&args.server, &format!("/v1/sync/{id}"), "entries").await?;
    if args.json {
        print_json(&done)?;
    } else if done["state"] != "failed" {
        print_counts(&done["result"], "applied");
    }
    eprintln!("{}", job::summary(&done, "entries"));
    if done["state"] == "failed" {
        bail!("the sync failed: {}", text(&done["error"]));
    }
    Ok(())
}

/// Directories go to the server as absolute paths (it may run elsewhere in the tree).
fn absolute_source(source: &str) -> anyhow::Result<String> {
    if source.contains("://") {
        return Ok(source.to_string());
    }
    let path = std::path::absolute(source)
        .map_err(|e| anyhow::anyhow!("--source: cannot resolve '{source}': {e}"))?;
    Ok(path.display().to_string())
}

/// The server names request fields (`source: ...`); here they are flags.
fn flag_names(message: &str) -> String {
    for field in ["bucket", "source", "prefix"] {
        if let Some(rest) = message.strip_prefix(&format!("{field}: ")) {
            return format!("--{field}: {rest}");
        }
    }
    message.to_string()
}

/// One line per action: `counts` is `planned` (dry run) or `applied`.
fn print_counts(result: &Value, counts: &str) {
    let total: u64 = ACTIONS
        .iter()
        .filter_map(|(a, _)| result["planned"][a].as_u64())
        .sum();
    println!("{} entries compared", text(&result["compared"]));
    if total == 0 {
        println!("nothing to do: the index matches the store");
    }
    for (action, what) in ACTIONS.iter().filter(|_| total > 0) {
        let samples: Vec<String> = result["samples"][action]
            .as_array()
            .map(|keys| keys.iter().map(text).collect())
            .unwrap_or_default();
        let line = format!(
            "{action:<9} {:>8}  {what:<34} {}",
            text(&result[counts][action]),
            samples.join(", ")
        );
        println!("{}", line.trim_end());
    }
    for list in ["skipped", "failed"] {
        let items = result[list].as_array().cloned().unwrap_or_default();
        if !items.is_empty() {
            println!("{list}: {} entries", items.len());
        }
        for item in &items {
            println!("  {}: {}", text(&item["key"]), text(&item["reason"]));
        }
    }
}
