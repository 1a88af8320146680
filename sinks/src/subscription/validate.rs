//! Checking a [`SubscriptionSpec`] before anything is stored: every problem is reported with
//! the field it is in, and what would be accepted.

use tidemark_core::rules::{Limits, Rule};

use super::spec::{FunctionSpec, SinkSpec, SubscriptionSpec, WebhookSpec};
use crate::function::Functions;
use crate::guard::DestinationPolicy;
use crate::webhook::format::Format;
use crate::webhook::signature::Secret;
use crate::{Error, Result, secrets};

/// The subscription's rule, compiled. `functions`: the process functions this node declares.
pub fn validate(
    spec: &SubscriptionSpec,
    policy: DestinationPolicy,
    functions: &Functions,
) -> Result<Rule> {
    check_name(&spec.name)?;
    check_start(&spec.start)?;
    let rule = Rule::compile(&spec.rules, "rules", Limits::default())?;
    match &spec.filter {
        Some(r) => {
            tidemark_plugins::parse_reference(r)
                .map_err(|e| Error::invalid("filter", e.to_string()))?;
        }
        None if spec.filter_params.is_some() => {
            return Err(Error::invalid(
                "filter_params",
                "parameters are for a filter's init; name the filter in `filter`",
            ));
        }
        None => {}
    }
    range(
        "filter_quarantine_after",
        spec.filter_quarantine_after as u64,
        1,
        1_000_000,
    )?;
    match &spec.sink {
        SinkSpec::Webhook(w) => check_webhook(w, policy)?,
        SinkSpec::Function(f) => check_function(f, policy, functions)?,
        SinkSpec::Parquet(p) => {
            crate::lake::Lake::check(p)?;
            if let Some(endpoint) = p.s3.as_ref().and_then(|s| s.endpoint.as_deref()) {
                check_url("sink.s3.endpoint", endpoint, policy)?;
            }
            // A local directory is created and probed now: an unwritable path is refused
            // at create time. (An S3 lake is reached when it runs; status shows failures.)
            if !p.path.starts_with("s3://") {
                crate::lake::Lake::open(p, None)?;
            }
        }
        SinkSpec::Kafka(k) => {
            crate::kafka::check(k)?;
            check_brokers("sink.brokers", &k.brokers, policy)?;
            if let Some(r) = &k.schema_registry {
                check_url("sink.schema_registry.url", &r.url, policy)?;
            }
        }
        SinkSpec::Sqs(q) => {
            crate::sqs::check(q)?;
            let field = match q.endpoint {
                Some(_) => "sink.endpoint",
                None => "sink.queue_url",
            };
            check_url(field, &q.service_url()?.to_string(), policy)?;
        }
        SinkSpec::RedisStream(r) => {
            crate::redis_stream::check(r)?;
            let a = r.address()?;
            check_brokers("sink.url", &format!("{}:{}", a.host, a.port), policy)?;
        }
        SinkSpec::Amqp(a) => {
            crate::amqp::check(a)?;
            let addr = a.address()?;
            check_brokers("sink.url", &format!("{}:{}", addr.host, addr.port), policy)?;
        }
        SinkSpec::Nats(n) => {
            crate::nats::check(n)?;
            let (host, port, _) = n.address()?;
            check_brokers("sink.url", &format!("{host}:{port}"), policy)?;
        }
        SinkSpec::Lambda(l) => {
            crate::lambda::check(l)?;
            check_url("sink.endpoint", &l.invoke_url()?.to_string(), policy)?;
        }
        SinkSpec::Iceberg(i) => {
            if let Some(endpoint) = i.s3.as_ref().and_then(|s| s.endpoint.as_deref()) {
                check_url("sink.s3.endpoint", endpoint, policy)?;
            }
            // The warehouse and the catalog file are created and opened now: an unwritable
            // place is refused at create time.
            crate::iceberg::check(i)?;
            if let crate::iceberg::CatalogSpec::Rest {
                uri,
                oauth2_server_uri,
                ..
            } = &i.catalog
            {
                check_url("sink.catalog.uri", uri, policy)?;
                if let Some(token_uri) = oauth2_server_uri {
                    check_url("sink.catalog.oauth2_server_uri", token_uri, policy)?;
                }
            }
            crate::iceberg::probe(i)?;
        }
    }
    let r = &spec.retry;
    range("retry.max_attempts", r.max_attempts as u64, 1, 1000)?;
    range(
        "retry.initial_backoff_ms",
        r.initial_backoff_ms,
        1,
        3_600_000,
    )?;
    range(
        "retry.max_backoff_ms",
        r.max_backoff_ms,
        r.initial_backoff_ms,
        86_400_000,
    )?;
    if let Some(age) = r.max_age_ms {
        range("retry.max_age_ms", age, 1, 30 * 86_400_000)?;
    }
    range("batch.max_events", spec.batch.max_events as u64, 1, 10_000)?;
    range("batch.max_wait_ms", spec.batch.max_wait_ms, 0, 600_000)?;
    if spec.batch.max_events > 1
        && let SinkSpec::Webhook(w) = &spec.sink
        && !w.format.supports_batches()
    {
        return Err(Error::invalid(
            "batch.max_events",
            format!(
                "the {} format carries one event per request; use max_events 1 or another format",
                format_name(w.format)
            ),
        ));
    }
    range(
        "delivery.max_in_flight",
        spec.delivery.max_in_flight as u64,
        1,
        1024,
    )?;
    range(
        "circuit.failure_threshold",
        spec.circuit.failure_threshold as u64,
        1,
        1000,
    )?;
    range("circuit.open_ms", spec.circuit.open_ms, 10, 3_600_000)?;
    if !matches!(
        spec.on_filter_error.as_str(),
        "dead_letter" | "skip" | "deliver"
    ) {
        return Err(Error::invalid(
            "on_filter_error",
            format!(
                "'{}' is not one of dead_letter, skip, deliver",
                spec.on_filter_error
            ),
        ));
    }
    Ok(rule)
}

