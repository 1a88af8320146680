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

/// The series of one histogram: cumulative buckets from per-bucket `counts` (the last one
/// +Inf), sum and count.
fn histogram(out: &mut String, name: &str, labels: &str, bounds: &[f64], counts: &[u64], sum: f64) {
    let mut cumulative = 0;
    for (i, bound) in bounds.iter().enumerate() {
        cumulative += counts.get(i).copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
    }
    cumulative += counts.get(bounds.len()).copied().unwrap_or(0);
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
}

/// Per filter version: evaluations by outcome, errors by kind, fuel and time; and how
/// modules were loaded (compiled, or from a precompiled artifact).
fn filter_metrics(out: &mut String, filters: &tidemark_plugins::Filters) {
    use std::sync::atomic::Ordering::Relaxed;
    use tidemark_plugins::stats::{FUEL_BUCKETS, TIME_BUCKETS};
    let all = filters.all_stats();
    header(
        out,
        "tidemark_filter_evaluations_total",
        "counter",
        "Events a filter version decided on this node, by outcome (kept, dropped, error).",
    );
    for ((name, version), s) in &all {
        let l = format!("filter=\"{}\",version=\"{version}\"", label(name));
        let errors: u64 = s.errors().iter().map(|(_, n)| n).sum();
        for (outcome, n) in [
            ("kept", s.kept.load(Relaxed)),
            ("dropped", s.dropped.load(Relaxed)),
            ("error", errors),
        ] {
            let _ = writeln!(
                out,
                "tidemark_filter_evaluations_total{{{l},outcome=\"{outcome}\"}} {n}"
            );
        }
    }
    header(
        out,
        "tidemark_filter_errors_total",
        "counter",
        "Filter failures by kind (trap, fuel, timeout, memory, module, verdict, init).",
    );
    for ((name, version), s) in &all {
        let l = format!("filter=\"{}\",version=\"{version}\"", label(name));
        for (kind, n) in s.errors() {
            let _ = writeln!(
                out,
                "tidemark_filter_errors_total{{{l},kind=\"{kind}\"}} {n}"
            );
        }
    }
    header(
        out,
        "tidemark_filter_fuel",
        "histogram",
        "Fuel (about one unit per WebAssembly instruction) used per evaluation.",
    );
    for ((name, version), s) in &all {
        let l = format!("filter=\"{}\",version=\"{version}\"", label(name));
        let (fuel, _) = s.histograms();
        histogram(
            out,
            "tidemark_filter_fuel",
            &l,
            &FUEL_BUCKETS,
            &fuel.counts,
            fuel.sum,
        );
    }
    header(
        out,
        "tidemark_filter_seconds",
        "histogram",
        "Time per evaluation.",
    );
    for ((name, version), s) in &all {
        let l = format!("filter=\"{}\",version=\"{version}\"", label(name));
        let (_, time) = s.histograms();
        histogram(
            out,
            "tidemark_filter_seconds",
            &l,
            &TIME_BUCKETS,
            &time.counts,
            time.sum,
        );
    }
    header(
        out,
        "tidemark_filter_module_loads_total",
        "counter",
        "Filter modules made ready on this node: compiled from WebAssembly, or loaded from a precompiled artifact.",
    );
    let _ = writeln!(
        out,
        "tidemark_filter_module_loads_total{{source=\"compiled\"}} {}",
        filters.compilations.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "tidemark_filter_module_loads_total{{source=\"artifact\"}} {}",
        filters.artifact_loads.load(Relaxed)
    );
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
        let (counts, sum) = m.stats.latency();
        let labels = format!("subscription=\"{}\"", label(&m.name));
        histogram(
            &mut out,
            "tidemark_delivery_attempt_seconds",
            &labels,
            &LATENCY_BUCKETS,
            &counts,
            sum,
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
    header(
        &mut out,
        "tidemark_subscription_filter_quarantined",
        "gauge",
        "1 while the subscription's filter is quarantined after consecutive errors.",
    );
    for m in &subs {
        let quarantined = m.stats.filter.lock().unwrap().state == "quarantined";
        let _ = writeln!(
            out,
            "tidemark_subscription_filter_quarantined{{subscription=\"{}\"}} {}",
            label(&m.name),
            u8::from(quarantined)
        );
    }
    filter_metrics(&mut out, &state.node.filters);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}
