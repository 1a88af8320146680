//! Forwarding mutations to the node that writes their partition (several nodes on one Kafka
//! cluster). A batch is split by owner; each part goes to its owner (or to this node's own
//! ingest), and parts refused because ownership moved are routed again until a deadline.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tidemark_core::Error;
use tidemark_core::ingest::ownership::Routes;
use tidemark_core::ingest::{Mutation, RequestContext};

use super::AppState;
use super::error::ApiError;
use super::mutations::Outcome;

/// Marks a forwarded request: its receiver applies what it owns and forwards nothing.
pub const FORWARDED: &str = "x-tidemark-forwarded";
/// How long a mutation may wait for its partition to have a reachable owner.
const DEADLINE: Duration = Duration::from_secs(20);
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// http:// and https:// (other nodes behind TLS; the CLI's `--server`).
pub type HttpClient = tidemark_sinks::client::PlainClient;

/// A client trusting the web PKI.
pub fn client() -> HttpClient {
    client_trusting(None, "").expect("no CA file to read")
}

/// A client trusting the web PKI and the CA certificates in `ca_file` (named by `flag` in
/// errors).
pub fn client_trusting(
    ca_file: Option<&std::path::Path>,
    flag: &str,
) -> anyhow::Result<HttpClient> {
    tidemark_sinks::client::plain_client(ca_file, flag).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Apply `mutations`, each on the node that writes its partition. Results are in input order.
pub async fn route(
    app: &AppState,
    routes: &Routes,
    mutations: Vec<Mutation>,
    ctx: &RequestContext,
) -> Result<Vec<Outcome>, ApiError> {
    let ingestor = &app.node.ingestor;
    let mut results: Vec<Option<Outcome>> = (0..mutations.len()).map(|_| None).collect();
    let mut pending: Vec<(usize, Mutation)> = mutations.into_iter().enumerate().collect();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut local = Vec::new();
        let mut remote: HashMap<String, Vec<(usize, Mutation)>> = HashMap::new();
        let mut unrouted = Vec::new();
        for (i, m) in pending {
            let p = ingestor.partition_of(&m.bucket, &m.key);
            if ingestor.owns(p) {
                local.push((i, m));
            } else {
                match routes.owner(p).filter(|url| url != routes.url()) {
                    Some(url) => remote.entry(url).or_default().push((i, m)),
                    None => unrouted.push((i, m)),
                }
            }
        }
        let local_part = apply_local(app, local, ctx);
        let remote_parts = futures::future::join_all(
            remote
                .into_iter()
                .map(|(url, part)| forward(&app.forwarder, url, part, ctx)),
        );
        let (local_done, remote_done) = tokio::join!(local_part, remote_parts);
        let mut retry = unrouted;
        for (i, m, outcome) in std::iter::once(local_done?).chain(remote_done).flatten() {
            match outcome {
                Some(o) => results[i] = Some(o),
                None => retry.push((i, m)),
            }
        }
        if retry.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for (i, m) in retry {
                let p = ingestor.partition_of(&m.bucket, &m.key);
                results[i] = Some(Outcome::Refused {
                    error: json!({"code": "unavailable", "message": format!("partition {p} has no reachable owner right now; retry")}),
                });
            }
            break;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
        pending = retry;
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every mutation has a result"))
        .collect())
}

/// Per mutation: its result, or `None` to route it again.
type Done = Vec<(usize, Mutation, Option<Outcome>)>;

async fn apply_local(
    app: &AppState,
    part: Vec<(usize, Mutation)>,
    ctx: &RequestContext,
) -> Result<Done, ApiError> {
    if part.is_empty() {
        return Ok(Vec::new());
    }
    let (idx, muts): (Vec<usize>, Vec<Mutation>) = part.into_iter().unzip();
    let keep = muts.clone();
    let outcomes = app.node.ingestor.apply(muts, ctx).await?;
    Ok(idx
        .into_iter()
        .zip(keep)
        .zip(outcomes)
        .map(|((i, m), o)| match o {
            Err(Error::NotOwner(_)) => (i, m, None),
            o => (i, m, Some(Outcome::from(&o))),
        })
        .collect())
}

async fn forward(
    client: &HttpClient,
    url: String,
    part: Vec<(usize, Mutation)>,
    ctx: &RequestContext,
) -> Done {
    let body = json!({ "mutations": part.iter().map(|(_, m)| m.to_json()).collect::<Vec<_>>() })
        .to_string();
    match send(client, &url, body, ctx).await {
        Ok(results) if results.len() == part.len() => part
            .into_iter()
            .zip(results)
            .map(|((i, m), r)| {
                // Ownership moved on since the route was read: route it again.
                let moved = r["error"]["code"] == "not_owner";
                (i, m, (!moved).then_some(Outcome::Raw(r)))
            })
            .collect(),
        Ok(results) => {
            tracing::warn!(%url, "forwarded {} mutations, got {} results", part.len(), results.len());
            part.into_iter().map(|(i, m)| (i, m, None)).collect()
        }
        Err(e) => {
            tracing::debug!(%url, "forwarding failed: {e}");
            part.into_iter().map(|(i, m)| (i, m, None)).collect()
        }
    }
}

async fn send(
    client: &HttpClient,
    url: &str,
    body: String,
    ctx: &RequestContext,
) -> anyhow::Result<Vec<Value>> {
    let mut req = hyper::Request::post(format!("{url}/v1/mutations"))
        .header("content-type", "application/json")
        .header(FORWARDED, "1");
    if let Some(authorization) = super::auth::forward_authorization() {
        req = req.header(hyper::header::AUTHORIZATION, authorization);
    }
    for (name, value) in [
        ("x-tidemark-requester", &ctx.requester),
        ("x-forwarded-for", &ctx.source_ip),
        ("x-request-id", &ctx.request_id),
    ] {
        if let Some(v) = value {
            req = req.header(name, v);
        }
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(60),
        client.request(req.body(Full::new(Bytes::from(body)))?),
    )
    .await??;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        anyhow::bail!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let v: Value = serde_json::from_slice(&bytes)?;
    Ok(v["results"].as_array().cloned().unwrap_or_default())
}
