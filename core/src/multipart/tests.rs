//! The contract of a [`PartStore`], run against both implementations; and two stores on the
//! same place seeing each other's parts (two nodes sharing a content store).

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use super::*;

fn body(bytes: &[u8]) -> ByteStream<'static> {
    let chunks: Vec<std::io::Result<Bytes>> = bytes
        .chunks(1000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(chunks).boxed()
}

const ID: &str = "0123456789abcdef0123456789abcdef";

/// What every store must do; `a` and `b` are two handles on the same place.
async fn contract(a: &dyn PartStore, b: &dyn PartStore) {
    assert!(a.description(ID).await.unwrap().is_none());
    a.create(ID, b"{\"key\":\"k\"}".to_vec()).await.unwrap();
    assert_eq!(
        b.description(ID).await.unwrap().as_deref(),
        Some(&b"{\"key\":\"k\"}"[..])
    );
    assert_eq!(b.uploads().await.unwrap().len(), 1);

    // Parts sent to either handle; a number sent again replaces the first.
    let md5 = a.put_part(ID, 2, body(b"second"), 100).await.unwrap();
    assert_eq!(md5, "a9f0e61a137d86aa9db53465e0801612");
    b.put_part(ID, 1, body(b"fist"), 100).await.unwrap();
    a.put_part(ID, 1, body(b"first "), 100).await.unwrap();
    let parts = b.parts(ID).await.unwrap();
    assert_eq!(parts.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!((parts[&1].size, parts[&2].size), (6, 6));
    let joined: Vec<u8> = a
        .concatenated(ID, parts.into_values().collect())
        .map(|c| c.unwrap().to_vec())
        .concat()
        .await;
    assert_eq!(joined, b"first second");

    // Refusals name the problem and keep nothing.
    match a.put_part(ID, 3, body(&[7; 5000]), 4999).await {
        Err(Error::Invalid { field, message }) => {
            assert_eq!(field, "body");
            assert!(message.contains("larger than 4999 bytes"), "{message}");
        }
        other => panic!("oversized part: {other:?}"),
    }
    let broken = futures::stream::iter([
        Ok(Bytes::from_static(b"partial")),
        Err(std::io::Error::other("reset")),
    ])
    .boxed();
    let e = a.put_part(ID, 3, broken, 100).await.unwrap_err();
    assert!(
        e.to_string().contains("the part broke off after 7 bytes"),
        "{e}"
    );
    assert_eq!(a.parts(ID).await.unwrap().len(), 2);

    b.remove(ID).await.unwrap();
    assert!(a.description(ID).await.unwrap().is_none());
    assert!(a.uploads().await.unwrap().is_empty());
}

#[tokio::test]
async fn file_parts_keep_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (FileParts::new(dir.path()), FileParts::new(dir.path()));
    contract(&a, &b).await;
    // Nothing left behind: no `.tmp`, no upload directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn object_store_parts_keep_the_contract() {
    use object_store::ObjectStore as _;
    let memory = Arc::new(object_store::memory::InMemory::new());
    let prefix = object_store::path::Path::from("content");
    let a = ObjectStoreParts::new(memory.clone(), &prefix, "memory://");
    let b = ObjectStoreParts::new(memory.clone(), &prefix, "memory://");
    contract(&a, &b).await;
    // The temporary objects are deleted in the background; give that a moment.
    for _ in 0..100 {
        if memory.list(None).next().await.is_none() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("objects were left behind");
}
