//! Put/GetBucketNotificationConfiguration, mapped onto subscriptions.
//!
//! Each Queue/Topic/CloudFunction configuration of a bucket is one subscription named
//! `s3n.<bucket>.<id>` (the Id as is when it is a valid name part, else a stable hash of it):
//! rules = the bucket, the events without `s3:`, the key filter's prefix/suffix; sink = a
//! webhook in the `s3` format to the URL the operator configured for the destination ARN
//! (`--s3-notification-target ARN=URL`). The Id and ARN travel in two webhook headers, which
//! is what lets GetBucketNotificationConfiguration rebuild the configuration exactly.
//!
//! A put is the bucket's whole configuration: everything is checked before anything changes;
//! then subscriptions no longer listed are deleted, unchanged ones are kept (with their
//! position), changed ones replaced, new ones created from `latest` and sent an
//! `s3:TestEvent`, as S3 does.

use std::collections::BTreeMap;
use std::sync::Arc;

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tidemark_core::rules::{Limits, Rule, RuleSpec};
use tidemark_sinks::subscription::spec::{SinkSpec, SubscriptionSpec, WebhookSpec};

use super::buckets::require;
use crate::http::AppState;

/// Prefix of the subscriptions a notification configuration owns.
const PREFIX: &str = "s3n.";
/// Webhook headers that carry the configuration's Id and destination ARN.
const ID_HEADER: &str = "x-tidemark-s3-notification-id";
const ARN_HEADER: &str = "x-tidemark-s3-notification-arn";

/// Destination ARN -> webhook URL, from `--s3-notification-target ARN=URL`.
#[derive(Clone, Debug, Default)]
pub struct Targets(BTreeMap<String, String>);

impl Targets {
    /// Parse `ARN=URL` values; the ARN must be an SQS, SNS or Lambda ARN.
    pub fn parse(values: &[String]) -> Result<Targets, String> {
        let mut map = BTreeMap::new();
        for v in values {
            let Some((arn, url)) = v.split_once('=') else {
                return Err(format!("'{v}' is not ARN=URL"));
            };
            let (arn, url) = (arn.trim(), url.trim());
            if Kind::of_arn(arn).is_none() {
                return Err(format!(
                    "'{arn}' is not an arn:aws:sqs:…, arn:aws:sns:… or arn:aws:lambda:… ARN"
                ));
            }
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("the URL of '{arn}' must be http:// or https://"));
            }
            map.insert(arn.to_string(), url.to_string());
        }
        Ok(Targets(map))
    }
}

/// The three kinds of S3 notification destination.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Queue,
    Topic,
    CloudFunction,
}

impl Kind {
    /// From the service part of an ARN (`arn:PARTITION:SERVICE:...`).
    fn of_arn(arn: &str) -> Option<Kind> {
        let mut parts = arn.split(':');
        if parts.next() != Some("arn") {
            return None;
        }
        match parts.nth(1)? {
            "sqs" => Some(Kind::Queue),
            "sns" => Some(Kind::Topic),
            "lambda" => Some(Kind::CloudFunction),
            _ => None,
        }
    }
}

/// One configuration, as the request or a subscription holds it.
struct Config {
    kind: Kind,
    id: Option<String>,
    arn: String,
    events: Vec<String>,
    filter: Option<NotificationConfigurationFilter>,
}

pub async fn put(
    app: &Arc<AppState>,
    targets: &Targets,
    req: S3Request<PutBucketNotificationConfigurationInput>,
) -> S3Result<S3Response<PutBucketNotificationConfigurationOutput>> {
    let actor = req.credentials.as_ref().map(|c| c.access_key.clone());
    let request_id = super::context(&req).request_id.unwrap_or_default();
    let bucket = req.input.bucket.clone();
    require(app, &bucket)?;
    let wanted = desired(&bucket, targets, req.input.notification_configuration)?;
    let subs = &app.node.engine.subscriptions;
    let existing: BTreeMap<String, SubscriptionSpec> = owned(app, &bucket)
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let internal =
        |e: tidemark_sinks::Error| S3Error::with_message(S3ErrorCode::InternalError, e.to_string());
    // Creations and replacements first: one refused (its URL not allowed, ...) leaves the
    // previous configuration's subscriptions in place.
    let removed: Vec<&String> = existing
        .keys()
        .filter(|n| !wanted.contains_key(*n))
        .collect();
    let mut fresh = Vec::new();
    for (name, spec) in wanted.clone() {
        let url = webhook(&spec).map(|w| w.url.clone()).unwrap_or_default();
        match existing.get(&name) {
            Some(old) if *old == spec => {}
            Some(old) => {
                let moved = webhook(old).map(|w| &w.url) != Some(&url);
                subs.replace(spec, actor.clone()).await.map_err(invalid)?;
                if moved {
                    fresh.push(url);
                }
            }
            None => {
                subs.create(spec, actor.clone()).await.map_err(invalid)?;
                fresh.push(url);
            }
        }
    }
    for name in removed {
        app.node
            .engine
            .delete(name, actor.clone())
            .await
            .map_err(internal)?;
    }
    for url in fresh {
        tokio::spawn(test_event(url, bucket.clone(), request_id.clone()));
    }
    Ok(S3Response::new(
        PutBucketNotificationConfigurationOutput::default(),
    ))
}

