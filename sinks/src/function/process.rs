//! The `process` function mode: run the configured command with the event JSON on stdin (one
//! object; a JSON array for a batch), in a clean environment (`PATH`, `HOME`, locale and
//! `TIDEMARK_SUBSCRIPTION` / `TIDEMARK_ATTEMPT` / `TIDEMARK_EVENT_ID`). Exit code 0 is success. The process is killed at the
//! timeout, and only the first [`EXCERPT_BYTES`] of stdout and stderr are kept, so a chatty or
//! hanging function costs bounded memory and time.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::EXCERPT_BYTES;
use crate::sink::{Delivery, SendError};

pub struct Run {
    pub result: Result<(), SendError>,
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

fn input(batch: &[Arc<Delivery>]) -> Vec<u8> {
    let value = match batch {
        [one] => one.event().to_json(),
        many => serde_json::Value::Array(many.iter().map(|d| d.event().to_json()).collect()),
    };
    let mut bytes = serde_json::to_vec(&value).expect("JSON serializes");
    bytes.push(b'\n');
    bytes
}

/// Keep the first bytes of a stream and drain the rest, so the child never blocks on a full
/// pipe.
async fn excerpt(mut stream: impl AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = EXCERPT_BYTES.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

pub async fn run(
    command: &[String],
    batch: &[Arc<Delivery>],
    subscription: &str,
    attempt: u32,
    timeout: Duration,
) -> Run {
    let failed = |message: String| Run {
        result: Err(SendError::retry(message)),
        exit_code: None,
        stdout: String::new(),
        stderr: String::new(),
    };
    let Some((program, args)) = command.split_first() else {
        return failed("no command configured".into());
    };
    let mut command = Command::new(program);
    // The server's environment may hold secrets (`env:` references, credentials); a function
    // gets only what locates programs and sets the locale, plus its own variables.
    command.env_clear();
    for name in ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    let mut child = match command
        .args(args)
        .env("TIDEMARK_SUBSCRIPTION", subscription)
        .env("TIDEMARK_ATTEMPT", attempt.to_string())
        .env(
            "TIDEMARK_EVENT_ID",
            batch
                .first()
                .map(|d| d.event().event_id.to_string())
                .unwrap_or_default(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group, so a timeout kills whatever the function started too.
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot start {program}: {e}")),
    };
    let mut stdin = child.stdin.take().expect("piped");
    let out = tokio::spawn(excerpt(child.stdout.take().expect("piped")));
    let err = tokio::spawn(excerpt(child.stderr.take().expect("piped")));
    let body = input(batch);
    let finished = tokio::time::timeout(timeout, async {
        // A function that does not read its input is its own business, not an error.
        let _ = stdin.write_all(&body).await;
        drop(stdin);
        child.wait().await
    })
    .await;
    let (result, exit_code) = match finished {
        Err(_) => {
            if let Some(pid) = child.id() {
                let group = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = child.kill().await;
            (
                Err(SendError::retry(format!(
                    "timed out after {} ms; the process was killed",
                    timeout.as_millis()
                ))),
                None,
            )
        }
        Ok(Err(e)) => (
            Err(SendError::retry(format!("waiting for {program}: {e}"))),
            None,
        ),
        Ok(Ok(status)) if status.success() => (Ok(()), Some(0)),
        Ok(Ok(status)) => {
            let code = status.code();
            let mut e = SendError::retry(match code {
                Some(c) => format!("{program} exited with code {c}"),
                None => format!("{program} was ended by a signal"),
            });
            e.status = code;
            (Err(e), code)
        }
    };
    // Descendants that left the group and kept the pipes open must not hold the invocation up.
    let grace = Duration::from_millis(200);
    let stdout = tokio::time::timeout(grace, out)
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    let stderr = tokio::time::timeout(grace, err)
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    Run {
        result,
        exit_code,
        stdout,
        stderr,
    }
}
