//! `GET /metrics`: Prometheus text exposition (format 0.0.4) of the delivery engine's
//! counters, read at scrape time from the same numbers the status endpoint shows.

use std::fmt::Write;

use axum::http::header;
use axum::response::IntoResponse;
use tidemark_sinks::stats::{LATENCY_BUCKETS, Stats};

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
    let budget = &filters.engine.budget;
    for (name, help, value) in [
        (
            "tidemark_filter_memory_budget_bytes",
            "Linear memory all filter instances together may reserve (--filter-memory-budget-bytes).",
            budget.limit(),
        ),
        (
            "tidemark_filter_memory_reserved_bytes",
            "Linear memory reserved by the filter instances on this node now.",
            budget.reserved(),
        ),
        (
            "tidemark_filter_instances",
            "Filter instances on this node now (subscriptions, replays, watchers, tests).",
            budget.instances(),
        ),
    ] {
        header(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }
}

/// Parquet lake subscriptions: files committed and the rows in them.
fn lake_metrics(out: &mut String, subs: &[tidemark_sinks::delivery::SubscriptionMetrics]) {
    use std::sync::atomic::Ordering::Relaxed;
    header(
        out,
        "tidemark_lake_files_total",
        "counter",
        "Parquet files a lake subscription committed.",
    );
    for m in subs.iter().filter(|m| m.lake) {
        let _ = writeln!(
            out,
            "tidemark_lake_files_total{{subscription=\"{}\"}} {}",
            label(&m.name),
            m.stats.lake_files.load(Relaxed)
        );
    }
    header(
        out,
        "tidemark_lake_rows_total",
        "counter",
        "Rows (events) in the Parquet files a lake subscription committed.",
    );
    for m in subs.iter().filter(|m| m.lake) {
        let _ = writeln!(
            out,
            "tidemark_lake_rows_total{{subscription=\"{}\"}} {}",
            label(&m.name),
            m.stats.lake_rows.load(Relaxed)
        );
    }
}

/// Mutations accepted and refused per interface, and the time appends take to be durable.
fn ingest_metrics(out: &mut String, stats: &tidemark_core::ingest::IngestStats) {
    use tidemark_core::ingest::Interface;
    use tidemark_core::ingest::stats::APPEND_BUCKETS;
    header(
        out,
        "tidemark_ingest_mutations_total",
        "counter",
        "Mutations by interface and outcome: accepted (event durable) or refused.",
    );
    for interface in Interface::ALL {
        let (accepted, refused) = stats.counts(interface);
        let i = interface.as_str();
        let _ = writeln!(
            out,
            "tidemark_ingest_mutations_total{{interface=\"{i}\",outcome=\"accepted\"}} {accepted}"
        );
        let _ = writeln!(
            out,
            "tidemark_ingest_mutations_total{{interface=\"{i}\",outcome=\"refused\"}} {refused}"
        );
    }
    header(
        out,
        "tidemark_ingest_append_seconds",
        "histogram",
        "Time from queueing a batch's events to the log saying they are durable.",
    );
    let (counts, sum) = stats.append_latency();
    histogram(
        out,
        "tidemark_ingest_append_seconds",
        "topic=\"objects\"",
        &APPEND_BUCKETS,
        &counts,
        sum,
    );
}

/// Bytes and segment files of an embedded log partition.
type SizeOnDisk = (u64, u64);