pub async fn get(
    app: &Arc<AppState>,
    req: S3Request<GetBucketNotificationConfigurationInput>,
) -> S3Result<S3Response<GetBucketNotificationConfigurationOutput>> {
    require(app, &req.input.bucket)?;
    let mut out = GetBucketNotificationConfigurationOutput::default();
    for spec in owned(app, &req.input.bucket) {
        let Some(c) = config_of(&spec) else { continue };
        let events = c.events.into_iter().map(Event::from).collect();
        match c.kind {
            Kind::Queue => {
                out.queue_configurations
                    .get_or_insert_with(Vec::new)
                    .push(QueueConfiguration {
                        events,
                        filter: c.filter,
                        id: c.id,
                        queue_arn: c.arn,
                    })
            }
            Kind::Topic => {
                out.topic_configurations
                    .get_or_insert_with(Vec::new)
                    .push(TopicConfiguration {
                        events,
                        filter: c.filter,
                        id: c.id,
                        topic_arn: c.arn,
                    })
            }
            Kind::CloudFunction => out
                .lambda_function_configurations
                .get_or_insert_with(Vec::new)
                .push(LambdaFunctionConfiguration {
                    events,
                    filter: c.filter,
                    id: c.id,
                    lambda_function_arn: c.arn,
                }),
        }
    }
    Ok(S3Response::new(out))
}

/// The subscriptions `bucket`'s notification configuration owns. Matched on the bucket in
/// the rules as well as the name: bucket names may hold dots, so `s3n.a.` is also a prefix
/// of bucket `a.b`'s names.
fn owned(app: &AppState, bucket: &str) -> Vec<SubscriptionSpec> {
    app.node
        .engine
        .subscriptions
        .list()
        .into_iter()
        .map(|s| s.stored.spec)
        .filter(|s| {
            s.name.starts_with(PREFIX)
                && s.rules.buckets == [bucket]
                && webhook(s).is_some_and(|w| w.headers.contains_key(ID_HEADER))
        })
        .collect()
}

fn webhook(spec: &SubscriptionSpec) -> Option<&WebhookSpec> {
    match &spec.sink {
        SinkSpec::Webhook(w) => Some(w),
        _ => None,
    }
}

/// Every configuration of the request as the subscription it becomes, by name; any problem
/// refuses the whole request before anything changes.
fn desired(
    bucket: &str,
    targets: &Targets,
    conf: NotificationConfiguration,
) -> S3Result<BTreeMap<String, SubscriptionSpec>> {
    let mut configs = Vec::new();
    for q in conf.queue_configurations.unwrap_or_default() {
        configs.push(Config {
            kind: Kind::Queue,
            id: q.id,
            arn: q.queue_arn,
            events: q.events.into_iter().map(String::from).collect(),
            filter: q.filter,
        });
    }
    for t in conf.topic_configurations.unwrap_or_default() {
        configs.push(Config {
            kind: Kind::Topic,
            id: t.id,
            arn: t.topic_arn,
            events: t.events.into_iter().map(String::from).collect(),
            filter: t.filter,
        });
    }
    for l in conf.lambda_function_configurations.unwrap_or_default() {
        configs.push(Config {
            kind: Kind::CloudFunction,
            id: l.id,
            arn: l.lambda_function_arn,
            events: l.events.into_iter().map(String::from).collect(),
            filter: l.filter,
        });
    }
    let unknown: Vec<&str> = configs
        .iter()
        .filter(|c| !targets.0.contains_key(&c.arn) || Kind::of_arn(&c.arn) != Some(c.kind))
        .map(|c| c.arn.as_str())
        .collect();
    if !unknown.is_empty() {
        return Err(s3_error!(
            InvalidArgument,
            "Unable to validate the following destination configurations: {} \
             (configure each with --s3-notification-target ARN=URL, an SQS ARN for a queue, \
             SNS for a topic, Lambda for a function)",
            unknown.join(", ")
        ));
    }
    let mut out: BTreeMap<String, SubscriptionSpec> = BTreeMap::new();
    for c in configs {
        let spec = subscription(bucket, &targets.0[&c.arn], c)?;
        if out.values().any(|other| overlap(&other.rules, &spec.rules)) {
            return Err(s3_error!(
                InvalidArgument,
                "Configurations overlap. Configurations on the same bucket cannot share a \
                 common event type with overlapping prefix and suffix filters"
            ));
        }
        let name = spec.name.clone();
        if out.insert(name, spec).is_some() {
            return Err(s3_error!(
                InvalidArgument,
                "two configurations have the same Id; each Id must be unique"
            ));
        }
    }
    Ok(out)
}

