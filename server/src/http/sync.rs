//! `/v1/sync`: reconcile an external store (a directory on the server's machine, or an S3
//! bucket) into a bucket as a durable job (list, show, cancel); a dry run answers the counts
//! and sample keys at once. An S3 request carries its connection (`s3`, as a lake's); the
//! secret is never shown: a reference (`env:`, `file:`) is kept as given, a value is stored
//! apart as a catalog secret for as long as the job runs, so that the node that resumes the
//! job after a restart (or takes it over) can reach the store. A resumed sync re-diffs: what
//! the first run appended already is found in agreement and not appended again.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tidemark_core::Error;
use tidemark_core::catalog::Catalog;
use tidemark_core::ingest::RequestContext;
use tidemark_core::ingest::sync::{self, Progress, S3Connection, Source, SyncSpec};
use tidemark_replay::jobs::Job;
use tidemark_sinks::lake::S3Spec;
use tidemark_sinks::{self as sinks, secrets};

use super::error::{ApiError, parse_json};
use super::{AppState, State};

const KIND: &str = "sync";
/// The requester every sync event names.
const REQUESTER: &str = "tidemark-sync";
/// Owner of the secret values sync jobs store for as long as they run.
const SECRET_OWNER: &str = "sync-job";

/// `POST /v1/sync`, as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncRequest {
    /// Required for a directory; an S3 source's own bucket by default.
    bucket: Option<String>,
    source: Option<String>,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    dry_run: bool,
    /// How to reach an `s3://` source: the lakes' `s3` object, field for field.
    s3: Option<S3Spec>,
}

impl SyncRequest {
    /// Checked, including that the directory is there and that a secret reference resolves,
    /// so a bad request starts no job. The store itself is first asked by the job. Also
    /// returns what the job needs to run again ([`Resumable`], the secret as given).
    fn validate(self, catalog: &Catalog) -> Result<(SyncSpec, Resumable), Error> {
        let text = self
            .source
            .ok_or_else(|| Error::invalid("source", "is required: DIR or s3://BUCKET[/PREFIX]"))?;
        let resumable = Resumable {
            source: text.clone(),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            s3: self.s3.clone(),
        };
        let mut source = Source::parse(&text)?;
        match &mut source {
            Source::Dir(dir) => {
                if self.s3.is_some() {
                    return Err(Error::invalid(
                        "s3",
                        "is only for s3:// sources; a directory is read by the server directly",
                    ));
                }
                if !dir.is_dir() {
                    return Err(Error::invalid(
                        "source",
                        format!(
                            "{} is not a directory on the server; give the absolute path of a \
                             directory",
                            dir.display()
                        ),
                    ));
                }
            }
            Source::S3(s3) => {
                if let Some(spec) = self.s3 {
                    s3.connection = connection(spec, catalog, false)?;
                }
            }
        }
        let spec = SyncSpec::new(self.bucket, source, self.prefix, self.dry_run)?;
        Ok((spec, resumable))
    }
}

/// What a sync job needs to run again, kept in its record (never shown): the request as
/// given, its S3 secret a reference.
#[derive(serde::Serialize, Deserialize)]
struct Resumable {
    source: String,
    bucket: Option<String>,
    prefix: String,
    s3: Option<S3Spec>,
}

impl Resumable {
    /// The spec again, its secret reference resolved (`secret:` included: the job's own).
    fn spec(self, catalog: &Catalog) -> Result<SyncSpec, Error> {
        let mut source = Source::parse(&self.source)?;
        if let (Source::S3(s3), Some(spec)) = (&mut source, self.s3) {
            s3.connection = connection(spec, catalog, true)?;
        }
        SyncSpec::new(self.bucket, source, self.prefix, false)
    }
}

/// The connection an `s3` object describes, with its secret resolved: a value as given, or
/// an `env:NAME` / `file:PATH` reference looked up on the server as the lakes do (and, with
/// `stored`, a `secret:ID` a job stored).
fn connection(spec: S3Spec, catalog: &Catalog, stored: bool) -> Result<S3Connection, Error> {
    let secret = match spec.secret_access_key {
        Some(r)
            if r.starts_with("env:")
                || r.starts_with("file:")
                || (stored && r.starts_with("secret:")) =>
        {
            Some(secrets::resolve(catalog, &r).map_err(|e| {
                let message = match e {
                    sinks::Error::Invalid { message, .. } => message,
                    other => other.to_string(),
                };
                Error::invalid("s3.secret_access_key", message)
            })?)
        }
        other => other,
    };
    if spec.access_key_id.is_some() != secret.is_some() {
        return Err(Error::invalid(
            "s3",
            "access_key_id and secret_access_key go together: give both, or neither (the \
             server's instance credentials are then used, as for lakes)",
        ));
    }
    Ok(S3Connection {
        endpoint: spec.endpoint,
        region: spec.region,
        access_key_id: spec.access_key_id,
        secret_access_key: secret,
        path_style: spec.path_style,
    })
}

