//! `tidemark restore`: bring a bucket back to an instant, as a job on the server; `--dry-run`
//! prints the plan instead.

use anyhow::bail;
use clap::Args;
use hyper::Method;
use serde_json::{Value, json};

use super::job;
use super::remote::{ServerArg, print_json, text};

#[derive(Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    server: ServerArg,
    /// The bucket to restore.
    #[arg(long)]
    bucket: String,
    /// The instant to restore to (log append time): RFC 3339, a time today in UTC (`14:00`),
    /// or relative to now (`-2h`).
    #[arg(long, value_name = "INSTANT", allow_hyphen_values = true)]
    at: String,
    /// Only keys starting with this.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Print what would change (counts, sample keys, content no longer available); change
    /// nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the plan or the finished job as JSON.
    #[arg(long)]
    json: bool,
}

const ACTIONS: [(&str, &str); 5] = [
    ("recreate", "deleted since: put back"),
    ("revert", "overwritten since: old content back"),
    ("delete", "created since: deleted"),
    ("metadata", "metadata set back"),
    ("tags", "tags set back"),
];

pub async fn run(args: RestoreArgs) -> anyhow::Result<()> {
    let body = json!({
        "bucket": args.bucket,
        "at": args.at,
        "prefix": args.prefix,
        "dry_run": args.dry_run,
    });
    let answer = args
        .server
        .call(Method::POST, "/v1/restores", Some(&body))
        .await
        .map_err(|e| anyhow::anyhow!("{}", flag_names(&e.to_string())))?;
    if args.dry_run {
        if args.json {
            return print_json(&answer);
        }
        print_plan(&answer);
        return Ok(());
    }
    let id = text(&answer["id"]);
    eprintln!(
        "restore {id}: {} (prefix '{}') to {}",
        args.bucket,
        args.prefix,
        text(&answer["spec"]["at"])
    );
    let done = job::follow(&args.server, &format!("/v1/restores/{id}"), "objects").await?;
    if args.json {
        print_json(&done)?;
    } else {
        print_outcome(&done["result"]);
    }
    eprintln!("{}", job::summary(&done, "objects"));
    if done["state"] == "failed" {
        bail!("the restore failed: {}", text(&done["error"]));
    }
    Ok(())
}

/// The server names request fields (`at: ...`); here they are flags.
fn flag_names(message: &str) -> String {
    for field in ["bucket", "at", "prefix"] {
        if let Some(rest) = message.strip_prefix(&format!("{field}: ")) {
            return format!("--{field}: {rest}");
        }
    }
    message.to_string()
}

fn print_plan(plan: &Value) {
    println!(
        "restore {} (prefix '{}') to {}: {} objects to change",
        text(&plan["bucket"]),
        text(&plan["prefix"]),
        text(&plan["at"]),
        plan["objects"]
    );
    if plan["objects"] != 0 {
        println!(
            "{:<10} {:>8}  {:<36} sample keys",
            "action", "count", "what"
        );
        for (action, what) in ACTIONS {
            let samples: Vec<String> = plan["samples"][action]
                .as_array()
                .map(|keys| keys.iter().map(text).collect())
                .unwrap_or_default();
            let line = format!(
                "{action:<10} {:>8}  {what:<36} {}",
                text(&plan["counts"][action]),
                samples.join(", ")
            );
            println!("{}", line.trim_end());
        }
    } else if plan["counts"]["unavailable"] == 0 {
        println!("nothing to do: it is as it was then");
    }
    print_unavailable(&plan["unavailable"], &plan["counts"]["unavailable"]);
}

fn print_unavailable(list: &Value, count: &Value) {
    let list = list.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return;
    }
    println!(
        "content unavailable: {} objects will NOT be restored:",
        text(count)
    );
    for u in &list {
        println!("  {}: {}", text(&u["key"]), text(&u["reason"]));
    }
}

fn print_outcome(result: &Value) {
    let planned: u64 = ACTIONS
        .iter()
        .filter_map(|(a, _)| result["planned"][a].as_u64())
        .sum();
    if planned == 0 {
        println!("nothing to do: it is as it was then");
    }
    for (action, what) in ACTIONS.iter().filter(|_| planned > 0) {
        println!(
            "{action:<10} {:>8} of {:>8}  {what}",
            text(&result["done"][action]),
            text(&result["planned"][action])
        );
    }
    for (name, list) in [("skipped", "skipped_keys"), ("failed", "failed_keys")] {
        let keys = result[list].as_array().cloned().unwrap_or_default();
        if keys.is_empty() {
            continue;
        }
        println!("{name}: {} objects", text(&result[name]));
        for k in &keys {
            println!("  {}: {}", text(&k["key"]), text(&k["reason"]));
        }
    }
    print_unavailable(&result["unavailable_keys"], &result["unavailable"]);
}
