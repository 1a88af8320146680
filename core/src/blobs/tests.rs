//! The contract of a [`BlobStore`], run against every implementation, and what the disk store
//! adds (one file per content, no leftovers). The blocking methods run in `block_in_place`, as
//! callers run them on blocking threads.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::*;

/// `total` bytes of a repeating pattern, in chunks of `chunk`.
fn pattern(total: usize, chunk: usize) -> (Vec<u8>, ByteStream<'static>) {
    let bytes: Vec<u8> = (0..total).map(|i| (i * 7 % 251) as u8).collect();
    let chunks: Vec<std::io::Result<Bytes>> = bytes
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    (bytes, futures::stream::iter(chunks).boxed())
}

fn once(bytes: &'static [u8]) -> ByteStream<'static> {
    futures::stream::iter([Ok(Bytes::from_static(bytes))]).boxed()
}

async fn read_all(store: &dyn BlobStore, sha: &str, range: Option<Range<u64>>) -> Vec<u8> {
    let blob = store.read(sha, range).await.unwrap().expect("blob held");
    let chunks: Vec<_> = blob.body.collect().await;
    chunks.into_iter().flat_map(|c| c.unwrap()).collect()
}

/// What every store must do.
async fn contract(store: &dyn BlobStore) {
    let exists = |sha: &str| tokio::task::block_in_place(|| store.exists(sha)).unwrap();
    let gc = |keep: &HashSet<String>, grace| {
        tokio::task::block_in_place(|| store.gc(keep, grace)).unwrap()
    };
    // Streams in many chunks; names the content by its SHA-256; MD5 as S3's ETag.
    let (bytes, body) = pattern(3 << 20, 64 << 10);
    let stored = store.put(body, 1 << 30).await.unwrap();
    assert_eq!(stored.sha256, hex(&Sha256::digest(&bytes)));
    assert_eq!(stored.size, bytes.len() as u64);
    assert!(!stored.deduplicated);
    assert_eq!(read_all(store, &stored.sha256, None).await, bytes);
    assert_eq!(
        read_all(store, &stored.sha256, Some(1000..300_000)).await,
        &bytes[1000..300_000]
    );
    assert!(exists(&stored.sha256));

    let hello = store.put(once(b"hello"), 5).await.unwrap();
    assert_eq!(hello.md5, "5d41402abc4b2a76b9719d911017c592");
    let again = store.put(once(b"hello"), 5).await.unwrap();
    assert_eq!(
        (again.sha256.as_str(), again.deduplicated),
        (hello.sha256.as_str(), true)
    );

    let empty = store
        .put(futures::stream::empty().boxed(), 0)
        .await
        .unwrap();
    assert_eq!(empty.md5, "d41d8cd98f00b204e9800998ecf8427e");
    assert!(read_all(store, &empty.sha256, None).await.is_empty());

    // Refusals name the problem and keep nothing.
    let absent = hex(&Sha256::digest(b"never stored"));
    assert!(store.read(&absent, None).await.unwrap().is_none());
    assert!(!exists(&absent));
    let e = store.read("../../etc/passwd", None).await.err().unwrap();
    assert!(e.to_string().contains("not a SHA-256"), "{e}");
    let e = store.read(&hello.sha256, Some(2..9)).await.err().unwrap();
    assert!(e.to_string().contains("outside the blob's 5 bytes"), "{e}");
    let (_, big) = pattern(100_000, 1000);
    match store.put(big, 99_999).await {
        Err(Error::Invalid { field, message }) => {
            assert_eq!(field, "body");
            assert!(message.contains("99999 bytes"), "{message}");
        }
        other => panic!("oversized upload: {other:?}"),
    }
    let broken = futures::stream::iter([
        Ok(Bytes::from_static(b"partial")),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        )),
    ])
    .boxed();
    let e = store.put(broken, 100).await.unwrap_err();
    assert!(e.to_string().contains("broke off after 7 bytes"), "{e}");
    assert!(!exists(&hex(&Sha256::digest(b"partial"))));

    // GC keeps what is referenced and what is young; removes the rest.
    let keep: HashSet<String> = [stored.sha256.clone()].into();
    let young = gc(&keep, Duration::from_secs(3600));
    assert_eq!((young.kept, young.removed), (3, 0));
    let swept = gc(&keep, Duration::ZERO);
    assert_eq!((swept.kept, swept.removed, swept.bytes_freed), (1, 2, 5));
    assert!(exists(&stored.sha256));
    assert!(!exists(&hello.sha256));
}

/// Files under `dir`, not counting the packs (small content and their index).
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() == "packs" {
            continue;
        }
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskBlobs::open(dir.path()).unwrap();
    contract(&store).await;
    // What is left: the one referenced blob, in its fan-out directory; no upload leftovers.
    let kept = hex(&Sha256::digest(pattern(3 << 20, 1 << 20).0));
    assert_eq!(files_under(dir.path()), vec![store.path_of(&kept)]);
}

