//! `GET /metrics`: Prometheus text exposition (format 0.0.4) of the delivery engine's
//! counters, read at scrape time from the same numbers the status endpoint shows.

use std::fmt::Write;

use axum::http::header;
use axum::response::IntoResponse;
use tidemark_sinks::delivery::stats::{LATENCY_BUCKETS, Stats};

use super::State;

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub async fn metrics(state: State) -> impl IntoResponse {
    let subs = state.node.engine.metrics().await;
    let mut out = String::with_capacity(4096);
    header(
        &mut out,
        "tidemark_deliveries_total",
        "counter",
        "Events by subscription and final outcome (delivered, dead_lettered).",
    );
    for m in &subs {
        let s = label(&m.name);
        let _ = writeln!(
            out,
            "tidemark_deliveries_total{{subscription=\"{s}\",outcome=\"delivered\"}} {}",
            Stats::get(&m.stats.delivered)
        );
        let _ = writeln!(
            out,
            "tidemark_deliveries_total{{subscription=\"{s}\",outcome=\"dead_lettered\"}} {}",
            Stats::get(&m.stats.dead_lettered)
        );
    }
    header(
        &mut out,
        "tidemark_delivery_attempts_total",
        "counter",
        "Requests sent to sinks, by subscription and result.",
    );
    for m in &subs {
        let s = label(&m.name);
        let (all, failed) = (
            Stats::get(&m.stats.attempts),
            Stats::get(&m.stats.failed_attempts),
        );
        let _ = writeln!(
            out,
            "tidemark_delivery_attempts_total{{subscription=\"{s}\",result=\"success\"}} {}",
            all.saturating_sub(failed)
        );
        let _ = writeln!(
            out,
            "tidemark_delivery_attempts_total{{subscription=\"{s}\",result=\"failure\"}} {failed}"
        );
    }
    header(
        &mut out,
        "tidemark_delivery_attempt_seconds",
        "histogram",
        "Time from sending a request to its answer.",
    );
    for m in &subs {
        let s = label(&m.name);
        let (counts, sum) = m.stats.latency();
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += counts[i];
            let _ = writeln!(
                out,
                "tidemark_delivery_attempt_seconds_bucket{{subscription=\"{s}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += counts[LATENCY_BUCKETS.len()];
        let _ = writeln!(
            out,
            "tidemark_delivery_attempt_seconds_bucket{{subscription=\"{s}\",le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "tidemark_delivery_attempt_seconds_sum{{subscription=\"{s}\"}} {sum}"
        );
        let _ = writeln!(
            out,
            "tidemark_delivery_attempt_seconds_count{{subscription=\"{s}\"}} {cumulative}"
        );
    }
    header(
        &mut out,
        "tidemark_subscription_lag_events",
        "gauge",
        "Events in the log after the subscription's committed position.",
    );
    for m in &subs {
        let _ = writeln!(
            out,
            "tidemark_subscription_lag_events{{subscription=\"{}\"}} {}",
            label(&m.name),
            m.lag
        );
    }
    header(
        &mut out,
        "tidemark_subscription_in_flight",
        "gauge",
        "Events being delivered now.",
    );
    for m in &subs {
        let _ = writeln!(
            out,
            "tidemark_subscription_in_flight{{subscription=\"{}\"}} {}",
            label(&m.name),
            Stats::get(&m.stats.in_flight)
        );
    }
    header(
        &mut out,
        "tidemark_dead_letters",
        "gauge",
        "Events in the subscription's dead-letter queue.",
    );
    for m in &subs {
        let _ = writeln!(
            out,
            "tidemark_dead_letters{{subscription=\"{}\"}} {}",
            label(&m.name),
            m.dead_letters
        );
    }
    header(
        &mut out,
        "tidemark_circuit_state",
        "gauge",
        "1 for the endpoint circuit's current state (closed, open, half-open).",
    );
    for m in &subs {
        let Some(current) = m.circuit.as_deref() else {
            continue;
        };
        for st in ["closed", "open", "half-open"] {
            let _ = writeln!(
                out,
                "tidemark_circuit_state{{subscription=\"{}\",state=\"{st}\"}} {}",
                label(&m.name),
                u8::from(st == current)
            );
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}
