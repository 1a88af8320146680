//! `/v1/sync`: reconcile an external store (a directory on the server's machine, or an S3
//! bucket) into a bucket as a job (list, show, cancel); a dry run answers the counts and
//! sample keys at once. An S3 request carries its connection (`s3`, as a lake's); the secret
//! is resolved here, kept in the running job only, and never shown.

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
use tidemark_replay::jobs::{Job, Jobs};
use tidemark_sinks::lake::S3Spec;
use tidemark_sinks::{self as sinks, secrets};

use super::State;
use super::error::{ApiError, parse_json};

const KIND: &str = "sync";
/// The requester every sync event names.
const REQUESTER: &str = "tidemark-sync";

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
    /// so a bad request starts no job. The store itself is first asked by the job.
    fn validate(self, catalog: &Catalog) -> Result<SyncSpec, Error> {
        let source = self
            .source
            .ok_or_else(|| Error::invalid("source", "is required: DIR or s3://BUCKET[/PREFIX]"))?;
        let mut source = Source::parse(&source)?;
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
                    s3.connection = connection(spec, catalog)?;
                }
            }
        }
        SyncSpec::new(self.bucket, source, self.prefix, self.dry_run)
    }
}

/// The connection an `s3` object describes, with its secret resolved: a value as given, or
/// an `env:NAME` / `file:PATH` reference looked up on the server as the lakes do.
fn connection(spec: S3Spec, catalog: &Catalog) -> Result<S3Connection, Error> {
    let secret = match spec.secret_access_key {
        Some(r) if r.starts_with("env:") || r.starts_with("file:") => {
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
    let spec = req.validate(&state.node.catalog)?;
    caller.check_bucket(&spec.bucket)?;
    let job = Jobs::prepare(KIND, spec_json(&spec));
    let ctx = RequestContext {
        requester: Some(REQUESTER.into()),
        source_ip: None,
        request_id: Some(job.id.clone()),
        interface: tidemark_core::ingest::Interface::Sync,
    };
    let node = &state.node;
    let (writer, index, materializer) = (
        state.writer.clone(),
        node.index.clone(),
        node.materializer.clone(),
    );
    if spec.dry_run {
        let progress = Arc::new(JobProgress(job.clone()));
        let outcome = sync::run(
            &spec,
            writer.as_ref(),
            &index,
            &materializer,
            &ctx,
            progress,
        )
        .await?;
        let mut body = outcome.to_json();
        body["spec"] = spec_json(&spec);
        body["progress"] = json!({"done": job.done.load(Ordering::Relaxed)});
        return Ok((StatusCode::OK, Json(body)));
    }
    let me = job.clone();
    let work = async move {
        let progress = Arc::new(JobProgress(me));
        sync::run(
            &spec,
            writer.as_ref(),
            &index,
            &materializer,
            &ctx,
            progress,
        )
        .await
        .map(|o| o.to_json())
    };
    let job = node.jobs.run(job, work);
    Ok((StatusCode::ACCEPTED, Json(job.to_json())))
}

pub async fn list(state: State) -> Json<Value> {
    super::jobs::list(&state, KIND)
}

pub async fn get(state: State, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(super::jobs::find(&state, KIND, &id)?.to_json()))
}

pub async fn cancel(
    state: State,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    super::jobs::cancel(&state, KIND, &id)
}