#[tokio::test]
async fn identical_content_is_one_file_and_small_content_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskBlobs::open(dir.path()).unwrap();
    let big = |byte| {
        let chunk = Bytes::from(vec![byte; MAX_PACKED / 2 + 1]);
        futures::stream::iter([Ok(chunk.clone()), Ok(chunk)]).boxed()
    };
    let a = store.put(big(1), 1 << 20).await.unwrap();
    let b = store.put(big(1), 1 << 20).await.unwrap();
    assert_eq!(
        (a.sha256.as_str(), b.deduplicated),
        (b.sha256.as_str(), true)
    );
    assert_eq!(a.size, MAX_PACKED as u64 + 2);
    assert_eq!(files_under(dir.path()), vec![store.path_of(&a.sha256)]);
    // At most MAX_PACKED bytes: packed, no file of its own.
    let (bytes, body) = pattern(MAX_PACKED, 1000);
    let small = store.put(body, 1 << 20).await.unwrap();
    assert_eq!(files_under(dir.path()).len(), 1);
    assert_eq!(read_all(&store, &small.sha256, None).await, bytes);
    assert_eq!(
        read_all(&store, &small.sha256, Some(10..20)).await,
        &bytes[10..20]
    );
}

#[tokio::test]
async fn abandoned_and_crashed_uploads_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskBlobs::open(dir.path()).unwrap();
    // A client that sends a little and then goes quiet; its request is dropped.
    let stalled = futures::stream::iter([Ok(Bytes::from_static(b"first chunk"))])
        .chain(futures::stream::pending())
        .boxed();
    let put = tokio::time::timeout(Duration::from_millis(100), store.put(stalled, 100)).await;
    assert!(put.is_err(), "the upload cannot finish");
    assert!(files_under(dir.path()).is_empty());
    // A crash leaves a part file behind; opening the store removes it.
    std::fs::write(dir.path().join("tmp").join("x.part"), b"torn").unwrap();
    drop(store);
    drop(DiskBlobs::open(dir.path()).unwrap());
    assert!(files_under(dir.path()).is_empty());
}

#[tokio::test]
async fn a_reupload_refreshes_a_blob_gc_was_about_to_take() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskBlobs::open(dir.path()).unwrap();
    let content: &'static [u8] = Box::leak(vec![7u8; MAX_PACKED + 1].into_boxed_slice());
    let a = store.put(once(content), 1 << 20).await.unwrap();
    let old = SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .append(true)
        .open(store.path_of(&a.sha256))
        .unwrap()
        .set_modified(old)
        .unwrap();
    // Uploaded again (its event not yet in the log): GC with a grace period leaves it alone.
    store.put(once(content), 1 << 20).await.unwrap();
    let stats = store
        .gc(&HashSet::new(), Duration::from_secs(3600))
        .unwrap();
    assert_eq!((stats.kept, stats.removed), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_keeps_the_contract() {
    let memory = std::sync::Arc::new(object_store::memory::InMemory::new());
    let prefix = object_store::path::Path::from("shared/content");
    let store = ObjectStoreBlobs::new(memory.clone(), &prefix, "memory://shared");
    contract(&store).await;
    // What is left: the referenced blob and GC's clock; the temporary objects are gone.
    use object_store::ObjectStore as _;
    let mut left: Vec<String> = memory
        .list(None)
        .map(|m| m.unwrap().location.to_string())
        .collect()
        .await;
    left.sort();
    let kept = hex(&Sha256::digest(pattern(3 << 20, 1 << 20).0));
    assert_eq!(
        left,
        vec![
            "shared/content/blobs/clock".to_string(),
            format!("shared/content/blobs/{}/{kept}", &kept[..2]),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_uploads_in_parts_and_reuploads_refresh_a_blob() {
    let store = ObjectStoreBlobs::in_memory();
    // Larger than a part: a multipart upload, in order.
    let (bytes, body) = pattern(objects::PART_BYTES * 2 + 12_345, 100_000);
    let big = store.put(body, 1 << 30).await.unwrap();
    assert_eq!(read_all(&store, &big.sha256, None).await, bytes);
    // Old and unreferenced, but uploaded again: a collection with a grace period keeps it.
    let a = store.put(once(b"old content"), 100).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let gc = |grace| tokio::task::block_in_place(|| store.gc(&HashSet::new(), grace)).unwrap();
    store.put(once(b"old content"), 100).await.unwrap();
    // (The re-upload waited half a second to see that no collection took it meanwhile.)
    let stats = gc(Duration::from_secs(1));
    assert_eq!((stats.kept, stats.removed), (1, 1), "the big blob goes");
    assert!(tokio::task::block_in_place(|| store.exists(&a.sha256)).unwrap());
}
