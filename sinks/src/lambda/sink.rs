//! One batch, one Invoke call.

use std::sync::Arc;

use futures::future::BoxFuture;
use http::{StatusCode, Uri};

use super::LambdaSinkSpec;
use crate::Result;
use crate::aws::AwsClient;
use crate::message::{MessageFormat, Renderer};
use crate::sink::{BuildCtx, Delivery, SendError, Sink};

/// Error codes that mean the payload itself was refused.
const REJECTED: &[&str] = &[
    "InvalidRequestContentException",
    "RequestTooLargeException",
    "UnsupportedMediaTypeException",
];

pub(super) struct LambdaSink {
    client: AwsClient,
    url: Uri,
    endpoint: String,
    invocation_type: String,
    renderer: Renderer,
}

impl LambdaSink {
    pub fn new(
        spec: &LambdaSinkSpec,
        client: AwsClient,
        format: MessageFormat,
        ctx: &BuildCtx<'_>,
    ) -> Result<LambdaSink> {
        Ok(LambdaSink {
            client,
            url: spec.invoke_url()?,
            endpoint: spec.endpoint(),
            invocation_type: spec.invocation_type.clone(),
            renderer: Renderer::new(format, ctx.subscription, ctx.source, ctx.replay),
        })
    }
}

impl Sink for LambdaSink {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn send<'a>(
        &'a self,
        batch: &'a [Arc<Delivery>],
        _attempt: u32,
    ) -> BoxFuture<'a, std::result::Result<(), SendError>> {
        Box::pin(async move {
            let payload = self.renderer.many(batch)?;
            let headers = vec![
                ("content-type".to_string(), payload.content_type.to_string()),
                (
                    "x-amz-invocation-type".to_string(),
                    self.invocation_type.clone(),
                ),
            ];
            let answer = self.client.post(&self.url, headers, payload.body).await?;
            if !answer.status.is_success() {
                return Err(answer.failed("Lambda", REJECTED));
            }
            // The function ran and raised: its error payload says why; retried.
            if let Some(kind) = answer.headers.get("x-amz-function-error") {
                let excerpt = String::from_utf8_lossy(&answer.body[..answer.body.len().min(300)])
                    .into_owned();
                return Err(SendError {
                    failure: crate::sink::Failure::Retry { retry_after: None },
                    status: Some(answer.status.as_u16() as i32),
                    message: format!(
                        "the function failed ({}): {}",
                        kind.to_str().unwrap_or("error"),
                        excerpt.trim()
                    ),
                });
            }
            let expected = match self.invocation_type.as_str() {
                "Event" => StatusCode::ACCEPTED,
                _ => StatusCode::OK,
            };
            if answer.status != expected {
                tracing::debug!(status = %answer.status, "Lambda answered an unexpected success");
            }
            Ok(())
        })
    }
}
