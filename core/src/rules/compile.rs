//! Checking a [`RuleSpec`] and turning it into a [`Rule`] that matches fast.

use std::collections::BTreeMap;

use regex::{Regex, RegexBuilder};

use super::spec::{RuleSpec, SizeSpec, ValueSpec};
use crate::event::EventType;
use crate::{Error, Result};

/// How big a rule may get: rules run for every event of every subscription.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Nesting depth of `all`/`any`/`not`.
    pub max_depth: usize,
    /// Conditions and listed values, counted over the whole rule.
    pub max_terms: usize,
    /// Compiled size of each regular expression, in bytes.
    pub max_regex_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 8,
            max_terms: 256,
            max_regex_bytes: 64 << 10,
        }
    }
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub(super) events: Option<Vec<EventType>>,
    pub(super) buckets: Vec<String>,
    pub(super) prefix: Vec<String>,
    pub(super) suffix: Vec<String>,
    pub(super) regex: Option<Regex>,
    pub(super) size: Option<(i64, i64)>,
    pub(super) content_type: Vec<String>,
    pub(super) metadata: BTreeMap<String, ValueSpec>,
    pub(super) tags: BTreeMap<String, ValueSpec>,
    pub(super) requester: Vec<String>,
    pub(super) all: Vec<Rule>,
    pub(super) any: Vec<Rule>,
    pub(super) not: Option<Box<Rule>>,
    /// The spec it came from, to show back.
    pub(super) spec: RuleSpec,
}

struct Checker {
    limits: Limits,
    terms: usize,
}

impl Rule {
    /// Validate `spec`; errors name the field under `at` (e.g. `rules.any[1].regex`).
    pub fn compile(spec: &RuleSpec, at: &str, limits: Limits) -> Result<Rule> {
        Checker { limits, terms: 0 }.rule(spec, at, 0)
    }

    pub fn spec(&self) -> &RuleSpec {
        &self.spec
    }
}

impl Checker {
    fn count(&mut self, n: usize, at: &str) -> Result<()> {
        self.terms += n;
        if self.terms > self.limits.max_terms {
            return Err(Error::invalid(
                at,
                format!(
                    "the rule is too complex: more than {} conditions and values",
                    self.limits.max_terms
                ),
            ));
        }
        Ok(())
    }

    fn rule(&mut self, spec: &RuleSpec, at: &str, depth: usize) -> Result<Rule> {
        if depth > self.limits.max_depth {
            return Err(Error::invalid(
                at,
                format!(
                    "the rule is too complex: nested deeper than {} levels",
                    self.limits.max_depth
                ),
            ));
        }
        let field = |name: &str| format!("{at}.{name}");
        self.count(1, at)?;
        let events = if spec.events.is_empty() {
            None
        } else {
            self.count(spec.events.len(), &field("events"))?;
            let mut types = Vec::new();
            for (i, pattern) in spec.events.iter().enumerate() {
                types.extend(
                    event_pattern(pattern)
                        .map_err(|m| Error::invalid(format!("{}[{i}]", field("events")), m))?,
                );
            }
            types.sort();
            types.dedup();
            Some(types)
        };
        for (name, list) in [
            ("buckets", &spec.buckets),
            ("prefix", &spec.prefix),
            ("suffix", &spec.suffix),
            ("content_type", &spec.content_type),
            ("requester", &spec.requester),
        ] {
            self.count(list.len(), &field(name))?;
            if let Some(i) = list.iter().position(|v| v.is_empty()) {
                return Err(Error::invalid(
                    format!("{}[{i}]", field(name)),
                    "must not be empty",
                ));
            }
        }
        let regex = match &spec.regex {
            None => None,
            Some(r) => {
                self.count(1, &field("regex"))?;
                Some(
                    RegexBuilder::new(r)
                        .size_limit(self.limits.max_regex_bytes)
                        .build()
                        .map_err(|e| {
                            Error::invalid(
                                field("regex"),
                                format!("invalid regular expression: {e}"),
                            )
                        })?,
                )
            }
        };
        let size = match spec.size {
            None => None,
            Some(SizeSpec { min, max }) => {
                let (lo, hi) = (min.unwrap_or(0), max.unwrap_or(i64::MAX));
                if min.is_none() && max.is_none() {
                    return Err(Error::invalid(field("size"), "needs min, max or both"));
                }
                if lo < 0 || hi < lo {
                    return Err(Error::invalid(
                        field("size"),
                        format!("min {lo} and max {hi} do not make a range"),
                    ));
                }
                Some((lo, hi))
            }
        };
        for (name, map) in [("metadata", &spec.metadata), ("tags", &spec.tags)] {
            self.count(map.len(), &field(name))?;
            if map.keys().any(String::is_empty) {
                return Err(Error::invalid(field(name), "names must not be empty"));
            }
        }
        let mut all = Vec::with_capacity(spec.all.len());
        for (i, r) in spec.all.iter().enumerate() {
            all.push(self.rule(r, &format!("{}[{i}]", field("all")), depth + 1)?);
        }
        let mut any = Vec::with_capacity(spec.any.len());
        for (i, r) in spec.any.iter().enumerate() {
            any.push(self.rule(r, &format!("{}[{i}]", field("any")), depth + 1)?);
        }
        let not = match &spec.not {
            None => None,
            Some(r) => Some(Box::new(self.rule(r, &field("not"), depth + 1)?)),
        };
        Ok(Rule {
            events,
            buckets: spec.buckets.clone(),
            prefix: spec.prefix.clone(),
            suffix: spec.suffix.clone(),
            regex,
            size,
            content_type: spec.content_type.clone(),
            metadata: spec.metadata.clone(),
            tags: spec.tags.clone(),
            requester: spec.requester.clone(),
            all,
            any,
            not,
            spec: spec.clone(),
        })
    }
}

/// The event types a pattern stands for.
fn event_pattern(pattern: &str) -> std::result::Result<Vec<EventType>, String> {
    if pattern == "*" {
        return Ok(EventType::ALL.to_vec());
    }
    if let Some(family) = pattern.strip_suffix('*') {
        let found: Vec<EventType> = EventType::ALL
            .iter()
            .copied()
            .filter(|t| t.as_str().starts_with(family))
            .collect();
        if family.ends_with(':') && !found.is_empty() {
            return Ok(found);
        }
        return Err(format!(
            "'{pattern}' matches no event type; a family is written like 'ObjectCreated:*'"
        ));
    }
    EventType::parse(pattern).map(|t| vec![t]).ok_or_else(|| {
        let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        format!(
            "unknown event type '{pattern}'; known types: {}",
            known.join(", ")
        )
    })
}