fn format_name(f: Format) -> String {
    serde_json::to_value(f)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn check_name(name: &str) -> Result<()> {
    tidemark_core::catalog::check_entity_name("subscription", name)
        .map_err(|m| Error::invalid("name", m))
}

fn check_start(start: &str) -> Result<()> {
    match start {
        "latest" | "earliest" => Ok(()),
        t => tidemark_core::time::parse_rfc3339_us(t)
            .map(|_| ())
            .map_err(|e| {
                Error::invalid(
                    "start",
                    format!("expected latest, earliest or an instant: {e}"),
                )
            }),
    }
}

fn range(field: &str, v: u64, min: u64, max: u64) -> Result<()> {
    if (min..=max).contains(&v) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("{v} is out of range {min}..={max}"),
        ))
    }
}

/// An http(s) URL with a host; literal addresses are checked against the guard now (names
/// are checked again on every connection).
fn check_url(field: &str, url: &str, policy: DestinationPolicy) -> Result<http::Uri> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| Error::invalid(field, format!("'{url}' is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(Error::invalid(
                field,
                format!("'{url}' must start with http:// or https://"),
            ));
        }
    }
    let host = uri
        .host()
        .ok_or_else(|| Error::invalid(field, format!("'{url}' has no host")))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let literal = if bare.eq_ignore_ascii_case("localhost") {
        Some(std::net::IpAddr::from([127, 0, 0, 1]))
    } else {
        bare.parse().ok()
    };
    if let Some(ip) = literal {
        policy.check(ip).map_err(|e| Error::invalid(field, e))?;
    }
    Ok(uri)
}

/// `host:port,...` of `field` (Kafka brokers, a Redis, NATS or RabbitMQ server): every
/// address each one resolves to must be allowed. Kafka's producer connects on its own, past
/// the HTTP client's guard, so this is its only check; the other sinks check again at every
/// connect.
fn check_brokers(field: &str, brokers: &str, policy: DestinationPolicy) -> Result<()> {
    use std::net::ToSocketAddrs;
    for broker in brokers.split(',').map(str::trim) {
        let addrs = broker
            .to_socket_addrs()
            .map_err(|e| Error::invalid(field, format!("'{broker}' does not resolve: {e}")))?;
        for a in addrs {
            policy
                .check(a.ip())
                .map_err(|e| Error::invalid(field, format!("'{broker}': {e}")))?;
        }
    }
    Ok(())
}

