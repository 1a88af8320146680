//! `/v1/sync`: reconcile an external store (a directory on the server's machine) into a
//! bucket as a job (list, show, cancel); a dry run answers the counts and sample keys at once.

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
use tidemark_core::ingest::sync::{self, Progress, Source, SyncSpec};
use tidemark_core::ingest::{RequestContext, validate_bucket};
use tidemark_replay::jobs::{Job, Jobs};

use super::State;
use super::error::{ApiError, parse_json};

const KIND: &str = "sync";
/// The requester every sync event names.
const REQUESTER: &str = "tidemark-sync";

/// `POST /v1/sync`, as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncRequest {
    bucket: Option<String>,
    source: Option<String>,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    dry_run: bool,
}

impl SyncRequest {
    /// Checked, including that the directory is there, so a bad request starts no job.
    fn validate(self) -> Result<SyncSpec, Error> {
        let bucket = self
            .bucket
            .ok_or_else(|| Error::invalid("bucket", "is required"))?;
        validate_bucket(&bucket).map_err(|m| Error::invalid("bucket", m))?;
        let source = self
            .source
            .ok_or_else(|| Error::invalid("source", "is required: DIR or s3://BUCKET[/PREFIX]"))?;
        let source = Source::parse(&source)?;
        let Source::Dir(dir) = &source;
        if !dir.is_dir() {
            return Err(Error::invalid(
                "source",
                format!(
                    "{} is not a directory on the server; give the absolute path of a directory",
                    dir.display()
                ),
            ));
        }
        Ok(SyncSpec {
            bucket,
            prefix: self.prefix,
            source,
            dry_run: self.dry_run,
        })
    }
}

fn spec_json(spec: &SyncSpec) -> Value {
    let Source::Dir(dir) = &spec.source;
    json!({
        "bucket": spec.bucket,
        "prefix": spec.prefix,
        "source": dir.display().to_string(),
        "dry_run": spec.dry_run,
    })
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
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: SyncRequest = parse_json(&body?)?;
    let spec = req.validate()?;
    let job = Jobs::prepare(KIND, spec_json(&spec));
    let ctx = RequestContext {
        requester: Some(REQUESTER.into()),
        source_ip: None,
        request_id: Some(job.id.clone()),
    };
    let node = &state.node;
    let (ingestor, index, materializer) = (
        node.ingestor.clone(),
        node.index.clone(),
        node.materializer.clone(),
    );
    if spec.dry_run {
        let progress = Arc::new(JobProgress(job.clone()));
        let outcome = sync::run(&spec, &ingestor, &index, &materializer, &ctx, progress).await?;
        let mut body = outcome.to_json();
        body["spec"] = spec_json(&spec);
        body["progress"] = json!({"done": job.done.load(Ordering::Relaxed)});
        return Ok((StatusCode::OK, Json(body)));
    }
    let me = job.clone();
    let work = async move {
        let progress = Arc::new(JobProgress(me));
        sync::run(&spec, &ingestor, &index, &materializer, &ctx, progress)
            .await
            .map(|o| o.to_json())
            .map_err(|e| e.to_string())
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
