//! Multipart uploads as objects, shared by every node on the store:
//!
//! ```text
//! <prefix>/multipart/<upload-id>/upload.json           the upload's description
//! <prefix>/multipart/<upload-id>/<nnnnn>.<md5>.part    a part: number and MD5 in its name
//! <prefix>/multipart/<upload-id>/<uuid>.tmp            a part being received
//! ```
//!
//! A part streams to its `.tmp` object while its MD5 is computed, then is copied under its
//! final name: that name exists only once all of its bytes are stored.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::{OpenUpload, PartInfo, PartStore, newest, parse_part_name, part_name};
use crate::blobs::ByteStream;
use crate::blobs::objects::{TempObject, failure, upload_hashed};
use crate::{Error, Result};

const DESCRIPTION: &str = "upload.json";

pub struct ObjectStoreParts {
    store: Arc<dyn ObjectStore>,
    /// `<prefix>/multipart`.
    root: Path,
    /// The store's URL, for errors.
    describe: String,
}

impl ObjectStoreParts {
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &Path, describe: &str) -> ObjectStoreParts {
        ObjectStoreParts {
            store,
            root: prefix.clone().join("multipart"),
            describe: describe.to_string(),
        }
    }

    fn dir(&self, upload_id: &str) -> Path {
        self.root.clone().join(upload_id)
    }

    fn fail(&self, doing: &str) -> impl Fn(object_store::Error) -> Error + '_ {
        let doing = doing.to_string();
        move |e| failure(&self.describe, &doing, e)
    }

    async fn read_description(&self, upload_id: &str) -> Result<Option<Vec<u8>>> {
        let path = self.dir(upload_id).join(DESCRIPTION);
        let got = match self.store.get(&path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.fail("read an upload from")(e)),
        };
        let bytes = got
            .bytes()
            .await
            .map_err(self.fail("read an upload from"))?;
        Ok(Some(bytes.to_vec()))
    }

    async fn list_uploads(&self) -> Result<Vec<OpenUpload>> {
        let listing = self
            .store
            .list_with_delimiter(Some(&self.root))
            .await
            .map_err(self.fail("list the uploads in"))?;
        let mut found = Vec::new();
        for dir in listing.common_prefixes {
            let Some(id) = dir.filename() else { continue };
            // None: being created or removed right now.
            if let Some(description) = self.read_description(id).await? {
                found.push(OpenUpload {
                    id: id.to_string(),
                    description,
                });
            }
        }
        Ok(found)
    }

    async fn receive(
        &self,
        upload_id: &str,
        number: i32,
        body: ByteStream<'_>,
        max_bytes: u64,
    ) -> Result<String> {
        let dir = self.dir(upload_id);
        let tmp = dir
            .clone()
            .join(format!("{}.tmp", uuid::Uuid::now_v7().simple()));
        let hashed = upload_hashed(&self.store, &tmp, body, max_bytes, &self.describe)
            .await
            .map_err(|e| match e {
                Error::Invalid { field, .. } => Error::Invalid {
                    field,
                    message: format!(
                        "the part is larger than {max_bytes} bytes (--max-object-bytes)"
                    ),
                },
                Error::BadInput(m) => Error::BadInput(m.replace("the upload", "the part")),
                e => e,
            })?;
        let mut temp = TempObject::new(self.store.clone(), tmp.clone());
        let earlier = self.list_parts(upload_id).await?;
        let path = dir.clone().join(part_name(number, &hashed.md5));
        self.store
            .copy(&tmp, &path)
            .await
            .map_err(self.fail("store a part in"))?;
        temp.remove().await;
        // Replace an earlier part of the same number (another MD5, so another name).
        for old in earlier.into_values().filter(|p| p.number == number) {
            let old = dir.clone().join(old.name());
            if old != path {
                match self.store.delete(&old).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(self.fail("replace a part in")(e)),
                }
            }
        }
        Ok(hashed.md5)
    }

    async fn list_parts(&self, upload_id: &str) -> Result<BTreeMap<i32, PartInfo>> {
        let dir = self.dir(upload_id);
        let listing = self
            .store
            .list_with_delimiter(Some(&dir))
            .await
            .map_err(self.fail("list the parts in"))?;
        Ok(newest(listing.objects.into_iter().filter_map(|meta| {
            let name = meta.location.filename()?;
            let (number, md5) = parse_part_name(name)?;
            Some(PartInfo {
                number,
                md5: md5.to_string(),
                size: meta.size,
                modified: meta.last_modified.into(),
            })
        })))
    }

    async fn remove_upload(&self, upload_id: &str) -> Result<()> {
        let dir = self.dir(upload_id);
        let fail = self.fail("remove an upload from");
        match self.store.delete(&dir.clone().join(DESCRIPTION)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(fail(e)),
        }
        let listed: Vec<_> = self
            .store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(&fail)?;
        for meta in listed {
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(fail(e)),
            }
        }
        Ok(())
    }
}

impl PartStore for ObjectStoreParts {
    fn create<'a>(&'a self, upload_id: &'a str, description: Vec<u8>) -> BoxFuture<'a, Result<()>> {
        async move {
            let path = self.dir(upload_id).join(DESCRIPTION);
            self.store
                .put(&path, PutPayload::from(description))
                .await
                .map_err(self.fail("create an upload in"))?;
            Ok(())
        }
        .boxed()
    }

    fn description<'a>(&'a self, upload_id: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        self.read_description(upload_id).boxed()
    }

    fn uploads(&self) -> BoxFuture<'_, Result<Vec<OpenUpload>>> {
        self.list_uploads().boxed()
    }

    fn put_part<'a>(
        &'a self,
        upload_id: &'a str,
        number: i32,
        body: ByteStream<'a>,
        max_bytes: u64,
    ) -> BoxFuture<'a, Result<String>> {
        self.receive(upload_id, number, body, max_bytes).boxed()
    }

    fn parts<'a>(&'a self, upload_id: &'a str) -> BoxFuture<'a, Result<BTreeMap<i32, PartInfo>>> {
        self.list_parts(upload_id).boxed()
    }

    fn concatenated(&self, upload_id: &str, parts: Vec<PartInfo>) -> ByteStream<'static> {
        let store = self.store.clone();
        let dir = self.dir(upload_id);
        futures::stream::iter(parts)
            .then(move |part| {
                let (store, path) = (store.clone(), dir.clone().join(part.name()));
                async move {
                    let got = store.get(&path).await.map_err(std::io::Error::other)?;
                    Ok::<_, std::io::Error>(got.into_stream().map_err(std::io::Error::other))
                }
            })
            .try_flatten()
            .boxed()
    }

    fn remove<'a>(&'a self, upload_id: &'a str) -> BoxFuture<'a, Result<()>> {
        self.remove_upload(upload_id).boxed()
    }
}
