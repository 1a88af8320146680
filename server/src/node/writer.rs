//! The node's writer: every front writes mutations through it (the HTTP API, content
//! uploads, the S3 API, S3-event ingest, sync and restore jobs). On the embedded log this node
//! writes every partition; on a shared Kafka cluster a batch is split by the owner of each
//! key's partition, each part goes to its owner's `POST /v1/mutations` (or to this node's own
//! ingest), and parts refused because ownership moved are routed again until a deadline.
//! Every mutation gets a typed result (`tidemark_core::ingest::Writer`).
//!
//! A forwarded request carries the caller's own `Authorization` when there is one (the
//! owning node checks the same token: forwarding grants nothing the caller did not have);
//! work that no API token started (an S3 request, a job) is forwarded with the node's
//! bootstrap admin token, which every node of a cluster shares.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderValue;
use serde_json::{Value, json};
use tidemark_core::ingest::ownership::Routes;
use tidemark_core::ingest::writer::result_from_json;
use tidemark_core::ingest::{Accepted, Ingestor, Mutation, RequestContext, Writer, Written};
use tidemark_core::{Error, Result};

use crate::net::client::HttpClient;

/// Marks a forwarded request: its receiver applies what it owns and forwards nothing.
pub const FORWARDED: &str = "x-tidemark-forwarded";
/// How long a mutation may wait for its partition to have a reachable owner.
const DEADLINE: Duration = Duration::from_secs(20);
const RETRY_PAUSE: Duration = Duration::from_millis(200);

tokio::task_local! {
    /// The `Authorization` of the API request being served, set by the access-control
    /// middleware, so no handler has to carry it to the writer.
    pub static CALLER_AUTHORIZATION: Option<HeaderValue>;
}

pub struct NodeWriter {
    ingestor: Arc<Ingestor>,
    /// Owners of the partitions this node does not write; `None`: it writes them all.
    routes: Option<Arc<Routes>>,
    client: HttpClient,
    /// `Bearer <bootstrap admin token>`, for forwarding work no API token started.
    own_authorization: Option<HeaderValue>,
}

impl NodeWriter {
    pub fn new(
        ingestor: Arc<Ingestor>,
        routes: Option<Arc<Routes>>,
        client: HttpClient,
        bootstrap_token: Option<&str>,
    ) -> NodeWriter {
        NodeWriter {
            ingestor,
            routes,
            client,
            own_authorization: bootstrap_token
                .and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok()),
        }
    }

    /// Write one mutation; its event id, or why it was refused (`NotFound`, `Conflict`, ...).
    pub async fn append(&self, mutation: Mutation, ctx: &RequestContext) -> Result<String> {
        let result = self
            .write(vec![mutation], ctx)
            .await?
            .pop()
            .expect("one result per mutation");
        Ok(result?.event_id.to_string())
    }

    /// Apply `mutations`, each on the node that writes its partition. Results are in input
    /// order; the outer error is this node's own log failing.
    async fn route(
        &self,
        routes: &Routes,
        mutations: Vec<Mutation>,
        ctx: &RequestContext,
    ) -> Written {
        let ingestor = &self.ingestor;
        let mut results: Vec<Option<Result<Accepted>>> =
            (0..mutations.len()).map(|_| None).collect();
        let mut pending: Vec<(usize, Mutation)> = mutations.into_iter().enumerate().collect();
        let deadline = Instant::now() + DEADLINE;
        let authorization = CALLER_AUTHORIZATION
            .try_with(Clone::clone)
            .ok()
            .flatten()
            .or_else(|| self.own_authorization.clone());
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
            let local_part = self.apply_local(local, ctx);
            let remote_parts =
                futures::future::join_all(remote.into_iter().map(|(url, part)| {
                    forward(&self.client, url, part, ctx, authorization.as_ref())
                }));
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
                    results[i] = Some(Err(Error::Unavailable(format!(
                        "partition {p} has no reachable owner right now; retry"
                    ))));
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

    async fn apply_local(
        &self,
        part: Vec<(usize, Mutation)>,
        ctx: &RequestContext,
    ) -> Result<Done> {
        if part.is_empty() {
            return Ok(Vec::new());
        }
        let (idx, muts): (Vec<usize>, Vec<Mutation>) = part.into_iter().unzip();
        let keep = muts.clone();
        let outcomes = self.ingestor.apply(muts, ctx).await?;
        Ok(idx
            .into_iter()
            .zip(keep)
            .zip(outcomes)
            .map(|((i, m), o)| match o {
                // Ownership moved on since the routes were read: route it again.
                Err(Error::NotOwner(_)) => (i, m, None),
                o => (i, m, Some(o)),
            })
            .collect())
    }
}

impl Writer for NodeWriter {
    fn write<'a>(
        &'a self,
        mutations: Vec<Mutation>,
        ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Written> {
        async move {
            match &self.routes {
                Some(routes) => self.route(routes, mutations, ctx).await,
                None => self.ingestor.apply(mutations, ctx).await,
            }
        }
        .boxed()
    }
}

/// Per mutation: its result, or `None` to route it again.
type Done = Vec<(usize, Mutation, Option<Result<Accepted>>)>;

async fn forward(
    client: &HttpClient,
    url: String,
    part: Vec<(usize, Mutation)>,
    ctx: &RequestContext,
    authorization: Option<&HeaderValue>,
) -> Done {
    let body = json!({ "mutations": part.iter().map(|(_, m)| m.to_json()).collect::<Vec<_>>() })
        .to_string();
    match send(client, &url, body, ctx, authorization).await {
        Ok(results) if results.len() == part.len() => part
            .into_iter()
            .zip(results)
            .map(|((i, m), r)| match result_from_json(&r) {
                Err(Error::NotOwner(_)) => (i, m, None),
                r => (i, m, Some(r)),
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
    authorization: Option<&HeaderValue>,
) -> anyhow::Result<Vec<Value>> {
    let mut req = hyper::Request::post(format!("{url}/v1/mutations"))
        .header("content-type", "application/json")
        .header(FORWARDED, "1");
    if let Some(authorization) = authorization {
        req = req.header(hyper::header::AUTHORIZATION, authorization);
    }
    for (name, value) in [
        ("x-tidemark-requester", &ctx.requester),
        ("x-forwarded-for", &ctx.source_ip),
        ("x-request-id", &ctx.request_id),
        ("user-agent", &ctx.user_agent),
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
