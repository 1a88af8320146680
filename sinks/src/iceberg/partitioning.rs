//! The journal's partitioning: a time transform of `record_timestamp` (`year`, `month`, `day`
//! or `hour`) and/or the `bucket` column (identity), in the order the `partition` setting
//! lists them; `["day", "bucket"]` by default. Files are always written by the table's own
//! spec (read when the table is opened), so a table created with other settings keeps its
//! layout; a spec with a field Tidemark cannot compute is refused by name.

use chrono::Datelike;
use iceberg::spec::{Literal, PartitionSpec, Struct, Transform, UnboundPartitionSpec};

use crate::{Error, Result};

/// One partition field of the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Year,
    Month,
    Day,
    Hour,
    Bucket,
}

/// Field ids of the columns the parts come from.
const RECORD_TIMESTAMP: i32 = 5;
const BUCKET: i32 = 1;

impl Part {
    fn parse(name: &str) -> Option<Part> {
        Some(match name {
            "year" => Part::Year,
            "month" => Part::Month,
            "day" => Part::Day,
            "hour" => Part::Hour,
            "bucket" => Part::Bucket,
            _ => return None,
        })
    }

    fn field_name(self) -> &'static str {
        match self {
            Part::Year => "record_timestamp_year",
            Part::Month => "record_timestamp_month",
            Part::Day => "record_timestamp_day",
            Part::Hour => "record_timestamp_hour",
            Part::Bucket => "bucket",
        }
    }

    fn source(self) -> (i32, Transform) {
        match self {
            Part::Year => (RECORD_TIMESTAMP, Transform::Year),
            Part::Month => (RECORD_TIMESTAMP, Transform::Month),
            Part::Day => (RECORD_TIMESTAMP, Transform::Day),
            Part::Hour => (RECORD_TIMESTAMP, Transform::Hour),
            Part::Bucket => (BUCKET, Transform::Identity),
        }
    }
}

/// The default: by day of the event, then by bucket.
pub const DEFAULT: &[&str] = &["day", "bucket"];

/// The `sink.partition` setting's parts; errors name the setting and the entry.
pub fn parse(names: &[String]) -> Result<Vec<Part>> {
    let mut parts = Vec::with_capacity(names.len());
    for name in names {
        let part = Part::parse(name).ok_or_else(|| {
            Error::invalid(
                "sink.partition",
                format!("'{name}' is not a partition field; use year, month, day or hour (of the event time) and bucket"),
            )
        })?;
        if parts.contains(&part) {
            return Err(Error::invalid(
                "sink.partition",
                format!("'{name}' is listed twice"),
            ));
        }
        if part != Part::Bucket && parts.iter().any(|p| *p != Part::Bucket) {
            return Err(Error::invalid(
                "sink.partition",
                format!("'{name}': at most one of year, month, day and hour"),
            ));
        }
        parts.push(part);
    }
    Ok(parts)
}

/// The partition spec a journal is created with.
pub fn unbound(parts: &[Part]) -> Result<UnboundPartitionSpec> {
    let mut builder = UnboundPartitionSpec::builder();
    for p in parts {
        let (source, transform) = p.source();
        builder = builder
            .add_partition_field(source, p.field_name(), transform)
            .map_err(|e| Error::Transient(format!("building the journal partitioning: {e}")))?;
    }
    Ok(builder.build())
}

/// The parts of an existing table's spec, which its files must follow.
pub fn of_table(spec: &PartitionSpec) -> Result<Vec<Part>> {
    spec.fields()
        .iter()
        .map(|f| {
            let part = [Part::Year, Part::Month, Part::Day, Part::Hour, Part::Bucket]
                .into_iter()
                .find(|p| p.source() == (f.source_id, f.transform));
            part.ok_or_else(|| {
                Error::Config(format!(
                    "the journal's partition field '{}' ({} of field {}) is not one Tidemark writes \
                     (a time transform of record_timestamp, or bucket)",
                    f.name, f.transform, f.source_id
                ))
            })
        })
        .collect()
}

pub(super) const HOUR_US: i64 = 3_600_000_000;
const DAY_US: i64 = 24 * HOUR_US;

/// A row's partition under `parts`: its value (the manifest's partition struct) and its
/// directory (`name=value/...`, human-readable values).
pub fn key(parts: &[Part], event_time_us: i64, bucket: &str) -> Result<(Struct, String)> {
    let mut values = Vec::with_capacity(parts.len());
    let mut dirs = Vec::with_capacity(parts.len());
    let at = chrono::DateTime::from_timestamp_micros(event_time_us).ok_or_else(|| {
        Error::Data(format!(
            "event time {event_time_us} µs is outside the dates Iceberg can hold"
        ))
    })?;
    let int = |v: i64| {
        i32::try_from(v).map_err(|_| {
            Error::Data(format!(
                "event time {event_time_us} µs is outside Iceberg's partition range"
            ))
        })
    };
    for p in parts {
        let (value, text) = match p {
            Part::Year => (
                Literal::int(int(i64::from(at.year()) - 1970)?),
                at.format("%Y").to_string(),
            ),
            Part::Month => (
                Literal::int(int(
                    (i64::from(at.year()) - 1970) * 12 + i64::from(at.month0())
                )?),
                at.format("%Y-%m").to_string(),
            ),
            Part::Day => (
                Literal::date(int(event_time_us.div_euclid(DAY_US))?),
                at.format("%Y-%m-%d").to_string(),
            ),
            Part::Hour => (
                Literal::int(int(event_time_us.div_euclid(HOUR_US))?),
                at.format("%Y-%m-%d-%H").to_string(),
            ),
            Part::Bucket => (Literal::string(bucket), bucket.to_string()),
        };
        values.push(Some(value));
        dirs.push(format!("{}={text}", p.field_name()));
    }
    Ok((Struct::from_iter(values), dirs.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn settings_are_checked_by_name() {
        assert_eq!(parse(&names(DEFAULT)).unwrap(), [Part::Day, Part::Bucket]);
        assert_eq!(
            parse(&names(&["bucket", "hour"])).unwrap(),
            [Part::Bucket, Part::Hour]
        );
        assert!(parse(&[]).unwrap().is_empty());
        for (bad, needle) in [
            (&["week"][..], "'week'"),
            (&["day", "day"][..], "twice"),
            (&["day", "hour"][..], "at most one"),
        ] {
            let e = parse(&names(bad)).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad:?}: {e}");
        }
    }

    #[test]
    fn values_follow_the_iceberg_transforms() {
        // 2026-12-06T01:30:00Z
        let t = 1_796_520_600_000_000i64;
        let all = [Part::Year, Part::Month, Part::Day, Part::Hour, Part::Bucket];
        let (value, dir) = key(&all, t, "photos").unwrap();
        assert_eq!(
            dir,
            "record_timestamp_year=2026/record_timestamp_month=2026-12/\
             record_timestamp_day=2026-12-06/record_timestamp_hour=2026-12-06-01/bucket=photos"
        );
        let expected = Struct::from_iter([
            Some(Literal::int(56)),
            Some(Literal::int(56 * 12 + 11)),
            Some(Literal::date(20_793)),
            Some(Literal::int(499_033)),
            Some(Literal::string("photos")),
        ]);
        assert_eq!(value, expected);
        // Before the epoch, floor division.
        let (value, _) = key(&[Part::Day, Part::Hour], -1, "b").unwrap();
        assert_eq!(
            value,
            Struct::from_iter([Some(Literal::date(-1)), Some(Literal::int(-1))])
        );
    }
}