fn check_secrets(field: &str, values: &[String]) -> Result<()> {
    if values.len() > 2 {
        return Err(Error::invalid(
            field,
            "at most two secrets (the old and the new one during a rotation)",
        ));
    }
    for (i, v) in values.iter().enumerate() {
        if secrets::is_reference(v) {
            continue;
        }
        let at = if values.len() > 1 {
            format!("{field}[{i}]")
        } else {
            field.to_string()
        };
        Secret::parse(v).map_err(|e| Error::invalid(at, e.to_string()))?;
    }
    Ok(())
}

fn check_webhook(w: &WebhookSpec, policy: DestinationPolicy) -> Result<()> {
    check_url("sink.url", &w.url, policy)?;
    check_secrets("sink.secret", &w.secret.list())?;
    range("sink.timeout_ms", w.timeout_ms, 1, 300_000)?;
    for (name, value) in &w.headers {
        let field = format!("sink.headers.{name}");
        let parsed = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Error::invalid(&field, "not a valid header name"))?;
        http::HeaderValue::from_str(value)
            .map_err(|_| Error::invalid(&field, "not a valid header value"))?;
        let n = parsed.as_str();
        if n == "content-type"
            || n == "content-length"
            || n == "host"
            || n.starts_with("webhook-")
            || n.starts_with("ce-")
            || (n == "authorization" && w.bearer_token.is_some())
        {
            return Err(Error::invalid(
                field,
                "this header is set by the sink itself and cannot be overridden",
            ));
        }
    }
    Ok(())
}

/// Where process functions come from, for the errors that point there.
const DECLARE: &str = "process functions are declared by the operator in the server's \
    configuration (`tidemark serve --function NAME=PROGRAM ARGS...` or [functions] in the config \
    file) and named here with sink.function; GET /v1/functions lists them";

fn check_function(
    f: &FunctionSpec,
    policy: DestinationPolicy,
    functions: &Functions,
) -> Result<()> {
    if !f.command.is_empty() {
        return Err(Error::invalid(
            "sink.command",
            format!("commands are not taken from requests: {DECLARE}"),
        ));
    }
    match f.mode.as_str() {
        "http" => {
            if f.function.is_some() {
                return Err(Error::invalid(
                    "sink.function",
                    "mode http calls sink.url; sink.function names a declared process function",
                ));
            }
            let url = f
                .url
                .as_deref()
                .ok_or_else(|| Error::invalid("sink.url", "mode http needs the function url"))?;
            check_url("sink.url", url, policy)?;
        }
        "process" => {
            let Some(name) = &f.function else {
                return Err(Error::invalid(
                    "sink.function",
                    format!("mode process needs the name of a declared function: {DECLARE}"),
                ));
            };
            if f.url.is_some() {
                return Err(Error::invalid("sink.url", "mode process takes no url"));
            }
            if functions.get(name).is_none() {
                let declared = functions.names();
                let listed = if declared.is_empty() {
                    "none is declared on this server".to_string()
                } else {
                    format!("declared: {}", declared.join(", "))
                };
                let shown: String = name.chars().take(100).collect();
                return Err(Error::invalid(
                    "sink.function",
                    format!("'{shown}' is not a declared function ({listed}); {DECLARE}"),
                ));
            }
        }
        other => {
            return Err(Error::invalid(
                "sink.mode",
                format!("'{other}' is not one of http, process"),
            ));
        }
    }
    if !matches!(f.invocation.as_str(), "sync" | "async") {
        return Err(Error::invalid(
            "sink.invocation",
            format!("'{}' is not one of sync, async", f.invocation),
        ));
    }
    range("sink.timeout_ms", f.timeout_ms, 1, 900_000)?;
    range("sink.concurrency", f.concurrency as u64, 1, 1024)?;
    check_secrets("sink.secret", &f.secret.list())
}
