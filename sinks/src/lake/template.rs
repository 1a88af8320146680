//! Hive partition templates: `bucket={bucket}/dt={yyyy-MM-dd}/hour={HH}` turns an event into
//! the directory its row goes to, relative to the lake's root.
//!
//! Paths depend on the event alone (its bucket, type and event time in UTC), never on the
//! clock, so re-running the same log offsets writes the same paths. Values are escaped as
//! Hive and Spark escape partition values (`/` → `%2F`, `=` → `%3D`, …), which DuckDB, pyarrow
//! and Spark decode back, so no value can add a directory level or a `name=` pair.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tidemark_core::codec::view::EventView;
use tidemark_core::event::ObjectEvent;

use crate::{Error, Result};

/// The template used when a subscription names none.
pub const DEFAULT: &str = "bucket={bucket}/dt={yyyy-MM-dd}/hour={HH}";

/// A template that cannot be used: the lake's settings are wrong.
fn bad(message: impl Into<String>) -> Error {
    Error::Config(message.into())
}

/// Hive's and Spark's name for a null or empty partition value; they read it back as NULL.
const HIVE_DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

const FIELD_NAMES: &str = "bucket, event_type, yyyy, MM, dd, HH, yyyy-MM-dd, yyyy-MM-dd-HH";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Bucket,
    EventType,
    Year,
    Month,
    Day,
    Hour,
    Date,
    DateHour,
}

impl Field {
    fn parse(name: &str) -> Option<Field> {
        Some(match name {
            "bucket" => Field::Bucket,
            "event_type" => Field::EventType,
            "yyyy" => Field::Year,
            "MM" => Field::Month,
            "dd" => Field::Day,
            "HH" => Field::Hour,
            "yyyy-MM-dd" => Field::Date,
            "yyyy-MM-dd-HH" => Field::DateHour,
            _ => return None,
        })
    }

    fn is_time(self) -> bool {
        !matches!(self, Field::Bucket | Field::EventType)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Literal text, escaped once at parse time.
    Text(String),
    Field(Field),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    name: String,
    parts: Vec<Part>,
}

/// A parsed partition template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    segments: Vec<Segment>,
    uses_time: bool,
}

impl Default for Template {
    fn default() -> Self {
        Template::parse(DEFAULT).expect("the default template parses")
    }
}

impl Template {
    /// Parse and check a template; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<Template> {
        if text.is_empty() {
            return Err(bad("partition template is empty"));
        }
        if text.starts_with('/') {
            return Err(bad(format!(
                "partition template '{text}' starts with '/'; it is relative to the lake's root"
            )));
        }
        if text.contains("..") {
            return Err(bad(format!("partition template '{text}' contains '..'")));
        }
        let mut segments: Vec<Segment> = Vec::new();
        for seg in text.split('/') {
            if seg.is_empty() {
                return Err(bad(format!(
                    "partition template '{text}' has an empty path segment"
                )));
            }
            let Some((name, value)) = seg.split_once('=') else {
                return Err(bad(format!(
                    "partition segment '{seg}' is not name=value (Hive style, e.g. dt={{yyyy-MM-dd}})"
                )));
            };
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(bad(format!(
                    "partition name '{name}' in segment '{seg}' must be non-empty and use only a-z, 0-9 and _"
                )));
            }
            if segments.iter().any(|s| s.name == name) {
                return Err(bad(format!(
                    "partition name '{name}' appears twice in partition template '{text}'"
                )));
            }
            let parts = parse_value(value, seg)?;
            check_shadowing(name, &parts)?;
            segments.push(Segment {
                name: name.to_string(),
                parts,
            });
        }
        let uses_time = segments
            .iter()
            .flat_map(|s| &s.parts)
            .any(|p| matches!(p, Part::Field(f) if f.is_time()));
        Ok(Template {
            text: text.to_string(),
            segments,
            uses_time,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The partition column names readers see, in path order: `["bucket", "dt", "hour"]`.
    pub fn names(&self) -> Vec<&str> {
        self.segments.iter().map(|s| s.name.as_str()).collect()
    }

    /// The directory of `e`, relative to the lake's root, without a trailing `/`.
    pub fn render(&self, e: &ObjectEvent) -> String {
        let mut out = String::with_capacity(self.text.len() + 16);
        self.render_into(&EventView::of(e), &mut out);
        out
    }

    /// [`render`](Self::render) of a view, appended to `out` so a caller can reuse one buffer.
    pub fn render_into(&self, e: &EventView<'_>, out: &mut String) {
        let t = if self.uses_time {
            Civil::of_micros(e.event_time)
        } else {
            Civil::default()
        };
        for (i, seg) in self.segments.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            out.push_str(&seg.name);
            out.push('=');
            let start = out.len();
            for part in &seg.parts {
                match part {
                    Part::Text(s) => out.push_str(s),
                    Part::Field(Field::Bucket) => escape_into(e.bucket, out),
                    Part::Field(Field::EventType) => {
                        // `ObjectCreated:Put` → `ObjectCreated_Put`: readable in a path, and
                        // type names have no other character that needs escaping.
                        for c in e.event_type.as_str().chars() {
                            push_escaped(if c == ':' { '_' } else { c }, out);
                        }
                    }
                    Part::Field(f) => t.write(*f, out),
                }
            }
            if out.len() == start {
                out.push_str(HIVE_DEFAULT_PARTITION);
            }
        }
    }
}

