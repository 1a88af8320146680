//! Resume cursors of live watchers: the next offset of every partition of the `objects` topic,
//! in partition order, joined by `.` (`"12.0.7.3"`).
//!
//! A watcher's event carries the cursor *after* it: every record before those offsets has been
//! looked at (sent, or not matching), none after. Resuming from it therefore repeats nothing
//! and misses nothing, whichever partitions the next changes land on.

use std::fmt;

/// Where a watcher is (or resumes from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(pub Vec<u64>);

impl Cursor {
    /// Parse `text` for a log of `partitions` partitions; the error says what is wrong.
    pub fn parse(text: &str, partitions: u32) -> Result<Cursor, String> {
        let offsets = text
            .trim()
            .split('.')
            .map(|part| part.parse::<u64>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                format!(
                    "'{text}' is not a watch cursor (the `id` of an event: next offsets per \
                     partition joined by '.'), nor `now` or `earliest`"
                )
            })?;
        if offsets.len() != partitions as usize {
            return Err(format!(
                "the cursor '{text}' has {} positions but the log has {partitions} partitions; \
                 resume with the `id` of an event from this server",
                offsets.len()
            ));
        }
        Ok(Cursor(offsets))
    }

    /// Events in the log after this cursor, given each partition's next offset.
    pub fn behind(&self, heads: impl Iterator<Item = u64>) -> u64 {
        heads
            .zip(&self.0)
            .map(|(head, at)| head.saturating_sub(*at))
            .sum()
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, o) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{o}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_problems() {
        let c = Cursor::parse("12.0.7.3", 4).unwrap();
        assert_eq!(c.0, vec![12, 0, 7, 3]);
        assert_eq!(c.to_string(), "12.0.7.3");
        assert!(
            Cursor::parse("12.0.7", 4)
                .unwrap_err()
                .contains("4 partitions")
        );
        assert!(
            Cursor::parse("x.1", 2)
                .unwrap_err()
                .contains("not a watch cursor")
        );
        assert_eq!(c.behind([13, 0, 10, 1].into_iter()), 4);
    }
}
