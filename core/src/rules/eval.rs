//! Matching a [`Rule`] against an event.

use std::collections::BTreeMap;

use super::compile::Rule;
use super::spec::ValueSpec;
use crate::event::{ObjectEvent, ObjectState};

/// The object attributes a rule looks at: after the event, or before it if it removed the
/// object.
struct Attributes<'a> {
    size: Option<i64>,
    content_type: Option<&'a str>,
    metadata: &'a BTreeMap<String, String>,
    tags: &'a BTreeMap<String, String>,
}

impl<'a> Attributes<'a> {
    fn of(e: &'a ObjectEvent) -> Attributes<'a> {
        match (e.size, &e.previous) {
            (
                None,
                Some(ObjectState {
                    size,
                    content_type,
                    metadata,
                    tags,
                    ..
                }),
            ) => Attributes {
                size: Some(*size),
                content_type: content_type.as_deref(),
                metadata,
                tags,
            },
            _ => Attributes {
                size: e.size,
                content_type: e.content_type.as_deref(),
                metadata: &e.metadata,
                tags: &e.tags,
            },
        }
    }
}

fn map_matches(
    conditions: &BTreeMap<String, ValueSpec>,
    values: &BTreeMap<String, String>,
) -> bool {
    conditions.iter().all(|(name, want)| match want {
        ValueSpec::Equals(v) => values.get(name) == Some(v),
        ValueSpec::Exists { exists } => values.contains_key(name) == *exists,
    })
}

fn content_type_matches(patterns: &[String], ct: Option<&str>) -> bool {
    let Some(ct) = ct else { return false };
    let ct = ct.split(';').next().unwrap_or(ct).trim();
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(family) => ct.starts_with(family),
        None => p.eq_ignore_ascii_case(ct),
    })
}

impl Rule {
    pub fn matches(&self, e: &ObjectEvent) -> bool {
        self.matches_with(e, &Attributes::of(e))
    }

    fn matches_with(&self, e: &ObjectEvent, a: &Attributes<'_>) -> bool {
        // Cheapest first.
        if let Some(types) = &self.events
            && types.binary_search(&e.event_type).is_err()
        {
            return false;
        }
        if !self.buckets.is_empty() && !self.buckets.iter().any(|b| b == &e.bucket) {
            return false;
        }
        if !self.prefix.is_empty() && !self.prefix.iter().any(|p| e.key.starts_with(p.as_str())) {
            return false;
        }
        if !self.suffix.is_empty() && !self.suffix.iter().any(|s| e.key.ends_with(s.as_str())) {
            return false;
        }
        if let Some((lo, hi)) = self.size
            && !a.size.is_some_and(|s| (lo..=hi).contains(&s))
        {
            return false;
        }
        if !self.content_type.is_empty()
            && !content_type_matches(&self.content_type, a.content_type)
        {
            return false;
        }
        if !self.requester.is_empty()
            && !e
                .requester
                .as_ref()
                .is_some_and(|r| self.requester.contains(r))
        {
            return false;
        }
        if !map_matches(&self.metadata, a.metadata) || !map_matches(&self.tags, a.tags) {
            return false;
        }
        if let Some(re) = &self.regex
            && !re.is_match(&e.key)
        {
            return false;
        }
        if !self.all.iter().all(|r| r.matches_with(e, a)) {
            return false;
        }
        if !self.any.is_empty() && !self.any.iter().any(|r| r.matches_with(e, a)) {
            return false;
        }
        if let Some(not) = &self.not
            && not.matches_with(e, a)
        {
            return false;
        }
        true
    }
}
