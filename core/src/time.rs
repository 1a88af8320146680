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

/// An instant as an operator types it: RFC 3339 (`2026-11-22T14:00:00Z`), `now`, relative to
/// now (`-2h`, `-90s`, `-1d12h`, units `d h m s ms`), or a time of day today in UTC (`14:00`,
/// `14:00:30`).
pub fn parse_instant_us(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if t == "now" {
        return Ok(now_us());
    }
    if let Some(rest) = t.strip_prefix('-') {
        return Ok(now_us() - parse_duration_us(rest).map_err(|e| format!("'{text}': {e}"))?);
    }
    if let Ok(time) = chrono::NaiveTime::parse_from_str(t, "%H:%M:%S")
        .or_else(|_| chrono::NaiveTime::parse_from_str(t, "%H:%M"))
    {
        return Ok(Utc::now()
            .date_naive()
            .and_time(time)
            .and_utc()
            .timestamp_micros());
    }
    parse_rfc3339_us(t).map_err(|_| {
        format!(
            "'{text}' is not an instant; use RFC 3339 (2026-11-22T14:00:00Z), a time today in \
             UTC (14:00), or a time relative to now (-2h, -30m, -1d)"
        )
    })
}

/// `2h`, `90s`, `1d12h`, `250ms`: a duration in µs.
fn parse_duration_us(text: &str) -> Result<i64, String> {
    let mut total: i64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return Err("a duration needs a number and a unit, e.g. 2h".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("expected a number at '{rest}'"));
        }
        let n: i64 = rest[..digits]
            .parse()
            .map_err(|_| format!("'{}' is too large", &rest[..digits]))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit: i64 = match &rest[..unit_len] {
            "d" => 86_400_000_000,
            "h" => 3_600_000_000,
            "m" => 60_000_000,
            "s" => 1_000_000,
            "ms" => 1_000,
            "" => return Err(format!("'{n}' needs a unit (d, h, m, s, ms)")),
            u => return Err(format!("unknown unit '{u}' (use d, h, m, s, ms)")),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or("the duration is too large")?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// An instant (see [`parse_instant_us`]) that must not be in the future (a state "as of" it
/// is asked for).
pub fn parse_past_us(text: &str) -> Result<i64, String> {
    let us = parse_instant_us(text)?;
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

    #[test]
    fn relative_and_time_of_day() {
        let now = now_us();
        let two_h = parse_instant_us("-2h").unwrap();
        assert!((now - 2 * 3_600_000_000 - two_h).abs() < 5_000_000);
        let mixed = parse_instant_us("-1d12h").unwrap();
        assert!((now - 36 * 3_600_000_000 - mixed).abs() < 5_000_000);
        assert!(
            parse_instant_us("-2x")
                .unwrap_err()
                .contains("unknown unit 'x'")
        );
        assert!(
            parse_instant_us("-h")
                .unwrap_err()
                .contains("expected a number")
        );
        assert!(parse_instant_us("-5").unwrap_err().contains("needs a unit"));
        let noon = parse_instant_us("12:00").unwrap();
        assert_eq!(noon.rem_euclid(86_400_000_000), 12 * 3_600_000_000);
        assert_eq!(
            parse_instant_us("2026-11-22T14:00:00Z").unwrap(),
            parse_rfc3339_us("2026-11-22T14:00:00Z").unwrap()
        );
        assert!(parse_instant_us("yesterday").unwrap_err().contains("-2h"));
        assert!(parse_past_us("-1h").is_ok());
    }
}
