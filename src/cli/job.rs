//! Following a server-side job (`/v1/replays/ID`, `/v1/restores/ID`) from the CLI: a progress
//! bar while it runs; `Ctrl-C` cancels the job on the server, waits for it to stop and says
//! how far it got.

use std::time::Duration;

use hyper::Method;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::remote::ServerArg;

/// Poll `path` (a job) until it ends; returns its final JSON. `what` names the unit counted
/// (`events`, `objects`).
pub async fn follow(server: &ServerArg, path: &str, what: &str) -> anyhow::Result<Value> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {{bar:40}} {{pos}}/{{len}} {what} ({{per_sec}}, {{elapsed}})"
        ))
        .expect("progress template"),
    );
    let mut interrupted = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let job = server.call(Method::GET, path, None).await?;
        bar.set_length(job["progress"]["total"].as_u64().unwrap_or(0));
        bar.set_position(job["progress"]["done"].as_u64().unwrap_or(0));
        if job["state"] != "running" {
            bar.finish_and_clear();
            return Ok(job);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = &mut ctrl_c, if !interrupted => {
                interrupted = true;
                bar.println("interrupted: cancelling the job on the server…");
                server.call(Method::POST, &format!("{path}/cancel"), None).await?;
            }
        }
    }
}

/// One line saying how a job ended and how far it got.
pub fn summary(job: &Value, what: &str) -> String {
    let (done, total) = (
        job["progress"]["done"].as_u64().unwrap_or(0),
        job["progress"]["total"].as_u64().unwrap_or(0),
    );
    match job["state"].as_str().unwrap_or("?") {
        "failed" => format!(
            "job {} failed after {done} of {total} {what}: {}",
            job["id"].as_str().unwrap_or("?"),
            job["error"].as_str().unwrap_or("unknown error")
        ),
        "cancelled" => format!(
            "job {} cancelled after {done} of {total} {what}",
            job["id"].as_str().unwrap_or("?")
        ),
        state => format!(
            "job {} {state}: {done} of {total} {what}",
            job["id"].as_str().unwrap_or("?")
        ),
    }
}
