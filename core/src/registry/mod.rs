//! The built-in schema registry, compatible with Confluent's REST API shapes and error codes.
//! Like Confluent's, it is event-sourced: every registration is a record on the `_schemas`
//! topic, and opening the registry replays that topic. Ids are global and stable; registering
//! a schema that exists returns its id.

pub mod external;
mod state;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use apache_avro::Schema;
use bytes::Bytes;

use self::state::State;
pub use self::state::{SubjectVersion, VersionRef};
use crate::codec::SchemaSource;
use crate::log::{Log, NewRecord, TopicSpec};
use crate::{Error, Result, SCHEMAS_TOPIC};

/// Confluent error codes.
pub mod codes {
    pub const SUBJECT_NOT_FOUND: u32 = 40401;
    pub const VERSION_NOT_FOUND: u32 = 40402;
    pub const SCHEMA_NOT_FOUND: u32 = 40403;
    pub const INVALID_SCHEMA: u32 = 42201;
    pub const INVALID_VERSION: u32 = 42202;
    pub const INCOMPATIBLE: u32 = 409;
}

/// One registration as stored on `_schemas`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Registration {
    subject: String,
    version: u32,
    id: u32,
    schema: String,
}

pub struct SchemaRegistry {
    log: Arc<dyn Log>,
    state: RwLock<State>,
    /// Serializes registrations so ids and versions are assigned once.
    write: tokio::sync::Mutex<()>,
}

impl SchemaRegistry {
    /// Replay `_schemas` (creating it if needed) into a registry.
    pub async fn open(log: Arc<dyn Log>) -> Result<SchemaRegistry> {
        log.ensure_topic(
            SCHEMAS_TOPIC,
            &TopicSpec {
                compacted: false,
                ..TopicSpec::new(1)
            },
        )
        .await?;
        let state = Self::replay(log.as_ref()).await?;
        Ok(SchemaRegistry {
            log,
            state: RwLock::new(state),
            write: tokio::sync::Mutex::new(()),
        })
    }

    /// Build a registry view from a log without writing to it (offline tools).
    pub async fn load(log: Arc<dyn Log>) -> Result<SchemaRegistry> {
        let state = match log.partitions(SCHEMAS_TOPIC) {
            Ok(_) => Self::replay(log.as_ref()).await?,
            Err(_) => State::default(),
        };
        Ok(SchemaRegistry {
            log,
            state: RwLock::new(state),
            write: tokio::sync::Mutex::new(()),
        })
    }

    async fn replay(log: &dyn Log) -> Result<State> {
        let mut state = State::default();
        let range = log.offsets(SCHEMAS_TOPIC, 0).await?;
        let mut next = range.start;
        while next < range.end {
            let batch = log
                .read(SCHEMAS_TOPIC, 0, next, 1000, Duration::ZERO)
                .await?;
            let Some(last) = batch.last() else { break };
            next = last.offset + 1;
            for rec in batch {
                let reg: Registration = serde_json::from_slice(&rec.value).map_err(|e| {
                    Error::Corrupt(format!(
                        "_schemas offset {} is not a registration: {e}",
                        rec.offset
                    ))
                })?;
                let schema = parse(&reg.schema)?;
                state.apply(reg.subject, reg.version, reg.id, reg.schema, schema);
            }
        }
        Ok(state)
    }

    pub fn subjects(&self) -> Vec<String> {
        self.state.read().unwrap().subjects()
    }

    pub fn versions(&self, subject: &str) -> Result<Vec<u32>> {
        self.state.read().unwrap().versions(subject)
    }

    pub fn version(&self, subject: &str, version: VersionRef) -> Result<SubjectVersion> {
        self.state.read().unwrap().version(subject, version)
    }

    /// The schema text registered under `id`.
    pub fn schema_text(&self, id: u32) -> Result<String> {
        self.state
            .read()
            .unwrap()
            .text(id)
            .ok_or_else(|| Error::Registry {
                code: codes::SCHEMA_NOT_FOUND,
                message: format!("Schema {id} not found"),
            })
    }

