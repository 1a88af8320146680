use super::*;

/// An S3 notification as AWS documents it (event structure version 2.1).
const S3_PUT: &str = r#"{"Records":[{
  "eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1",
  "eventTime":"2026-11-22T14:00:00.123Z","eventName":"ObjectCreated:Copy",
  "userIdentity":{"principalId":"AWS:AIDAEXAMPLE"},
  "requestParameters":{"sourceIPAddress":"203.0.113.7"},
  "responseElements":{"x-amz-request-id":"C3D13FE58DE4C810","x-amz-id-2":"FMyUVURIY8"},
  "s3":{"s3SchemaVersion":"1.0","configurationId":"tidemark",
        "bucket":{"name":"photos","ownerIdentity":{"principalId":"A3NL1KOZZKExample"},"arn":"arn:aws:s3:::photos"},
        "object":{"key":"raw/my+cat%C3%A9.jpg","size":1024,"eTag":"d41d8cd98f00b204e9800998ecf8427e",
                  "versionId":"096fKKXTRTtl3on89fVO","sequencer":"0055AED6DCD90281E5"}}}]}"#;

/// MinIO's webhook body: `EventName`/`Key` on top, `s3:`-prefixed names, `userMetadata`.
const MINIO_PUT: &str = r#"{"EventName":"s3:ObjectCreated:Put","Key":"photos/a.txt","Records":[{
  "eventVersion":"2.0","eventSource":"minio:s3","awsRegion":"","eventTime":"2026-11-22T14:00:01Z",
  "eventName":"s3:ObjectCreated:Put","userIdentity":{"principalId":"minioadmin"},
  "requestParameters":{"principalId":"minioadmin","region":"","sourceIPAddress":"172.17.0.1"},
  "responseElements":{"x-amz-request-id":"17A1B2C3D4E5F6","x-minio-origin-endpoint":"http://172.17.0.2:9000"},
  "s3":{"s3SchemaVersion":"1.0","configurationId":"Config",
        "bucket":{"name":"photos","ownerIdentity":{"principalId":"minioadmin"},"arn":"arn:aws:s3:::photos"},
        "object":{"key":"a.txt","size":5,"eTag":"5d41402abc4b2a76b9719d911017c592","contentType":"text/plain",
                  "userMetadata":{"X-Amz-Meta-Team":"ml","content-type":"text/plain"},"sequencer":"17A1B2C3D4E5F6AA"}},
  "source":{"host":"172.17.0.1","port":"","userAgent":"MinIO (linux; amd64) minio-go/v7"}}]}"#;

fn records(body: &str) -> Vec<Record> {
    parse_notification(body.as_bytes()).unwrap()
}

fn change(r: &Record) -> (&Mutation, &RequestContext, &str) {
    match r {
        Record::Change {
            mutation,
            ctx,
            source_id,
        } => (mutation, ctx, source_id),
        other => panic!("expected a change, got {other:?}"),
    }
}

