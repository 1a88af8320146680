//! Templates of event fields: a record key, a stream name, a subject, a message group.

use tidemark_core::event::ObjectEvent;

use crate::{Error, Result};

/// The fields a template may name.
pub const PLACEHOLDERS: &[&str] = &["bucket", "key", "event_type", "version_id"];

/// Literal text and `{field}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Bucket,
    Key,
    EventType,
    VersionId,
}

impl Template {
    /// Parse `text`; `field` names the setting in errors (`sink.key`).
    pub fn parse(field: &str, text: &str) -> Result<Template> {
        let bad = |m: String| Error::invalid(field, m);
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| bad(format!("'{text}': an unclosed '{{'")))?;
            let name = &rest[open + 1..open + close];
            pieces.push(match name {
                "bucket" => Piece::Bucket,
                "key" => Piece::Key,
                "event_type" => Piece::EventType,
                "version_id" => Piece::VersionId,
                other => {
                    return Err(bad(format!(
                        "'{{{other}}}' is not a field; use {}",
                        PLACEHOLDERS
                            .iter()
                            .map(|p| format!("{{{p}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        if pieces.is_empty() {
            return Err(bad("is empty".into()));
        }
        Ok(Template(pieces))
    }

    /// The literal text, when the template names no field.
    pub fn literal(&self) -> Option<&str> {
        match self.0.as_slice() {
            [Piece::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// The literal text of the template with every field replaced by `with` (to check what a
    /// template can render to, e.g. a subject's allowed characters).
    pub fn sample(&self, with: &str) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                _ => out.push_str(with),
            }
        }
        out
    }

    pub fn render(&self, e: &ObjectEvent) -> String {
        let mut out = String::with_capacity(e.bucket.len() + e.key.len() + 8);
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Bucket => out.push_str(&e.bucket),
                Piece::Key => out.push_str(&e.key),
                Piece::EventType => out.push_str(e.event_type.as_str()),
                Piece::VersionId => out.push_str(e.version_id.as_deref().unwrap_or("")),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_the_event_fields() {
        let mut e = tidemark_core::event::sample_event(3);
        e.bucket = "photos".into();
        e.key = "a/b.jpg".into();
        e.version_id = None;
        let t = Template::parse("sink.key", "{bucket}/{key}").unwrap();
        assert_eq!(t.render(&e), "photos/a/b.jpg");
        assert_eq!(t.literal(), None);
        assert_eq!(t.sample("x"), "x/x");
        let t = Template::parse("sink.key", "x-{event_type}:{version_id}").unwrap();
        assert_eq!(t.render(&e), format!("x-{}:", e.event_type.as_str()));
        assert_eq!(
            Template::parse("s", "plain").unwrap().literal(),
            Some("plain")
        );
        for bad in ["", "{bucket", "{size}"] {
            let e = Template::parse("sink.key", bad).unwrap_err();
            assert!(e.to_string().starts_with("sink.key: "), "{e}");
        }
    }
}
