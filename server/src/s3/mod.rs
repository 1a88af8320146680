//! The S3-compatible API of `tidemark serve --s3-listen`, on the `s3s` crate: s3s parses
//! requests, checks SigV4 signatures (headers and presigned URLs) against the configured keys
//! and refuses anonymous ones; these modules map each operation onto the node.
//!
//! Every mutation answers only after its event is durable, as the HTTP API's do; reads wait
//! until the index has applied every write acknowledged before them (read-your-writes).
//!
//! # Layout
//! - `access.rs`: `ObjectAccessed:*` / `ObjectAccess:Denied` events, virtual-host addressing.
//! - `body_limit.rs`: `--max-body-bytes` for the requests whose XML body is read whole.
//! - `buckets.rs`: Create/Head/List/DeleteBucket; buckets are catalog entities on `_config`.
//! - `objects.rs`: Put/Get/Head/Delete/DeleteObjects/CopyObject.
//! - `conditions.rs`: If-Match / If-None-Match / If-(Un)Modified-Since.
//! - `listing.rs`: ListObjectsV2 and ListObjects (v1), from the index.
//! - `tagging.rs`: Get/Put/DeleteObjectTagging.
//! - `notifications.rs`: Put/GetBucketNotificationConfiguration as `s3n.` subscriptions.
//! - `versioning.rs`: Put/GetBucketVersioning, reads by versionId, delete markers,
//!   ListObjectVersions.
//! - `multipart.rs`: Create/UploadPart/ListParts/ListMultipartUploads/Abort/Complete.
//! - `errors.rs`: Tidemark errors as S3 error codes.
//! - `headers.rs`: the standard headers, checksum and parts an object keeps.
//! - `integrity.rs`: Content-MD5 and the flexible checksums, checked as bodies stream.
//! - `front.rs`: around s3s: request ids, SigV4 with a `Date` header, presigned URL expiry.

mod access;
mod body_limit;
mod buckets;
mod conditions;
mod errors;
mod front;
mod headers;
mod integrity;
mod listing;
mod multipart;
mod notifications;
mod objects;
mod tagging;
mod versioning;

use std::net::SocketAddr;
use std::sync::Arc;

use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Request, S3Response, S3Result};
use tidemark_core::ingest::RequestContext;

use crate::http::AppState;

/// The one key pair S3 clients sign with.
pub struct Keys {
    pub access: String,
    pub secret: String,
}

#[async_trait::async_trait]
impl s3s::auth::S3Auth for Keys {
    /// An unknown access key is `InvalidAccessKeyId`, as S3 answers (s3s's `SimpleAuth` says
    /// `NotSignedUp`).
    async fn get_secret_key(&self, access_key: &str) -> S3Result<s3s::auth::SecretKey> {
        if access_key == self.access {
            Ok(self.secret.as_str().into())
        } else {
            Err(s3s::s3_error!(
                InvalidAccessKeyId,
                "access key '{access_key}' is not configured (--s3-access-key)"
            ))
        }
    }
}

/// The client's address, put in each request's extensions for the events' `source_ip`.
#[derive(Clone, Copy)]
struct Peer(SocketAddr);

pub use notifications::Targets as NotificationTargets;

/// The S3 front over a node.
struct Tidemark {
    app: Arc<AppState>,
    /// Destination ARN -> webhook URL for bucket notifications.
    targets: NotificationTargets,
}