#[test]
fn s3_record_becomes_a_put_with_its_source() {
    let rs = records(S3_PUT);
    let (m, ctx, id) = change(&rs[0]);
    assert_eq!(
        (m.op, m.event_type),
        (Op::Put, Some(EventType::ObjectCreatedCopy))
    );
    assert_eq!(
        (m.bucket.as_str(), m.key.as_str()),
        ("photos", "raw/my caté.jpg")
    );
    assert_eq!(m.size, Some(1024));
    assert_eq!(m.etag.as_deref(), Some("d41d8cd98f00b204e9800998ecf8427e"));
    assert_eq!(m.version_id.as_deref(), Some("096fKKXTRTtl3on89fVO"));
    assert_eq!(
        m.event_time,
        Some(parse_rfc3339_us("2026-11-22T14:00:00.123Z").unwrap())
    );
    assert_eq!(ctx.requester.as_deref(), Some("AWS:AIDAEXAMPLE"));
    assert_eq!(ctx.source_ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(ctx.request_id.as_deref(), Some("C3D13FE58DE4C810"));
    assert_eq!(id.len(), 64);
}

#[test]
fn minio_record_keeps_user_metadata_without_prefixes() {
    let rs = records(MINIO_PUT);
    let (m, ctx, _) = change(&rs[0]);
    assert_eq!(m.event_type, Some(EventType::ObjectCreatedPut));
    assert_eq!(m.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        m.metadata,
        Some([("team".to_string(), "ml".to_string())].into())
    );
    assert_eq!(ctx.requester.as_deref(), Some("minioadmin"));
}

#[test]
fn the_same_record_has_the_same_identity_and_another_event_another() {
    let a = records(MINIO_PUT);
    let b = records(MINIO_PUT);
    let other = records(&MINIO_PUT.replace("17A1B2C3D4E5F6AA", "17A1B2C3D4E5F6AB"));
    assert_eq!(change(&a[0]).2, change(&b[0]).2);
    assert_ne!(change(&a[0]).2, change(&other[0]).2);
}

#[test]
fn removals_and_tagging_map_to_their_ops() {
    for (name, op, t) in [
        (
            "s3:ObjectRemoved:Delete",
            Op::Delete,
            EventType::ObjectRemovedDelete,
        ),
        (
            "ObjectRemoved:DeleteMarkerCreated",
            Op::Delete,
            EventType::ObjectRemovedDeleteMarkerCreated,
        ),
        ("s3:ObjectTagging:Put", Op::Tag, EventType::ObjectTaggingPut),
        (
            "s3:ObjectCreated:DeleteTagging",
            Op::Untag,
            EventType::ObjectTaggingDelete,
        ),
    ] {
        let body = format!(
            r#"{{"Records":[{{"eventName":"{name}","s3":{{"bucket":{{"name":"photos"}},"object":{{"key":"a","versionId":"v9","sequencer":"01"}}}}}}]}}"#
        );
        let rs = records(&body);
        let (m, _, _) = change(&rs[0]);
        assert_eq!((m.op, m.event_type), (op, Some(t)), "{name}");
        assert_eq!(m.version_id, None, "{name}: no precondition");
    }
}

#[test]
fn test_events_and_reads_are_ignored() {
    let top = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-11-22T14:00:00Z","Bucket":"photos"}"#;
    assert!(matches!(records(top)[0], Record::Ignored(_)));
    let rec = r#"{"Records":[{"eventName":"s3:TestEvent"},{"eventName":"s3:ObjectAccessed:Get"}]}"#;
    assert!(records(rec).iter().all(|r| matches!(r, Record::Ignored(_))));
}

#[test]
fn names_the_field_of_every_problem() {
    let rec = |r: &str| format!(r#"{{"Records":[{{"eventName":"s3:ObjectCreated:Put"}},{r}]}}"#);
    let obj = |o: &str| {
        rec(&format!(
            r#"{{"eventName":"s3:ObjectCreated:Put","s3":{{"bucket":{{"name":"photos"}},"object":{o}}}}}"#
        ))
    };
    let cases = [
        (
            obj(r#"{"key":"a%zz","size":1}"#),
            "Records[1].s3.object.key",
            "bad escape",
        ),
        (obj(r#"{"size":1}"#), "Records[1].s3.object.key", "required"),
        (
            obj(r#"{"key":"a"}"#),
            "Records[1].s3.object.size",
            "required",
        ),
        (
            obj(r#"{"key":"a","size":1,"eTag":5}"#),
            "Records[1].s3.object.eTag",
            "string",
        ),
        (
            rec(r#"{"eventName":"s3:ObjectCreated:Put","s3":{"object":{"key":"a","size":1}}}"#),
            "Records[1].s3.bucket.name",
            "required",
        ),
        (
            rec(r#"{"eventName":"s3:Replication:OperationFailedReplication"}"#),
            "Records[1].eventName",
            "not an object change",
        ),
        (
            rec(
                r#"{"eventName":"s3:ObjectCreated:Put","eventTime":"noon","s3":{"bucket":{"name":"photos"},"object":{"key":"a","size":1}}}"#,
            ),
            "Records[1].eventTime",
            "RFC 3339",
        ),
    ];
    for (body, field, needle) in cases {
        let rs = records(&body);
        match &rs[1] {
            Record::Refused(Error::Invalid { field: f, message }) => {
                assert_eq!(f, field, "{body}: {message}");
                assert!(
                    message.contains(needle),
                    "{body}: '{message}' lacks '{needle}'"
                );
            }
            other => panic!("{body}: {other:?}"),
        }
    }
    for (body, field) in [
        ("{", "body"),
        ("[]", "body"),
        (r#"{"x":1}"#, "Records"),
        (r#"{"Records":{}}"#, "Records"),
    ] {
        match parse_notification(body.as_bytes()) {
            Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field, "{body}"),
            other => panic!("{body}: {other:?}"),
        }
    }
}

#[test]
fn keys_decode_like_query_strings() {
    assert_eq!(decode_key("a+b%2Fc%25").unwrap(), "a b/c%");
    assert!(decode_key("%").is_err());
    assert!(decode_key("%ff").unwrap_err().contains("UTF-8"));
}
