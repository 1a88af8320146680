//! Attempts for one delivery unit (an event, or a batch): wait for the endpoint's circuit,
//! send, and on failure back off with full jitter (a random wait between zero and the
//! exponential bound, so many failing events do not retry in lockstep), never sooner than a
//! `Retry-After` the endpoint asked for. Ends delivered, or dead (attempts or age exhausted,
//! or refused), or gone (410).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::context::{Requests, RunCtx};
use super::dead_letters::DeadLetter;
use crate::sink::{Delivery, Failure, SendError};
use crate::stats::{LastError, Stats};

/// How a delivery unit ended.
#[derive(Debug)]
pub enum Outcome {
    Delivered,
    /// Given up on: the events belong in the dead-letter queue.
    Dead {
        attempts: u32,
        error: String,
        status: Option<i32>,
    },
    /// The endpoint answered 410 Gone: stop the subscription, keep the events.
    Gone(String),
}

/// The wait before attempt `attempt + 1`: uniform in `[0, min(max, initial·2^(attempt-1))]`.
pub fn full_jitter(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = initial.saturating_mul(
        1u32.checked_shl(attempt.saturating_sub(1).min(31))
            .unwrap_or(u32::MAX),
    );
    let bound = exp.min(max).as_millis() as u64;
    Duration::from_millis(fastrand::u64(0..=bound))
}

/// Try `batch` on `to` until it is delivered or given up on.
pub(crate) async fn attempt(ctx: &RunCtx, to: &Requests, batch: &[Arc<Delivery>]) -> Outcome {
    let retry = ctx.spec.retry;
    let started = Instant::now();
    let mut attempts = 0u32;
    let n = batch.len() as u64;
    loop {
        let permit = to.circuit.permit().await;
        attempts += 1;
        let sent_at = Instant::now();
        let result = to.sink.send(batch, attempts).await;
        ctx.stats.observe_attempt(sent_at.elapsed());
        let e = match result {
            Ok(()) => {
                permit.success();
                ctx.stats
                    .delivered
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                return Outcome::Delivered;
            }
            Err(e) => e,
        };
        record_failure(&ctx.stats, &ctx.name, to.sink.endpoint(), attempts, &e);
        let retry_after = match e.failure {
            Failure::Gone => {
                permit.success();
                return Outcome::Gone(e.message);
            }
            Failure::Reject => {
                // The endpoint is up and answering; only these events are refused.
                permit.success();
                return Outcome::Dead {
                    attempts,
                    error: e.message,
                    status: e.status,
                };
            }
            Failure::Retry { retry_after } => {
                permit.failure(
                    ctx.spec.circuit.failure_threshold,
                    Duration::from_millis(ctx.spec.circuit.open_ms),
                );
                retry_after
            }
        };
        let too_old = retry
            .max_age_ms
            .is_some_and(|age| started.elapsed() >= Duration::from_millis(age));
        if attempts >= retry.max_attempts || too_old {
            let why = if too_old { "max age" } else { "max attempts" };
            return Outcome::Dead {
                attempts,
                error: format!("{} ({why} reached)", e.message),
                status: e.status,
            };
        }
        let mut wait = full_jitter(
            Duration::from_millis(retry.initial_backoff_ms),
            Duration::from_millis(retry.max_backoff_ms),
            attempts,
        );
        if let Some(ra) = retry_after {
            wait = wait.max(ra);
        }
        tokio::time::sleep(wait).await;
    }
}

/// Count and log a failed attempt once, naming the subscription, the endpoint's host, the
/// status and the attempt; never the payload or secrets.
fn record_failure(stats: &Stats, name: &str, endpoint: &str, attempt: u32, e: &SendError) {
    // The message stops before the endpoint's answer: its body may echo the payload.
    let reason = match e.status {
        Some(status) => format!("endpoint answered {status}"),
        None => e.message.clone(),
    };
    tracing::warn!(
        subscription = name,
        host = host_of(endpoint),
        status = e.status,
        attempt,
        "delivery failed: {reason}"
    );
    stats.failed(LastError {
        at: tidemark_core::time::format_us(tidemark_core::time::now_us()),
        message: e.message.clone(),
        status: e.status,
        attempt,
    });
}

/// The host (and port) of an endpoint, for logs: never the path, query or user info of a
/// URL (they may hold tokens), nor a function's command line (it may hold arguments).
pub(crate) fn host_of(endpoint: &str) -> String {
    if let Some((scheme, rest)) = endpoint.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = authority.rsplit('@').next().unwrap_or("");
        return match scheme {
            "file" => "local".into(),
            _ => host.to_string(),
        };
    }
    match endpoint.split_once(':') {
        Some((kind, _)) => kind.to_string(), // `process:<command line>`
        None => String::new(),
    }
}

/// Deliver a unit from the live stream: dead events are written to the dead-letter queue
/// before this returns, so the caller may move the position past them.
pub(crate) async fn deliver(ctx: &RunCtx, to: &Requests, batch: &[Arc<Delivery>]) -> Outcome {
    ctx.stats
        .in_flight
        .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let outcome = attempt(ctx, to, batch).await;
    if let Outcome::Dead {
        attempts,
        error,
        status,
    } = &outcome
    {
        // A replay's dead letters say which job gave up on them.
        let error = match &ctx.replay {
            Some(r) => format!("replay {}: {error}", r.id),
            None => error.clone(),
        };
        for d in batch {
            let letter = DeadLetter::new(&ctx.name, d, *attempts, &error, *status);
            store_dead_letter(ctx, &letter).await;
        }
        ctx.stats
            .dead_lettered
            .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
    ctx.stats
        .in_flight
        .fetch_sub(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
    outcome
}

/// Write a dead letter, retrying until the log takes it: the position must not move past an
/// event that is neither delivered nor dead-lettered.
pub(crate) async fn store_dead_letter(ctx: &RunCtx, letter: &DeadLetter) {
    loop {
        match ctx.dead_letters.add(letter).await {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(
                    subscription = ctx.name,
                    "cannot write a dead letter: {e}; retrying in 1s"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_keeps_only_the_host() {
        assert_eq!(
            host_of("https://u:pw@hooks.example.com:8443"),
            "hooks.example.com:8443"
        );
        assert_eq!(
            host_of("http://127.0.0.1:9000/hook?token=x"),
            "127.0.0.1:9000"
        );
        assert_eq!(host_of("s3://lake-bucket/events"), "lake-bucket");
        assert_eq!(host_of("file:///var/lake"), "local");
        assert_eq!(host_of("process:python3 fn.py --key s3cr3t"), "process");
    }

    #[test]
    fn full_jitter_stays_under_the_exponential_bound() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(5));
        for attempt in 1..40 {
            let bound = (100u64 << (attempt - 1).min(31)).min(5000);
            for _ in 0..50 {
                assert!(full_jitter(i, m, attempt).as_millis() as u64 <= bound);
            }
        }
    }
}