/// Whether two configurations could both match one event: a common event type (`*` covers
/// its family) and key filters that can both hold (one prefix starts the other, one suffix
/// ends the other, or either is absent), which S3 refuses as ambiguous.
fn overlap(a: &RuleSpec, b: &RuleSpec) -> bool {
    let event = |x: &str, y: &str| {
        let covers = |w: &str, n: &str| w.strip_suffix('*').is_some_and(|f| n.starts_with(f));
        x == y || covers(x, y) || covers(y, x)
    };
    let events = a
        .events
        .iter()
        .any(|x| b.events.iter().any(|y| event(x, y)));
    let first = |v: &[String]| v.first().cloned().unwrap_or_default();
    let (pa, pb) = (first(&a.prefix), first(&b.prefix));
    let (sa, sb) = (first(&a.suffix), first(&b.suffix));
    let prefixes = pa.starts_with(&pb) || pb.starts_with(&pa);
    let suffixes = sa.ends_with(&sb) || sb.ends_with(&sa);
    events && prefixes && suffixes
}

/// The subscription one configuration becomes.
fn subscription(bucket: &str, url: &str, c: Config) -> S3Result<SubscriptionSpec> {
    let (prefix, suffix) = key_filter(c.filter.as_ref())?;
    if c.events.is_empty() {
        return Err(s3_error!(
            InvalidArgument,
            "a configuration needs at least one event"
        ));
    }
    let mut events = Vec::new();
    for e in &c.events {
        match e.strip_prefix("s3:") {
            Some(name) if !name.is_empty() => events.push(name.to_string()),
            _ => {
                return Err(s3_error!(
                    InvalidArgument,
                    "the event '{e}' is not supported for notifications (names start with s3:)"
                ));
            }
        }
    }
    let rules = RuleSpec {
        events,
        buckets: vec![bucket.to_string()],
        prefix: prefix.into_iter().collect(),
        suffix: suffix.into_iter().collect(),
        ..Default::default()
    };
    if let Err(e) = Rule::compile(&rules, "rules", Limits::default()) {
        return Err(s3_error!(
            InvalidArgument,
            "the event or filter is not supported for notifications: {e}"
        ));
    }
    let id = match c.id.filter(|i| !i.is_empty()) {
        Some(id) => id,
        None => generated_id(c.kind, &c.arn, &rules),
    };
    if id.len() > 255 || !id.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(s3_error!(
            InvalidArgument,
            "the Id '{id}' must be 1-255 printable ASCII characters"
        ));
    }
    let headers = BTreeMap::from([
        (ID_HEADER.to_string(), id.clone()),
        (ARN_HEADER.to_string(), c.arn.clone()),
    ]);
    let sink: SinkSpec = serde_json::from_value(serde_json::json!({
        "type": "webhook", "url": url, "format": "s3", "headers": headers,
    }))
    .map_err(|e| s3_error!(InternalError, "webhook sink: {e}"))?;
    let spec = serde_json::json!({
        "name": name_of(bucket, &id), "start": "latest", "rules": rules, "sink": sink,
    });
    serde_json::from_value(spec).map_err(|e| s3_error!(InternalError, "subscription: {e}"))
}

/// Prefix and suffix of `Filter.Key.FilterRules`: each at most once, names case-insensitive.
fn key_filter(
    filter: Option<&NotificationConfigurationFilter>,
) -> S3Result<(Option<String>, Option<String>)> {
    let rules = filter
        .and_then(|f| f.key.as_ref())
        .and_then(|k| k.filter_rules.clone())
        .unwrap_or_default();
    let (mut prefix, mut suffix) = (None, None);
    for r in rules {
        let name = r.name.as_ref().map(|n| n.as_str().to_ascii_lowercase());
        let slot = match name.as_deref() {
            Some("prefix") => &mut prefix,
            Some("suffix") => &mut suffix,
            other => {
                return Err(s3_error!(
                    InvalidArgument,
                    "filter rule name must be either prefix or suffix, not '{}'",
                    other.unwrap_or("")
                ));
            }
        };
        if slot.is_some() {
            return Err(s3_error!(
                InvalidArgument,
                "Cannot specify more than one {} rule in a filter.",
                name.unwrap_or_default()
            ));
        }
        let value = r.value.unwrap_or_default();
        if value.len() > 1024 {
            return Err(s3_error!(
                InvalidArgument,
                "a filter rule value is at most 1024 bytes"
            ));
        }
        *slot = Some(value);
    }
    Ok((prefix, suffix))
}