fn parse_value(value: &str, seg: &str) -> Result<Vec<Part>> {
    if value.is_empty() {
        return Err(bad(format!("partition segment '{seg}' has an empty value")));
    }
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = value;
    while let Some(c) = rest.chars().next() {
        match c {
            '{' => {
                let Some(end) = rest.find('}') else {
                    return Err(bad(format!("unclosed '{{' in partition segment '{seg}'")));
                };
                let name = &rest[1..end];
                let Some(field) = Field::parse(name) else {
                    return Err(bad(format!(
                        "unknown field '{name}' in partition template; use {FIELD_NAMES}"
                    )));
                };
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(Part::Field(field));
                rest = &rest[end + 1..];
            }
            '}' => return Err(bad(format!("unmatched '}}' in partition segment '{seg}'"))),
            c if c.is_control() => {
                return Err(bad(format!(
                    "partition segment '{}' contains a control character",
                    seg.escape_debug()
                )));
            }
            c => {
                push_escaped(c, &mut text);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(parts)
}

/// A partition column named like a data column hides it in DuckDB and Spark (the path value
/// wins), so it must render exactly that column's value: only `bucket={bucket}` does.
fn check_shadowing(name: &str, parts: &[Part]) -> Result<()> {
    if name == "bucket" && parts == [Part::Field(Field::Bucket)] {
        return Ok(());
    }
    let schema = super::columns::schema();
    if schema.field_with_name(name).is_ok() {
        let hint = if parts.contains(&Part::Field(Field::EventType)) {
            " (e.g. type={event_type})"
        } else {
            ""
        };
        return Err(bad(format!(
            "partition name '{name}' is also a data column, and readers would show the path's value in place of the column's; use another name{hint}"
        )));
    }
    Ok(())
}

/// Hive's and Spark's set (`FileUtils.escapePathName`, `ExternalCatalogUtils`): ASCII control
/// characters and the characters that mean something in paths, globs or URIs. Everything
/// else, non-ASCII included, stays as is, as those writers leave it.
fn needs_escape(c: char) -> bool {
    matches!(
        c,
        '\u{0}'
            ..='\u{1f}'
                | '"'
                | '#'
                | '%'
                | '\''
                | '*'
                | '/'
                | ':'
                | '='
                | '?'
                | '\\'
                | '\u{7f}'
                | '{'
                | '['
                | ']'
                | '^'
    )
}

fn push_escaped(c: char, out: &mut String) {
    if needs_escape(c) {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let b = c as u8; // needs_escape is only true for ASCII
        out.push('%');
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    } else {
        out.push(c);
    }
}

fn escape_into(value: &str, out: &mut String) {
    if value.chars().any(needs_escape) {
        value.chars().for_each(|c| push_escaped(c, out));
    } else {
        out.push_str(value);
    }
}

/// A UTC calendar date and hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
}

impl Civil {
    /// Exact for every `i64` of microseconds (proleptic Gregorian calendar, days from
    /// 1970-01-01 by the era arithmetic of H. Hinnant's `civil_from_days`), with no
    /// allocation and no out-of-range case to handle.
    fn of_micros(us: i64) -> Civil {
        let secs = us.div_euclid(1_000_000);
        let days = secs.div_euclid(86_400);
        let hour = (secs.rem_euclid(86_400) / 3_600) as u32;
        // Shift the epoch to 0000-03-01 so leap days fall at the end of a year.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097); // day of era, [0, 146096]
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
        let mp = (5 * doy + 2) / 153; // March = 0
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour,
        }
    }
}

impl Civil {
    /// Append a date/time field, zero-padded (digits only, nothing to escape).
    fn write(&self, f: Field, out: &mut String) {
        let (y, m, d, h) = (self.year, self.month, self.day, self.hour);
        // Writing to a String cannot fail.
        let _ = match f {
            Field::Year => write!(out, "{y:04}"),
            Field::Month => write!(out, "{m:02}"),
            Field::Day => write!(out, "{d:02}"),
            Field::Hour => write!(out, "{h:02}"),
            Field::Date => write!(out, "{y:04}-{m:02}-{d:02}"),
            Field::DateHour => write!(out, "{y:04}-{m:02}-{d:02}-{h:02}"),
            Field::Bucket | Field::EventType => Ok(()),
        };
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Template {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Template::parse(s)
    }
}

/// As its text, so a subscription stores the template as written and a bad one is refused
/// when the subscription is read.
impl Serialize for Template {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Template::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Datelike, Timelike};
    use tidemark_core::event::{EventType, sample_event};
    use uuid::Uuid;

    /// 2026-11-22T14:05:06.789Z
    const T: i64 = 1_795_356_306_789_000;

    fn event(bucket: &str, t: EventType, time: i64) -> ObjectEvent {
        ObjectEvent::new(
            Uuid::from_u128(1),
            t,
            time,
            bucket.into(),
            "k".into(),
            1,
            None,
        )
    }

    #[test]
    fn default_template_renders_bucket_date_and_hour() {
        let t = Template::default();
        assert_eq!(t.as_str(), DEFAULT);
        assert_eq!(t.names(), ["bucket", "dt", "hour"]);
        let e = event("photos", EventType::ObjectCreatedPut, T);
        assert_eq!(t.render(&e), "bucket=photos/dt=2026-11-22/hour=14");
    }

    #[test]
    fn every_field_renders() {
        let t = Template::parse(
            "type={event_type}/y={yyyy}/m={MM}/d={dd}/h={HH}/day={yyyy-MM-dd}/dh={yyyy-MM-dd-HH}/b=x-{bucket}-y",
        )
        .unwrap();
        assert_eq!(t.names(), ["type", "y", "m", "d", "h", "day", "dh", "b"]);
        let e = event("logs", EventType::ObjectRemovedDeleteMarkerCreated, T);
        assert_eq!(
            t.render(&e),
            "type=ObjectRemoved_DeleteMarkerCreated/y=2026/m=11/d=22/h=14/day=2026-11-22/dh=2026-11-22-14/b=x-logs-y"
        );
        // Types without ':' render unchanged.
        let e = event("logs", EventType::LifecycleTransition, 0);
        assert_eq!(
            t.render(&e),
            "type=LifecycleTransition/y=1970/m=01/d=01/h=00/day=1970-01-01/dh=1970-01-01-00/b=x-logs-y"
        );
    }

    #[test]
    fn values_cannot_add_directories_or_pairs() {
        let t = Template::default();
        let e = event("a/b=c", EventType::ObjectCreatedPut, T);
        let p = t.render(&e);
        assert_eq!(p, "bucket=a%2Fb%3Dc/dt=2026-11-22/hour=14");
        assert_eq!(p.matches('/').count(), 2);

        let e = event("../x%y:z\\w\n\u{7f}*?#é", EventType::ObjectCreatedPut, T);
        assert_eq!(
            t.render(&e),
            "bucket=..%2Fx%25y%3Az%5Cw%0A%7F%2A%3F%23é/dt=2026-11-22/hour=14"
        );
        // An empty value becomes Hive's null partition rather than `bucket=`.
        let e = event("", EventType::ObjectCreatedPut, T);
        assert_eq!(
            t.render(&e),
            "bucket=__HIVE_DEFAULT_PARTITION__/dt=2026-11-22/hour=14"
        );
    }

    #[test]
    fn literal_text_is_escaped_too() {
        let t = Template::parse("src=a:b {bucket}").unwrap();
        let e = event("x", EventType::ObjectCreatedPut, T);
        assert_eq!(t.render(&e), "src=a%3Ab x");
        assert_eq!(t.names(), ["src"]);
    }

    #[test]
    fn rendering_is_deterministic() {
        let t = Template::parse("bucket={bucket}/type={event_type}/dt={yyyy-MM-dd-HH}").unwrap();
        for i in 0..100 {
            let e = sample_event(i);
            let first = t.render(&e);
            assert_eq!(first, t.render(&e.clone()));
            assert_eq!(first, Template::parse(t.as_str()).unwrap().render(&e));
            let mut buf = String::from("root/");
            t.render_into(&EventView::of(&e), &mut buf);
            assert_eq!(buf, format!("root/{first}"));
        }
    }

    #[test]
    fn dates_match_chrono_everywhere() {
        let mut us: i64 = -62_135_596_800_000_000; // 0001-01-01
        let mut rng = fastrand::Rng::with_seed(7);
        let edges = [
            0,
            -1,
            1,
            951_782_400_000_000 - 1, // 2000-02-29 just before midnight
            951_782_400_000_000,
            4_107_542_400_000_000,   // 2100-03-01
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999
        ];
        for step in 0..20_000 {
            let t = if step < edges.len() { edges[step] } else { us };
            let c = Civil::of_micros(t);
            let d = DateTime::from_timestamp_micros(t).unwrap();
            assert_eq!(
                (c.year, c.month, c.day, c.hour),
                (i64::from(d.year()), d.month(), d.day(), d.hour()),
                "at {t}"
            );
            us += rng.i64(1..40_000_000_000_000);
        }
        // The extremes neither overflow nor panic.
        Civil::of_micros(i64::MIN);
        Civil::of_micros(i64::MAX);
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let err = |t: &str| Template::parse(t).unwrap_err().to_string();
        assert_eq!(
            err("bucket={foo}"),
            "unknown field 'foo' in partition template; use bucket, event_type, yyyy, MM, dd, HH, yyyy-MM-dd, yyyy-MM-dd-HH"
        );
        assert_eq!(err(""), "partition template is empty");
        assert!(err("/bucket={bucket}").contains("starts with '/'"));
        assert!(err("bucket={bucket}/").contains("empty path segment"));
        assert!(err("bucket={bucket}//dt={yyyy}").contains("empty path segment"));
        assert!(err("a=../b={bucket}").contains("'..'"));
        assert!(err("{bucket}").contains("not name=value"));
        assert!(err("dt={yyyy}/{HH}").contains("'{HH}' is not name=value"));
        assert!(err("Bucket={bucket}").contains("a-z, 0-9 and _"));
        assert!(err("my-col={bucket}").contains("a-z, 0-9 and _"));
        assert!(err("={bucket}").contains("must be non-empty"));
        assert!(err("dt=").contains("empty value"));
        assert!(err("dt={yyyy").contains("unclosed '{'"));
        assert!(err("dt=yyyy}").contains("unmatched '}'"));
        assert!(err("dt={}").contains("unknown field ''"));
        assert!(err("dt={yyyy}/dt={MM}").contains("appears twice"));
        assert!(err("dt=a\tb").contains("control character"));
        // Names of data columns would hide them in readers.
        assert!(err("event_type={event_type}").contains("type={event_type}"));
        assert!(err("key={bucket}").contains("also a data column"));
        assert!(err("bucket=b-{bucket}").contains("also a data column"));
        assert!(Template::parse("bucket={bucket}").is_ok());
    }

    #[test]
    fn serde_goes_through_parse() {
        let t: Template = serde_json::from_value(serde_json::json!("b={bucket}")).unwrap();
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            serde_json::json!("b={bucket}")
        );
        let e = serde_json::from_value::<Template>(serde_json::json!("b={nope}")).unwrap_err();
        assert!(e.to_string().contains("unknown field 'nope'"));
        assert_eq!("b={bucket}".parse::<Template>().unwrap(), t);
        assert_eq!(t.to_string(), "b={bucket}");
    }
}