    /// (subject, version) pairs that use schema `id`.
    pub fn subject_versions_of(&self, id: u32) -> Result<Vec<(String, u32)>> {
        self.schema_text(id)?;
        Ok(self.state.read().unwrap().uses_of(id))
    }

    /// `POST /subjects/{s}`: is this schema registered under the subject?
    pub fn lookup(&self, subject: &str, text: &str) -> Result<SubjectVersion> {
        let normalized = normalize(text)?;
        self.state.read().unwrap().lookup(subject, &normalized)
    }

    /// Register `text` under `subject` (BACKWARD-compatible with the latest version), returning
    /// its id. Registering an already-registered schema returns the existing id.
    pub async fn register(&self, subject: &str, text: &str) -> Result<u32> {
        validate_subject(subject)?;
        let normalized = normalize(text)?;
        let schema = parse(&normalized)?;
        let _guard = self.write.lock().await;
        let reg = {
            let state = self.state.read().unwrap();
            if let Ok(found) = state.lookup(subject, &normalized) {
                return Ok(found.id);
            }
            if let Some(latest) = state.latest_schema(subject) {
                check_backward(&latest, &schema).map_err(|details| Error::Registry {
                    code: codes::INCOMPATIBLE,
                    message: format!(
                        "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{details}]"
                    ),
                })?;
            }
            Registration {
                subject: subject.to_string(),
                version: state.next_version(subject),
                id: state.id_for(&normalized),
                schema: normalized,
            }
        };
        let value = serde_json::to_vec(&reg).expect("registration serializes");
        self.log
            .append(
                SCHEMAS_TOPIC,
                vec![NewRecord::new(Bytes::from(subject.to_string()), value)],
            )
            .await?;
        self.state
            .write()
            .unwrap()
            .apply(reg.subject, reg.version, reg.id, reg.schema, schema);
        Ok(reg.id)
    }

    /// `POST /compatibility/subjects/{s}/versions/{v}`: can `text` read data written with that
    /// version? Returns the verdict and, when not compatible, why.
    pub fn check_compatibility(
        &self,
        subject: &str,
        version: VersionRef,
        text: &str,
    ) -> Result<(bool, Vec<String>)> {
        let existing = self.version(subject, version)?;
        let schema = parse(&normalize(text)?)?;
        let writer = self
            .state
            .read()
            .unwrap()
            .schema(existing.id)
            .expect("registered id has a schema");
        Ok(match check_backward(&writer, &schema) {
            Ok(()) => (true, Vec::new()),
            Err(details) => (false, vec![details]),
        })
    }
}

impl SchemaSource for SchemaRegistry {
    fn schema_by_id(&self, id: u32) -> Option<Arc<Schema>> {
        self.state.read().unwrap().schema(id)
    }
}

fn validate_subject(subject: &str) -> Result<()> {
    if subject.is_empty() || subject.len() > 255 || subject.chars().any(char::is_control) {
        return Err(Error::Registry {
            code: 42208,
            message: format!("Subject '{subject}' is invalid: use 1-255 printable characters"),
        });
    }
    Ok(())
}

/// Compact JSON with keys as given: whitespace differences do not make a new schema.
fn normalize(text: &str) -> Result<String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::Registry {
        code: codes::INVALID_SCHEMA,
        message: format!("Invalid schema: not valid JSON ({e})"),
    })?;
    Ok(value.to_string())
}

fn parse(text: &str) -> Result<Schema> {
    Schema::parse_str(text).map_err(|e| Error::Registry {
        code: codes::INVALID_SCHEMA,
        message: format!("Invalid schema: {e}"),
    })
}

/// BACKWARD: a reader using `new` can decode data written with `old`.
fn check_backward(old: &Schema, new: &Schema) -> std::result::Result<(), String> {
    apache_avro::schema_compatibility::SchemaCompatibility::can_read(old, new)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
