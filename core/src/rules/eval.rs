//! Matching a [`Rule`] against an event.

use std::collections::BTreeMap;

use super::compile::Rule;
use super::spec::ValueSpec;
use crate::codec::view::{EventView, MapView};
use crate::event::{EventSummary, EventType, ObjectEvent};

/// The object attributes a rule looks at: after the event, or before it if it removed the
/// object.
struct Attributes<'a> {
    size: Option<i64>,
    content_type: Option<&'a str>,
    metadata: MapView<'a>,
    tags: MapView<'a>,
}

impl<'a> Attributes<'a> {
    fn of(e: &EventView<'a>) -> Attributes<'a> {
        match (e.size, &e.previous) {
            (None, Some(p)) => Attributes {
                size: Some(p.size),
                content_type: p.content_type,
                metadata: p.metadata,
                tags: p.tags,
            },
            _ => Attributes {
                size: e.size,
                content_type: e.content_type,
                metadata: e.metadata,
                tags: e.tags,
            },
        }
    }
}

fn map_matches(conditions: &BTreeMap<String, ValueSpec>, values: MapView<'_>) -> bool {
    conditions.iter().all(|(name, want)| match want {
        ValueSpec::Equals(v) => values.get(name) == Some(v.as_str()),
        ValueSpec::Exists { exists } => values.get(name).is_some() == *exists,
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
        self.matches_view(&EventView::of(e))
    }

    /// The same test on a borrowed view (a record not decoded into an [`ObjectEvent`]).
    pub fn matches_view(&self, e: &EventView<'_>) -> bool {
        self.matches_with(e, &Attributes::of(e))
    }

    /// Whether the rule tests nothing beyond an event's leading fields (its type, bucket and
    /// key): then [`Rule::matches_summary`] decides as [`Rule::matches_view`] would, and a
    /// reader need not check the rest of a record.
    pub fn tests_only_summary(&self) -> bool {
        self.size.is_none()
            && self.content_type.is_empty()
            && self.requester.is_empty()
            && self.metadata.is_empty()
            && self.tags.is_empty()
            && self
                .all
                .iter()
                .chain(&self.any)
                .all(Rule::tests_only_summary)
            && self.not.as_deref().is_none_or(Rule::tests_only_summary)
    }

    /// Whether the rule takes every event (it has no condition): a reader need not read a
    /// record to test it.
    pub fn takes_every_event(&self) -> bool {
        // Every field named, so a new condition cannot be taken for none.
        let Rule {
            events,
            buckets,
            prefix,
            suffix,
            regex,
            size,
            content_type,
            metadata,
            tags,
            requester,
            all,
            any,
            not,
            spec: _,
        } = self;
        events
            .as_ref()
            .is_none_or(|t| EventType::ALL.iter().all(|e| t.binary_search(e).is_ok()))
            && buckets.is_empty()
            && prefix.is_empty()
            && suffix.is_empty()
            && regex.is_none()
            && size.is_none()
            && content_type.is_empty()
            && requester.is_empty()
            && metadata.is_empty()
            && tags.is_empty()
            && all.iter().all(Rule::takes_every_event)
            && (any.is_empty() || any.iter().any(Rule::takes_every_event))
            && not.is_none()
    }

    /// The test on an event's leading fields; only meaningful when
    /// [`Rule::tests_only_summary`] (the other fields are taken as absent).
    pub fn matches_summary(&self, s: &EventSummary<'_>) -> bool {
        self.matches_view(&EventView::of_summary(s))
    }

    fn matches_with(&self, e: &EventView<'_>, a: &Attributes<'_>) -> bool {
        // Cheapest first.
        if let Some(types) = &self.events
            && types.binary_search(&e.event_type).is_err()
        {
            return false;
        }
        if !self.buckets.is_empty() && !self.buckets.iter().any(|b| b == e.bucket) {
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
                .is_some_and(|r| self.requester.iter().any(|x| x == r))
        {
            return false;
        }
        if !map_matches(&self.metadata, a.metadata) || !map_matches(&self.tags, a.tags) {
            return false;
        }
        if let Some(re) = &self.regex
            && !re.is_match(e.key)
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
