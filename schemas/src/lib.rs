//! Tidemark's Avro schemas, versioned files compiled into the binary.
//!
//! # Layout
//! - `object_event.vN.avsc`: the `ObjectEvent` record written to the `objects` topic.
//! - `config_event.vN.avsc`: the `ConfigEvent` record written to the `_config` topic.
//!
//! Versions only ever grow; each version must be BACKWARD compatible with the one before
//! (a reader on version N decodes data written with N-1). `tests/compat.rs` checks that for
//! every file in this folder, so adding `object_event.v2.avsc` is checked without code changes
//! here beyond listing it below.

/// One versioned schema file.
#[derive(Debug, Clone, Copy)]
pub struct SchemaFile {
    /// Registry subject the schema is registered under (Confluent TopicNameStrategy).
    pub subject: &'static str,
    /// Version within the family, starting at 1.
    pub version: u32,
    /// Avro schema JSON.
    pub text: &'static str,
}

/// Every version of the object event schema, oldest first.
pub const OBJECT_EVENT: &[SchemaFile] = &[
    SchemaFile {
        subject: "objects-value",
        version: 1,
        text: include_str!("../object_event.v1.avsc"),
    },
    // Adds `user_agent`.
    SchemaFile {
        subject: "objects-value",
        version: 2,
        text: include_str!("../object_event.v2.avsc"),
    },
    // Adds `headers`, `checksum`, `part_sizes` (also to the state) and `removed_version_id`.
    SchemaFile {
        subject: "objects-value",
        version: 3,
        text: include_str!("../object_event.v3.avsc"),
    },
];

/// Every version of the config event schema, oldest first.
pub const CONFIG_EVENT: &[SchemaFile] = &[SchemaFile {
    subject: "_config-value",
    version: 1,
    text: include_str!("../config_event.v1.avsc"),
}];

/// The newest object event schema: the one new events are written with.
pub fn object_event_latest() -> &'static SchemaFile {
    OBJECT_EVENT
        .last()
        .expect("at least one object event schema")
}

/// The newest config event schema.
pub fn config_event_latest() -> &'static SchemaFile {
    CONFIG_EVENT
        .last()
        .expect("at least one config event schema")
}
