//! `tidemark watch`: print changes as they happen, from a running server's live watch stream
//! (`GET /v1/watch`, Server-Sent Events). A dropped connection, or a server that cut the
//! watcher off for lagging, is resumed from the last event id, so nothing is missed or printed
//! twice; the retries in a row without an event are bounded.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use serde_json::Value;

use super::remote::ServerArg;

#[derive(Args)]
pub struct WatchArgs {
    #[command(flatten)]
    server: ServerArg,
    /// The bucket to watch.
    #[arg(long)]
    bucket: String,
    /// Only keys starting with this.
    #[arg(long)]
    prefix: Option<String>,
    /// Event types: names or families, e.g. `ObjectCreated:*,ObjectRemoved:Delete`.
    #[arg(long, value_delimiter = ',', value_name = "TYPE")]
    events: Vec<String>,
    /// Where to start: `now` (default), `earliest`, or the id (cursor) of an event.
    #[arg(long, value_name = "CURSOR", default_value = "now")]
    since: String,
    /// One JSON object per line (the event, with its `cursor`).
    #[arg(long)]
    json: bool,
    /// Connection attempts in a row without an event before giving up.
    #[arg(long, default_value_t = 10)]
    retries: u32,
}

/// How one connection ended.
enum End {
    /// The connection dropped (or was cut off): resume.
    Dropped(String),
}

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let mut cursor = args.since.clone();
    let mut failures = 0u32;
    loop {
        let attempt = tokio::select! {
            r = watch_once(&args, &mut cursor, &mut failures) => r,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let End::Dropped(why) = attempt?;
        failures += 1;
        if failures > args.retries {
            bail!("gave up after {} attempts in a row: {why}", args.retries);
        }
        let backoff = Duration::from_millis(250 << failures.min(5));
        eprintln!("watch: {why}; resuming from {cursor} in {backoff:?}");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// One connection: print its events, advancing `cursor`. `Err` for what retrying cannot fix.
async fn watch_once(
    args: &WatchArgs,
    cursor: &mut String,
    failures: &mut u32,
) -> anyhow::Result<End> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("bucket", &args.bucket);
    if let Some(p) = &args.prefix {
        query.append_pair("prefix", p);
    }
    if !args.events.is_empty() {
        query.append_pair("events", &args.events.join(","));
    }
    query.append_pair("since", cursor);
    let url = format!(
        "{}/v1/watch?{}",
        args.server.server.trim_end_matches('/'),
        query.finish()
    );
    let mut req = Request::get(&url).header("accept", "text/event-stream");
    if let Some(authorization) = args.server.authorization() {
        req = req.header("authorization", authorization);
    }
    let req = req
        .body(Full::default())
        .with_context(|| format!("'{url}' is not a valid URL; check --server"))?;
    let resp = match args.server.client()?.request(req).await {
        Ok(r) => r,
        Err(e) => {
            return Ok(End::Dropped(super::remote::unreachable(
                &args.server.server,
                &e,
            )));
        }
    };
    let status = resp.status();
    if !status.is_success() {
        let body = resp.into_body().collect().await?.to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        let err = &v["error"];
        if status.is_server_error() {
            return Ok(End::Dropped(format!("the server answered {status}")));
        }
        match (err["field"].as_str(), err["message"].as_str()) {
            (Some(f), Some(m)) => bail!("{f}: {m} ({status})"),
            (None, Some(m)) => bail!("{m} ({status})"),
            _ => bail!("the server answered {status}"),
        }
    }
    let mut body = resp.into_body();
    let mut parser = Parser::default();
    let mut out = std::io::stdout();
    loop {
        let frame = match body.frame().await {
            None => return Ok(End::Dropped("the server closed the stream".into())),
            Some(Err(e)) => return Ok(End::Dropped(format!("the connection dropped: {e}"))),
            Some(Ok(f)) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for event in parser.push(&data) {
            if event.kind == "error" {
                let v: Value = serde_json::from_str(&event.data).unwrap_or_default();
                if let Some(resume) = v["resume"].as_str() {
                    *cursor = resume.to_string();
                }
                return Ok(End::Dropped(format!(
                    "cut off by the server: {}",
                    v["reason"].as_str().unwrap_or(&event.data)
                )));
            }
            let Some(id) = event.id else { continue };
            let mut v: Value = serde_json::from_str(&event.data).with_context(|| {
                format!("the server sent an event that is not JSON: {}", event.data)
            })?;
            let line = if args.json {
                v["cursor"] = id.clone().into();
                v.to_string()
            } else {
                human(&v)
            };
            writeln!(out, "{line}")?;
            out.flush()?;
            *cursor = id;
            *failures = 0;
        }
    }
}

/// `time type bucket/key size`.
fn human(v: &Value) -> String {
    let text = |f: &str| v[f].as_str().unwrap_or("-").to_string();
    let size = v["size"]
        .as_i64()
        .map_or("-".to_string(), |s| s.to_string());
    format!(
        "{} {} {}/{} {size}",
        text("event_time"),
        text("event_type"),
        text("bucket"),
        text("key")
    )
}

/// One Server-Sent Event.
struct SseEvent {
    id: Option<String>,
    kind: String,
    data: String,
}

/// Server-Sent Events from a byte stream (lines may span chunks).
#[derive(Default)]
struct Parser {
    line: Vec<u8>,
    id: Option<String>,
    kind: String,
    data: Vec<String>,
}

impl Parser {
    fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let line = String::from_utf8_lossy(&self.line)
                .trim_end_matches('\r')
                .to_string();
            self.line.clear();
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(SseEvent {
                        id: self.id.take(),
                        kind: std::mem::take(&mut self.kind),
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                self.id = None;
                self.kind.clear();
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_string();
            match field {
                "id" => self.id = Some(value),
                "event" => self.kind = value,
                "data" => self.data.push(value),
                _ => {} // comments (heartbeats), retry
            }
        }
        events
    }
}