/// What the job shows of its request: never the credentials.
fn spec_json(spec: &SyncSpec) -> Value {
    let mut v = json!({
        "bucket": spec.bucket,
        "prefix": spec.prefix,
        "source": spec.source.describe(),
        "dry_run": spec.dry_run,
    });
    if let Source::S3(s3) = &spec.source {
        let c = &s3.connection;
        v["s3"] = json!({
            "endpoint": c.endpoint,
            "region": c.region,
            "access_key_id": c.access_key_id,
            "path_style": c.path_style,
        });
    }
    v
}

/// A job's progress as the sync reports it.
struct JobProgress(Arc<Job>);

impl Progress for JobProgress {
    fn set_total(&self, total: u64) {
        self.0.set_total(total);
    }
    fn add_done(&self, n: u64) {
        self.0.add_done(n);
    }
    fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }
}

/// A dry run answers what would change (200); otherwise the sync starts as a job (202).
pub async fn create(
    state: State,
    caller: super::auth::Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: SyncRequest = parse_json(&body?)?;
    let catalog = &state.node.catalog;
    let (spec, mut resumable) = req.validate(catalog)?;
    caller.check_bucket(&spec.bucket)?;
    let jobs = &state.node.jobs;
    if spec.dry_run {
        let job = jobs.prepare(KIND, spec_json(&spec), Value::Null);
        let outcome = run(&state, &spec, &job).await?;
        let mut body = outcome;
        body["spec"] = spec_json(&spec);
        body["progress"] = json!({"done": job.done.load(Ordering::Relaxed)});
        return Ok((StatusCode::OK, Json(body)));
    }
    // A secret value is stored apart; the record keeps only its reference.
    if let Some(s3) = &mut resumable.s3
        && let Some(value) = s3.secret_access_key.take()
    {
        s3.secret_access_key = Some(if secrets::is_reference(&value) {
            value
        } else {
            secrets::store(catalog, SECRET_OWNER, &value).await?
        });
    }
    let private = serde_json::to_value(&resumable).expect("a sync request serializes");
    let job = jobs.prepare(KIND, spec_json(&spec), private);
    let job = jobs.start(job.clone(), work(&state, job)).await?;
    Ok((StatusCode::ACCEPTED, Json(job.to_json())))
}

/// Run `spec` for `job` on this node (events name the job as their request id).
async fn run(state: &AppState, spec: &SyncSpec, job: &Arc<Job>) -> Result<Value, Error> {
    let ctx = RequestContext {
        requester: Some(REQUESTER.into()),
        source_ip: None,
        request_id: Some(job.id.clone()),
        user_agent: None,
        interface: tidemark_core::ingest::Interface::Sync,
    };
    let node = &state.node;
    let outcome = sync::run(
        spec,
        state.writer.as_ref(),
        &node.index,
        &node.materializer,
        &ctx,
        Arc::new(JobProgress(job.clone())),
    )
    .await?;
    Ok(outcome.to_json())
}

/// The work of sync `job` on this node, from its record: the first run, or a run again after
/// a takeover (a new diff). Once it ends here, the secret it stored is removed.
pub fn work(
    state: &Arc<AppState>,
    job: Arc<Job>,
) -> impl Future<Output = tidemark_replay::Result<Value>> + Send + 'static {
    let state = state.clone();
    async move {
        let resumable: Resumable = serde_json::from_value(job.private.clone()).map_err(|e| {
            tidemark_replay::Error::Internal(format!("sync {} has a damaged record: {e}", job.id))
        })?;
        let stored: Vec<String> = resumable
            .s3
            .as_ref()
            .and_then(|s3| s3.secret_access_key.clone())
            .filter(|r| r.starts_with("secret:"))
            .into_iter()
            .collect();
        // A run after a takeover compares everything again.
        job.done.store(0, Ordering::Relaxed);
        let outcome = match resumable.spec(&state.node.catalog) {
            Ok(spec) => run(&state, &spec, &job).await,
            Err(e) => Err(e),
        };
        // Another node runs the job now: the secret is its too.
        if !job.is_lost() {
            secrets::forget(&state.node.catalog, &stored).await;
        }
        Ok(outcome?)
    }
}

pub async fn list(state: State) -> Json<Value> {
    super::jobs::list(&state, KIND)
}

pub async fn get(state: State, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    super::jobs::find(&state, KIND, &id)
}

pub async fn cancel(
    state: State,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    super::jobs::cancel(&state, KIND, &id).await
}
