use std::sync::Arc;

use super::*;
use crate::log::embedded::{EmbeddedLog, LogConfig};

const V1: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"}]}"#;
// Adds a field with a default: BACKWARD compatible.
const V2: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"b","type":"long","default":0}]}"#;
// Adds a field without a default: a V3 reader cannot read V2 data.
const V3_BAD: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"c","type":"long"}]}"#;

fn code(e: Error) -> u32 {
    match e {
        Error::Registry { code, .. } => code,
        other => panic!("not a registry error: {other}"),
    }
}

#[tokio::test]
async fn registers_versions_checks_compatibility_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (id1, id2);
    {
        let log: Arc<dyn Log> =
            Arc::new(EmbeddedLog::open(dir.path(), LogConfig::default()).unwrap());
        let reg = SchemaRegistry::open(log).await.unwrap();
        id1 = reg.register("s-value", V1).await.unwrap();
        // Whitespace does not make a new schema.
        assert_eq!(
            reg.register("s-value", &V1.replace(',', " , "))
                .await
                .unwrap(),
            id1
        );
        id2 = reg.register("s-value", V2).await.unwrap();
        assert_ne!(id1, id2);
        // The same schema under another subject keeps its id.
        assert_eq!(reg.register("other-value", V1).await.unwrap(), id1);
        assert_eq!(
            code(reg.register("s-value", V3_BAD).await.unwrap_err()),
            codes::INCOMPATIBLE
        );
        assert_eq!(
            code(reg.register("s-value", "{not json").await.unwrap_err()),
            codes::INVALID_SCHEMA
        );
        assert_eq!(
            code(
                reg.register("s-value", r#"{"type":"nope"}"#)
                    .await
                    .unwrap_err()
            ),
            codes::INVALID_SCHEMA
        );
        // A V1 reader ignores V2's extra field; a V3_BAD reader misses a value for `c`.
        assert!(
            reg.check_compatibility("s-value", VersionRef::Latest, V1)
                .unwrap()
                .0
        );
        let (ok, why) = reg
            .check_compatibility("s-value", VersionRef::Number(1), V3_BAD)
            .unwrap();
        assert!(!ok && !why.is_empty());
    }
    let log: Arc<dyn Log> = Arc::new(EmbeddedLog::open(dir.path(), LogConfig::default()).unwrap());
    let reg = SchemaRegistry::open(log).await.unwrap();
    assert_eq!(
        reg.subjects(),
        vec!["other-value".to_string(), "s-value".to_string()]
    );
    assert_eq!(reg.versions("s-value").unwrap(), vec![1, 2]);
    let latest = reg.version("s-value", VersionRef::Latest).unwrap();
    assert_eq!((latest.version, latest.id), (2, id2));
    assert_eq!(reg.lookup("s-value", V1).unwrap().version, 1);
    assert_eq!(
        code(reg.lookup("s-value", V3_BAD).unwrap_err()),
        codes::SCHEMA_NOT_FOUND
    );
    assert_eq!(
        code(reg.versions("missing").unwrap_err()),
        codes::SUBJECT_NOT_FOUND
    );
    assert_eq!(
        code(reg.version("s-value", VersionRef::Number(9)).unwrap_err()),
        codes::VERSION_NOT_FOUND
    );
    assert_eq!(
        code(VersionRef::parse("zero").unwrap_err()),
        codes::INVALID_VERSION
    );
    assert_eq!(
        code(reg.schema_text(999).unwrap_err()),
        codes::SCHEMA_NOT_FOUND
    );
    assert!(reg.schema_by_id(id1).is_some());
    // A new registration after reopen continues the id sequence.
    let v4 = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"b","type":"long","default":0},{"name":"d","type":"string","default":""}]}"#;
    assert_eq!(reg.register("s-value", v4).await.unwrap(), id2 + 1);
    assert_eq!(
        reg.subject_versions_of(id1).unwrap(),
        vec![("other-value".into(), 1), ("s-value".into(), 1)]
    );
}
