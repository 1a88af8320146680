//! `tidemark token create|ls|revoke`: API tokens on a running server (needs an `admin`
//! token, or a server without any token yet).

use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{Value, json};

use super::remote::{ServerArg, print_json, text};

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token and print its secret: the only time it is shown.
    Create(CreateArgs),
    /// List tokens: ids, scopes, buckets, who created them (never secrets).
    Ls(ListArgs),
    /// Revoke a token: refused from the moment this returns.
    Revoke(RevokeArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Scopes, comma-separated: ingest, read, subscriptions, filters, replay, admin.
    #[arg(long, value_delimiter = ',', required = true, value_name = "SCOPE")]
    scopes: Vec<String>,
    /// Bucket patterns the token is limited to, comma-separated (`*` matches any run of
    /// characters, e.g. `photos*`); all buckets when absent.
    #[arg(long, value_delimiter = ',', value_name = "PATTERN")]
    buckets: Vec<String>,
    /// What the token is for.
    #[arg(long)]
    description: Option<String>,
    /// Print the server's JSON answer.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Token id (`tok_…`, from `tidemark token ls`).
    id: String,
}

pub async fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create(args) => {
            let body = json!({
                "scopes": args.scopes,
                "buckets": args.buckets,
                "description": args.description,
            });
            let v = args
                .server
                .call(Method::POST, "/v1/tokens", Some(&body))
                .await?;
            if args.json {
                return print_json(&v);
            }
            println!("{}", text(&v["secret"]));
            eprintln!(
                "created token {} ({}); the line above is its secret: store it now, it is not \
                 shown again",
                text(&v["id"]),
                list(&v["scopes"])
            );
            Ok(())
        }
        TokenCommand::Ls(args) => {
            let v = args.server.call(Method::GET, "/v1/tokens", None).await?;
            if args.json {
                return print_json(&v);
            }
            println!(
                "{:<16} {:<28} {:<16} {:<26} {:<20} DESCRIPTION",
                "ID", "SCOPES", "BUCKETS", "CREATED", "BY"
            );
            for t in v["tokens"].as_array().into_iter().flatten() {
                let buckets = match list(&t["buckets"]) {
                    b if b.is_empty() => "*".to_string(),
                    b => b,
                };
                println!(
                    "{:<16} {:<28} {:<16} {:<26} {:<20} {}",
                    text(&t["id"]),
                    list(&t["scopes"]),
                    buckets,
                    text(&t["created_at"]),
                    text(&t["created_by"]),
                    text(&t["description"])
                );
            }
            Ok(())
        }
        TokenCommand::Revoke(args) => {
            let path = format!("/v1/tokens/{}", args.id);
            args.server.call(Method::DELETE, &path, None).await?;
            println!("revoked token {}", args.id);
            Ok(())
        }
    }
}

/// A JSON array of strings as `a,b`.
fn list(v: &Value) -> String {
    let items: Vec<String> = v.as_array().into_iter().flatten().map(text).collect();
    items.join(",")
}
