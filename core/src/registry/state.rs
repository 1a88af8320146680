//! The registry's in-memory state, rebuilt from `_schemas`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use apache_avro::Schema;

use super::codes;
use crate::{Error, Result};

/// A version of a subject, as `GET /subjects/{s}/versions/{v}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
}

/// `{v}` in registry paths: a number or `latest` (or -1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionRef {
    Latest,
    Number(u32),
}

impl VersionRef {
    pub fn parse(text: &str) -> Result<VersionRef> {
        match text {
            "latest" | "-1" => Ok(VersionRef::Latest),
            n => match n.parse::<u32>() {
                Ok(v) if v >= 1 => Ok(VersionRef::Number(v)),
                _ => Err(Error::Registry {
                    code: codes::INVALID_VERSION,
                    message: format!(
                        "The specified version '{text}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
                    ),
                }),
            },
        }
    }
}

#[derive(Default)]
pub(super) struct State {
    /// id -> (normalized text, parsed schema)
    schemas: BTreeMap<u32, (String, Arc<Schema>)>,
    by_text: HashMap<String, u32>,
    /// subject -> schema id of each version (index = version - 1)
    subjects: BTreeMap<String, Vec<u32>>,
}

fn subject_not_found(subject: &str) -> Error {
    Error::Registry {
        code: codes::SUBJECT_NOT_FOUND,
        message: format!("Subject '{subject}' not found."),
    }
}

impl State {
    pub fn apply(&mut self, subject: String, version: u32, id: u32, text: String, schema: Schema) {
        self.by_text.insert(text.clone(), id);
        self.schemas
            .entry(id)
            .or_insert_with(|| (text, Arc::new(schema)));
        let versions = self.subjects.entry(subject).or_default();
        if versions.len() + 1 == version as usize {
            versions.push(id);
        }
    }

    pub fn subjects(&self) -> Vec<String> {
        self.subjects.keys().cloned().collect()
    }

    pub fn versions(&self, subject: &str) -> Result<Vec<u32>> {
        let versions = self
            .subjects
            .get(subject)
            .ok_or_else(|| subject_not_found(subject))?;
        Ok((1..=versions.len() as u32).collect())
    }

    pub fn version(&self, subject: &str, version: VersionRef) -> Result<SubjectVersion> {
        let versions = self
            .subjects
            .get(subject)
            .ok_or_else(|| subject_not_found(subject))?;
        let n = match version {
            VersionRef::Latest => versions.len() as u32,
            VersionRef::Number(n) => n,
        };
        let id = *versions
            .get((n as usize).wrapping_sub(1))
            .ok_or_else(|| Error::Registry {
                code: codes::VERSION_NOT_FOUND,
                message: format!("Version {n} not found."),
            })?;
        Ok(SubjectVersion {
            subject: subject.to_string(),
            version: n,
            id,
            schema: self.schemas[&id].0.clone(),
        })
    }

    pub fn lookup(&self, subject: &str, normalized: &str) -> Result<SubjectVersion> {
        let versions = self
            .subjects
            .get(subject)
            .ok_or_else(|| subject_not_found(subject))?;
        let not_found = || Error::Registry {
            code: codes::SCHEMA_NOT_FOUND,
            message: "Schema not found".into(),
        };
        let id = *self.by_text.get(normalized).ok_or_else(not_found)?;
        let pos = versions
            .iter()
            .position(|v| *v == id)
            .ok_or_else(not_found)?;
        Ok(SubjectVersion {
            subject: subject.to_string(),
            version: pos as u32 + 1,
            id,
            schema: normalized.to_string(),
        })
    }

    pub fn latest_schema(&self, subject: &str) -> Option<Arc<Schema>> {
        let id = self.subjects.get(subject)?.last()?;
        Some(self.schemas[id].1.clone())
    }

    pub fn next_version(&self, subject: &str) -> u32 {
        self.subjects.get(subject).map_or(0, Vec::len) as u32 + 1
    }

    /// The existing id of a schema text, or the next free id.
    pub fn id_for(&self, normalized: &str) -> u32 {
        self.by_text
            .get(normalized)
            .copied()
            .unwrap_or_else(|| self.schemas.keys().next_back().map_or(1, |id| id + 1))
    }

    pub fn schema(&self, id: u32) -> Option<Arc<Schema>> {
        self.schemas.get(&id).map(|(_, s)| s.clone())
    }

    pub fn text(&self, id: u32) -> Option<String> {
        self.schemas.get(&id).map(|(t, _)| t.clone())
    }

    pub fn uses_of(&self, id: u32) -> Vec<(String, u32)> {
        self.subjects
            .iter()
            .flat_map(|(s, ids)| {
                ids.iter()
                    .enumerate()
                    .filter(move |(_, i)| **i == id)
                    .map(move |(v, _)| (s.clone(), v as u32 + 1))
            })
            .collect()
    }
}
