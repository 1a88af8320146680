//! `tidemark sync`: reconcile a directory or an S3 bucket into a bucket, as a job on the server
//! (progress bar, Ctrl-C cancels it); `--dry-run` prints what would change instead.

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
    /// The bucket the objects belong to (default for an s3:// source: its bucket).
    #[arg(long)]
    bucket: Option<String>,
    /// The store to reconcile from: a directory (read by the server; a relative path is taken
    /// from here) or s3://BUCKET[/PREFIX] (listed by the server; keys are the store's keys).
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
    /// Last: its help heading would otherwise carry over to the flags after it.
    #[command(flatten)]
    s3: S3Args,
}

/// How the server reaches an s3:// source; only with one.
#[derive(Args)]
#[command(next_help_heading = "S3 source (only with --source s3://…)")]
struct S3Args {
    /// The service's URL, for S3-compatible services (default: AWS).
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// The region [default: us-east-1].
    #[arg(long, value_name = "R")]
    region: Option<String>,
    /// The access key id (default: AWS_ACCESS_KEY_ID of this environment, if set).
    #[arg(long, value_name = "K")]
    access_key_id: Option<String>,
    /// The secret access key: a value, env:NAME or file:PATH (looked up on the server)
    /// (default: AWS_SECRET_ACCESS_KEY of this environment, if set).
    #[arg(long, value_name = "REF")]
    secret_access_key: Option<String>,
    /// Address the bucket as BUCKET.ENDPOINT rather than ENDPOINT/BUCKET (path style).
    #[arg(long)]
    virtual_hosted: bool,
}

impl S3Args {
    fn given(&self) -> Option<&'static str> {
        [
            (self.endpoint.is_some(), "--endpoint"),
            (self.region.is_some(), "--region"),
            (self.access_key_id.is_some(), "--access-key-id"),
            (self.secret_access_key.is_some(), "--secret-access-key"),
            (self.virtual_hosted, "--virtual-hosted"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag))
    }

    /// The request's `s3` object; keys not given come from this environment.
    fn to_json(&self) -> Value {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut v = json!({
            "region": self.region.as_deref().unwrap_or("us-east-1"),
            "path_style": !self.virtual_hosted,
        });
        if let Some(endpoint) = &self.endpoint {
            v["endpoint"] = endpoint.as_str().into();
        }
        if let Some(key) = self
            .access_key_id
            .clone()
            .or_else(|| env("AWS_ACCESS_KEY_ID"))
        {
            v["access_key_id"] = key.into();
        }
        let secret = self
            .secret_access_key
            .clone()
            .or_else(|| env("AWS_SECRET_ACCESS_KEY"));
        if let Some(secret) = secret {
            v["secret_access_key"] = secret.into();
        }
        v
    }
}

const ACTIONS: [(&str, &str); 4] = [
    ("created", "new in the store: put"),
    ("updated", "content changed: put"),
    ("metadata", "content type or metadata changed"),
    ("removed", "gone from the store: deleted"),
];

pub async fn run(args: SyncArgs) -> anyhow::Result<()> {
    let source = absolute_source(&args.source)?;
    let mut body = json!({
        "source": source,
        "prefix": args.prefix,
        "dry_run": args.dry_run,
    });
    if let Some(bucket) = &args.bucket {
        body["bucket"] = bucket.as_str().into();
    }
    if source.starts_with("s3://") {
        body["s3"] = args.s3.to_json();
        if body["s3"]["access_key_id"].is_null() != body["s3"]["secret_access_key"].is_null() {
            bail!(
                "--access-key-id and --secret-access-key go together (each defaults to \
                 AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of this environment): give both, or \
                 neither to use the server's instance credentials"
            );
        }
    } else if args.bucket.is_none() {
        bail!("--bucket is required with a directory source: the bucket the files belong to");
    } else if let Some(flag) = args.s3.given() {
        bail!(
            "{flag} is only for an S3 source (--source s3://BUCKET[/PREFIX]); a directory is \
             read by the server directly"
        );
    }
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
            text(&answer["spec"]["bucket"]),
            text(&answer["spec"]["prefix"])
        );
        print_counts(&answer, "planned");
        return Ok(());
    }
    let id = text(&answer["id"]);
    eprintln!(
        "sync {id}: {source} into {} (prefix '{}')",
        text(&answer["spec"]["bucket"]),
        text(&answer["spec"]["prefix"])
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
    if let Some((field, rest)) = message.strip_prefix("s3.").and_then(|m| m.split_once(": ")) {
        return format!("--{}: {rest}", field.replace('_', "-"));
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
