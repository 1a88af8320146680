//! Merging a snapshot's head rows with newer ones, both in key order, into one stream in key
//! order: a newer row takes the place of the snapshot's for the same key.

use std::cmp::Ordering;
use std::iter::Peekable;

use tidemark_core::Result;

/// (`bucket/key`, head row).
pub type Row = (String, Vec<u8>);

pub struct Merge<Old: Iterator<Item = Result<Row>>, New: Iterator<Item = Result<Row>>> {
    old: Peekable<Old>,
    new: Peekable<New>,
}

impl<Old: Iterator<Item = Result<Row>>, New: Iterator<Item = Result<Row>>> Merge<Old, New> {
    pub fn new(old: Old, new: New) -> Self {
        Merge {
            old: old.peekable(),
            new: new.peekable(),
        }
    }
}

impl<Old: Iterator<Item = Result<Row>>, New: Iterator<Item = Result<Row>>> Iterator
    for Merge<Old, New>
{
    type Item = Result<Row>;

    fn next(&mut self) -> Option<Result<Row>> {
        let order = match (self.old.peek(), self.new.peek()) {
            (None, None) => return None,
            // A failed read of the newer rows (a spilled run) surfaces at once.
            (_, Some(Err(_))) | (None, Some(_)) => Ordering::Greater,
            // The snapshot's damage surfaces as soon as it is read; the old rows are always
            // read to their end, so it cannot go unnoticed.
            (Some(Err(_)), _) | (Some(Ok(_)), None) => Ordering::Less,
            (Some(Ok((old, _))), Some(Ok((new, _)))) => old.cmp(new),
        };
        match order {
            Ordering::Less => self.old.next(),
            Ordering::Greater => self.new.next(),
            Ordering::Equal => {
                self.old.next();
                self.new.next()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(k: &str, v: u8) -> Row {
        (k.to_string(), vec![v])
    }

    #[test]
    fn newer_rows_win_and_order_is_kept() {
        let old = vec![row("a", 1), row("c", 1), row("d", 1)];
        let new = vec![row("b", 2), row("c", 2), row("e", 2)];
        let merged: Vec<Row> = Merge::new(old.into_iter().map(Ok), new.into_iter().map(Ok))
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(
            merged,
            [
                row("a", 1),
                row("b", 2),
                row("c", 2),
                row("d", 1),
                row("e", 2)
            ]
        );
    }

    #[test]
    fn damage_in_the_old_rows_is_not_lost() {
        let old = vec![
            Ok(row("a", 1)),
            Err(tidemark_core::Error::Corrupt("bad".into())),
        ];
        let new = vec![row("z", 2)];
        let merged: Result<Vec<Row>> =
            Merge::new(old.into_iter(), new.into_iter().map(Ok)).collect();
        assert!(merged.is_err());
    }
}
