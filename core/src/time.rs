//! Timestamps are microseconds since the Unix epoch (UTC) everywhere inside Tidemark; this is the
//! one place that converts them to and from RFC 3339 text.

use chrono::{DateTime, SecondsFormat, Utc};

/// Earliest instant accepted from users: the epoch. Negative times are almost always a unit bug.
const MIN_US: i64 = 0;
/// Latest instant accepted from users: 9999-12-31T23:59:59.999999Z.
const MAX_US: i64 = 253_402_300_799_999_999;

/// Now, in microseconds since the epoch.
pub fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

/// An RFC 3339 instant that must not be in the future (a state "as of" it is asked for).
pub fn parse_past_us(text: &str) -> Result<i64, String> {
    let us = parse_rfc3339_us(text)?;
    if us > now_us() {
        return Err(format!(
            "{text} is in the future; the state then is not known yet"
        ));
    }
    Ok(us)
}

/// Parse an RFC 3339 timestamp (`2026-11-22T14:00:00Z`, `2026-11-22T15:00:00.5+01:00`).
pub fn parse_rfc3339_us(text: &str) -> Result<i64, String> {
    let parsed = DateTime::parse_from_rfc3339(text).map_err(|e| {
        format!("'{text}' is not an RFC 3339 timestamp ({e}); use e.g. 2026-11-22T14:00:00Z")
    })?;
    let us = parsed.with_timezone(&Utc).timestamp_micros();
    if !(MIN_US..=MAX_US).contains(&us) {
        return Err(format!(
            "'{text}' is outside the supported range 1970-01-01T00:00:00Z..9999-12-31T23:59:59Z"
        ));
    }
    Ok(us)
}

/// Format as RFC 3339 in UTC with microseconds, e.g. `2026-11-22T14:00:00.000001Z`.
pub fn format_us(us: i64) -> String {
    match DateTime::<Utc>::from_timestamp_micros(us) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Micros, true),
        None => format!("@{us}us"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects() {
        let us = parse_rfc3339_us("2026-11-22T14:00:00.000123Z").unwrap();
        assert_eq!(format_us(us), "2026-11-22T14:00:00.000123Z");
        assert_eq!(
            parse_rfc3339_us("2026-11-22T15:00:00+01:00").unwrap(),
            parse_rfc3339_us("2026-11-22T14:00:00Z").unwrap()
        );
        assert!(
            parse_rfc3339_us("yesterday")
                .unwrap_err()
                .contains("RFC 3339")
        );
        assert!(
            parse_rfc3339_us("1969-12-31T23:59:59Z")
                .unwrap_err()
                .contains("range")
        );
    }
}