/// Per topic and partition: offsets, and on the embedded log bytes and segments; the index's
/// lag behind the `objects` topic. A log that does not answer leaves its series out (readyz
/// says why).
async fn log_metrics(out: &mut String, app: &super::AppState) {
    use tidemark_core::{CONFIG_TOPIC, OBJECTS_TOPIC, SCHEMAS_TOPIC};
    // (topic, partition, start, end, bytes and segments on the embedded log)
    let mut rows: Vec<(&str, u32, u64, u64, Option<SizeOnDisk>)> = Vec::new();
    for topic in [OBJECTS_TOPIC, SCHEMAS_TOPIC, CONFIG_TOPIC] {
        match &app.node.log.embedded {
            Some(e) => {
                for p in e.stats(topic).unwrap_or_default() {
                    let size = Some((p.bytes, p.segments as u64));
                    rows.push((topic, p.partition, p.start, p.end, size));
                }
            }
            None => {
                for p in 0..app.node.log.log.partitions(topic).unwrap_or(0) {
                    if let Ok(r) = app.node.log.log.offsets(topic, p).await {
                        rows.push((topic, p, r.start, r.end, None));
                    }
                }
            }
        }
    }
    header(
        out,
        "tidemark_log_end_offset",
        "gauge",
        "Offset the next record of a log partition gets (records ever appended).",
    );
    for (t, p, _, end, _) in &rows {
        let _ = writeln!(
            out,
            "tidemark_log_end_offset{{topic=\"{t}\",partition=\"{p}\"}} {end}"
        );
    }
    header(
        out,
        "tidemark_log_records",
        "gauge",
        "Records a log partition keeps now (end minus start offset, after retention).",
    );
    for (t, p, start, end, _) in &rows {
        let _ = writeln!(
            out,
            "tidemark_log_records{{topic=\"{t}\",partition=\"{p}\"}} {}",
            end.saturating_sub(*start)
        );
    }
    header(
        out,
        "tidemark_log_size_bytes",
        "gauge",
        "Bytes of a log partition's segment files (embedded log only).",
    );
    for (t, p, _, _, size) in &rows {
        if let Some((bytes, _)) = size {
            let _ = writeln!(
                out,
                "tidemark_log_size_bytes{{topic=\"{t}\",partition=\"{p}\"}} {bytes}"
            );
        }
    }
    header(
        out,
        "tidemark_log_segments",
        "gauge",
        "Segment files of a log partition (embedded log only).",
    );
    for (t, p, _, _, size) in &rows {
        if let Some((_, segments)) = size {
            let _ = writeln!(
                out,
                "tidemark_log_segments{{topic=\"{t}\",partition=\"{p}\"}} {segments}"
            );
        }
    }
    header(
        out,
        "tidemark_index_lag_events",
        "gauge",
        "Records of an objects partition durable in the log but not yet applied to the index.",
    );
    if let Ok(lag) = app.node.materializer.lag_by_partition().await {
        for (p, n) in lag {
            let _ = writeln!(out, "tidemark_index_lag_events{{partition=\"{p}\"}} {n}");
        }
    }
}

/// The listeners: connections open, accepted, refused and timed out; TLS handshakes that
/// failed; and whether the server runs open on purpose (`--insecure-no-auth`).
fn listener_metrics(out: &mut String, app: &super::AppState) {
    use std::sync::atomic::Ordering::Relaxed;
    header(
        out,
        "tidemark_insecure_no_auth",
        "gauge",
        "1 when a listener is beyond loopback with no token (--insecure-no-auth).",
    );
    let _ = writeln!(
        out,
        "tidemark_insecure_no_auth {}",
        u8::from(app.auth.insecure_no_auth)
    );
    header(
        out,
        "tidemark_connections_open",
        "gauge",
        "Connections open now, by listener.",
    );
    for (name, c) in &app.listeners {
        let _ = writeln!(
            out,
            "tidemark_connections_open{{listener=\"{name}\"}} {}",
            c.open.load(Relaxed)
        );
    }
    header(
        out,
        "tidemark_connections_total",
        "counter",
        "Connections by listener and how they were handled or ended early (accepted, \
         refused at --max-connections, header_timeout, idle_timeout, tls_failed).",
    );
    for (name, c) in &app.listeners {
        for (outcome, n) in [
            ("accepted", &c.accepted),
            ("refused", &c.refused),
            ("header_timeout", &c.header_timeouts),
            ("idle_timeout", &c.idle_timeouts),
            ("tls_failed", &c.tls_failures),
        ] {
            let _ = writeln!(
                out,
                "tidemark_connections_total{{listener=\"{name}\",outcome=\"{outcome}\"}} {}",
                n.load(Relaxed)
            );
        }
    }
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
    header(
        &mut out,
        "tidemark_subscription_filter_capacity",
        "gauge",
        "1 while the subscription's filter waits for room on the server (the filter memory budget or the instance slots); not a filter error.",
    );
    for m in &subs {
        let waiting = m.stats.filter.lock().unwrap().state == "capacity";
        let _ = writeln!(
            out,
            "tidemark_subscription_filter_capacity{{subscription=\"{}\"}} {}",
            label(&m.name),
            u8::from(waiting)
        );
    }
    lake_metrics(&mut out, &subs);
    filter_metrics(&mut out, &state.node.filters);
    ingest_metrics(&mut out, &state.node.ingestor.stats);
    log_metrics(&mut out, &state).await;
    super::watch::metrics(&mut out, &state.watch);
    listener_metrics(&mut out, &state);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}