/// Serve S3 on `listener` until `stop` turns true. With a `domain`, `BUCKET.DOMAIN` hosts
/// address buckets too (virtual-host style).
pub async fn serve(
    listener: crate::net::Listener,
    app: Arc<AppState>,
    keys: Keys,
    targets: NotificationTargets,
    domain: Option<String>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut builder = S3ServiceBuilder::new(Tidemark {
        app: app.clone(),
        targets,
    });
    builder.set_auth(keys);
    if let Some(d) = &domain {
        builder.set_host(access::Domain(d.clone()));
    }
    // XML bodies (DeleteObjects, CompleteMultipartUpload, tagging, ...) are read whole: the
    // API's body limit applies to them; object bodies stream, capped by --max-object-bytes.
    let mut config = s3s::config::S3Config::default();
    config.xml_max_body_size = app.limits.max_body_bytes;
    config.post_object_max_file_size = app.limits.max_object_bytes;
    builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
        config,
    ))));
    let service = builder.build();
    let domain: Arc<Option<String>> = Arc::new(domain);
    let per_connection = move |peer: SocketAddr| {
        let (service, app, domain) = (service.clone(), app.clone(), domain.clone());
        hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            let id = front::RequestId::new();
            req.extensions_mut().insert(Peer(peer));
            req.extensions_mut().insert(id.clone());
            let (mut parts, body) = req.into_parts();
            let method = parts.method.clone();
            let had_body = front::has_body(&parts);
            let refused = front::prepare(&mut parts, &id);
            let target = access::Target::of(&parts, domain.as_deref(), peer);
            let names_key = target.as_ref().is_some_and(|t| t.names_key());
            let oversized = body_limit::oversized(&parts, names_key, app.limits.max_body_bytes);
            let call =
                hyper::service::Service::call(&service, hyper::Request::from_parts(parts, body));
            let app = app.clone();
            async move {
                if let Some(answer) = refused {
                    return Ok(front::finish(answer, &id, &method, had_body).await);
                }
                if let Some(length) = oversized {
                    let answer = body_limit::refusal(length, app.limits.max_body_bytes);
                    return Ok(front::finish(answer, &id, &method, had_body).await);
                }
                let answer = call.await?;
                if answer.status() == hyper::StatusCode::FORBIDDEN
                    && let Some(target) = target
                {
                    access::denied(&app, target).await;
                }
                Ok::<_, s3s::HttpError>(front::finish(answer, &id, &method, had_body).await)
            }
        })
    };
    crate::net::serve(listener, per_connection, stop).await
}

/// Who made `req` and from where, for the events it causes.
fn context<T>(req: &S3Request<T>) -> RequestContext {
    RequestContext {
        requester: req.credentials.as_ref().map(|c| c.access_key.clone()),
        source_ip: req.extensions.get::<Peer>().map(|p| p.0.ip().to_string()),
        request_id: invocation_id(&req.headers).or_else(|| {
            req.extensions
                .get::<front::RequestId>()
                .map(|r| r.0.clone())
        }),
        user_agent: req
            .headers
            .get(hyper::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        interface: tidemark_core::ingest::Interface::S3,
    }
}

/// The SDK's id of the call (`amz-sdk-invocation-id`), kept as the events' request id.
fn invocation_id(headers: &hyper::HeaderMap) -> Option<String> {
    headers
        .get("amz-sdk-invocation-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[async_trait::async_trait]
impl S3 for Tidemark {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        buckets::create(&self.app, req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        buckets::head(&self.app, req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        buckets::list(&self.app, req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        buckets::delete(&self.app, req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        objects::put(&self.app, req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        objects::get(&self.app, req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        objects::head(&self.app, req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        objects::delete(&self.app, req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        objects::delete_many(&self.app, req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        objects::copy(&self.app, req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        listing::list_v2(&self.app, req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        listing::list_v1(&self.app, req).await
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        tagging::get(&self.app, req).await
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        tagging::put(&self.app, req).await
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        tagging::delete(&self.app, req).await
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        versioning::put_config(&self.app, req).await
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        versioning::get_config(&self.app, req).await
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        versioning::list(&self.app, req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        multipart::create(&self.app, req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        multipart::upload_part(&self.app, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        multipart::upload_part_copy(&self.app, req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        multipart::list_parts(&self.app, req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        multipart::list_uploads(&self.app, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        multipart::abort(&self.app, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        multipart::complete(&self.app, req).await
    }

    async fn put_bucket_notification_configuration(
        &self,
        req: S3Request<PutBucketNotificationConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketNotificationConfigurationOutput>> {
        notifications::put(&self.app, &self.targets, req).await
    }

    async fn get_bucket_notification_configuration(
        &self,
        req: S3Request<GetBucketNotificationConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketNotificationConfigurationOutput>> {
        notifications::get(&self.app, req).await
    }
}