/// The subscription of `bucket`'s configuration `id`: the Id itself when it is a valid name
/// part short enough, else a stable hash of it (so the same Id always names the same one).
fn name_of(bucket: &str, id: &str) -> String {
    let plain = format!("{PREFIX}{bucket}.{id}");
    let ok = plain.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        plain
    } else {
        format!("{PREFIX}{bucket}.h{:016x}", fnv1a(id.as_bytes()))
    }
}

/// An Id for a configuration that has none, from what it says: putting the same Id-less
/// configuration again keeps its subscription (and position) instead of replacing it.
fn generated_id(kind: Kind, arn: &str, rules: &RuleSpec) -> String {
    let text = format!(
        "{}|{arn}|{}",
        kind as u8,
        serde_json::to_string(rules).unwrap_or_default()
    );
    format!("tm-{:016x}", fnv1a(text.as_bytes()))
}

/// 64-bit FNV-1a: stable across builds and platforms, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The configuration a subscription was made from.
fn config_of(spec: &SubscriptionSpec) -> Option<Config> {
    let w = webhook(spec)?;
    let arn = w.headers.get(ARN_HEADER)?.clone();
    let mut rules = Vec::new();
    for (name, values) in [
        ("prefix", &spec.rules.prefix),
        ("suffix", &spec.rules.suffix),
    ] {
        for v in values {
            rules.push(FilterRule {
                name: Some(FilterRuleName::from(name.to_string())),
                value: Some(v.clone()),
            });
        }
    }
    Some(Config {
        kind: Kind::of_arn(&arn)?,
        id: w.headers.get(ID_HEADER).cloned(),
        arn,
        events: spec
            .rules
            .events
            .iter()
            .map(|e| format!("s3:{e}"))
            .collect(),
        filter: (!rules.is_empty()).then_some(NotificationConfigurationFilter {
            key: Some(S3KeyFilter {
                filter_rules: Some(rules),
            }),
        }),
    })
}

/// A refused subscription (its URL not allowed, ...) as `InvalidArgument`.
fn invalid(e: tidemark_sinks::Error) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidArgument, e.to_string())
}

/// S3's `s3:TestEvent` to a new destination; a failure is logged, as S3 sends it once.
async fn test_event(url: String, bucket: String, request_id: String) {
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;
    let body = serde_json::json!({
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "Bucket": bucket,
        "RequestId": request_id,
        "HostId": "tidemark",
    });
    let request = hyper::Request::post(&url)
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_string())));
    let Ok(request) = request else {
        tracing::warn!("s3:TestEvent to {url}: not a valid URL");
        return;
    };
    if url.starts_with("https://") {
        tracing::warn!("s3:TestEvent to {url}: https test events are not sent");
        return;
    }
    let client: Client<HttpConnector, Full<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let sent = tokio::time::timeout(std::time::Duration::from_secs(10), client.request(request));
    match sent.await {
        Ok(Ok(resp)) if resp.status().is_success() => {}
        Ok(Ok(resp)) => tracing::warn!("s3:TestEvent to {url}: answered {}", resp.status()),
        Ok(Err(e)) => tracing::warn!("s3:TestEvent to {url}: {e}"),
        Err(_) => tracing::warn!("s3:TestEvent to {url}: no answer within 10 s"),
    }
}

#[cfg(test)]
mod tests {
    use super::RuleSpec;

    fn rules(events: &[&str], prefix: &str, suffix: &str) -> RuleSpec {
        let one = |v: &str| {
            Some(v.to_string())
                .filter(|v| !v.is_empty())
                .into_iter()
                .collect()
        };
        RuleSpec {
            events: events.iter().map(|e| e.to_string()).collect(),
            prefix: one(prefix),
            suffix: one(suffix),
            ..Default::default()
        }
    }

    #[test]
    fn overlapping_configurations_are_found() {
        let put = rules(&["ObjectCreated:Put"], "images/", ".jpg");
        assert!(super::overlap(&put, &rules(&["ObjectCreated:*"], "", "")));
        assert!(super::overlap(
            &put,
            &rules(&["ObjectCreated:Put"], "images/raw/", "")
        ));
        assert!(!super::overlap(
            &put,
            &rules(&["ObjectCreated:Put"], "docs/", "")
        ));
        assert!(!super::overlap(
            &put,
            &rules(&["ObjectCreated:Put"], "", ".png")
        ));
        assert!(!super::overlap(&put, &rules(&["ObjectRemoved:*"], "", "")));
    }
}
