use super::*;

fn entry(key: &str, size: i64, sha: &str) -> Entry {
    Entry {
        key: key.into(),
        size,
        etag: None,
        sha256: Some(sha.into()),
        content_type: Some("text/plain".into()),
        metadata: None,
    }
}

fn state(size: i64, sha: Option<&str>, content_type: &str) -> ObjectState {
    ObjectState {
        version_id: None,
        sequence: 1,
        size,
        etag: None,
        content_type: Some(content_type.into()),
        sha256: sha.map(str::to_string),
        metadata: [("team".to_string(), "ml".to_string())].into(),
        tags: Default::default(),
        storage_class: None,
        last_modified: 0,
        headers: Default::default(),
        checksum: None,
        part_sizes: None,
    }
}

#[test]
fn merges_sorted_listings_into_exact_changes() {
    let store = [
        entry("a", 1, "s1"),
        entry("b", 2, "s2"),
        entry("c", 3, "s3-new"),
        entry("d", 4, "s4"),
        entry("e", 5, "s5"),
    ];
    let index = [
        ("b".to_string(), state(2, Some("s2"), "text/plain")),
        ("c".to_string(), state(3, Some("s3"), "text/plain")),
        ("d".to_string(), state(4, Some("s4"), "image/png")),
        ("e".to_string(), state(5, None, "text/plain")),
        ("z".to_string(), state(9, Some("s9"), "text/plain")),
    ];
    let changes = diff(&store, &index);
    let summary: Vec<(&str, &str)> = changes.iter().map(|c| (c.action(), c.key())).collect();
    assert_eq!(
        summary,
        [
            ("created", "a"),
            ("updated", "c"),
            ("metadata", "d"),
            ("updated", "e"),
            ("removed", "z"),
        ]
    );
    // A directory has no user metadata: the index's is kept.
    let m = changes[2].mutation("b12");
    assert_eq!(
        (m.op, m.content_type.as_deref()),
        (Op::Metadata, Some("text/plain"))
    );
    assert_eq!(m.metadata.unwrap()["team"], "ml");
    assert_eq!(changes[4].mutation("b12").op, Op::Delete);
}

#[test]
fn nothing_changes_when_both_agree() {
    let store = [entry("k", 7, "s")];
    let index = [("k".to_string(), state(7, Some("s"), "text/plain"))];
    assert!(diff(&store, &index).is_empty());
    assert!(diff(&[], &[]).is_empty());
}

#[test]
fn quoted_and_unquoted_etags_are_the_same() {
    let mut e = entry("k", 7, "s");
    e.sha256 = None;
    e.etag = Some("abc".into());
    let mut s = state(7, None, "text/plain");
    s.etag = Some("\"abc\"".into());
    assert!(diff(&[e], &[("k".to_string(), s)]).is_empty());
}

#[test]
fn s3_specs_take_the_store_bucket_and_narrow_by_both_prefixes() {
    let s3 = |url: &str| Source::parse(url).unwrap();
    let spec = SyncSpec::new(None, s3("s3://photos/2024/"), String::new(), false).unwrap();
    assert_eq!(
        (spec.bucket.as_str(), spec.prefix.as_str()),
        ("photos", "2024/")
    );
    let spec = SyncSpec::new(
        Some("mirror".into()),
        s3("s3://photos/2024/"),
        "2024/06".into(),
        false,
    )
    .unwrap();
    assert_eq!(
        (spec.bucket.as_str(), spec.prefix.as_str()),
        ("mirror", "2024/06")
    );
    let spec = SyncSpec::new(None, s3("s3://photos/2024/06"), "20".into(), false).unwrap();
    assert_eq!(spec.prefix, "2024/06");
    let err = SyncSpec::new(None, s3("s3://photos/2024/"), "2023/".into(), false).unwrap_err();
    assert!(err.to_string().starts_with("prefix: "), "{err}");
    // A directory names no bucket of its own.
    let err = SyncSpec::new(None, Source::parse("/srv").unwrap(), String::new(), false);
    assert!(err.unwrap_err().to_string().starts_with("bucket: "));
    assert_eq!(s3("s3://photos/2024/").describe(), "s3://photos/2024/");
}

#[test]
fn multipart_etags_compare_as_etags() {
    let mut e = entry("k", 7, "s");
    e.sha256 = None;
    e.etag = Some("0123abcd-3".into());
    let mut s = state(7, None, "text/plain");
    s.etag = Some("0123abcd-3".into());
    e.metadata = Some(s.metadata.clone());
    assert!(diff(std::slice::from_ref(&e), &[("k".to_string(), s.clone())]).is_empty());
    e.etag = Some("0123abcd-4".into());
    let changes = diff(&[e], &[("k".to_string(), s)]);
    assert_eq!(changes[0].action(), "updated");
}
