//! Source identities of accepted notification records, so a redelivered record (webhook
//! targets retry; MinIO replays its queue after an outage) appends nothing.
//!
//! Kept in a small redb file (`<data-dir>/ingest/s3-events.redb`) rather than derived from the
//! log: events do not carry the source's sequencer, and rebuilding a window of identities
//! would mean reading days of log at every start. Entries expire after a window (a store
//! stops retrying long before), so the file stays bounded by the traffic of one window.
//!
//! Invariant: an identity is recorded only after its event is durable in the log. A crash in
//! between can let one redelivery through again (at-least-once, never lost).

use std::path::Path;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::time::now_us;
use crate::{Error, Result};

/// Identity → when it was recorded (µs).
const SEEN: TableDefinition<&str, i64> = TableDefinition::new("seen");
/// (recorded at µs, identity): the expiry order.
const BY_TIME: TableDefinition<(i64, &str), ()> = TableDefinition::new("by_time");

/// How long an identity is remembered unless configured otherwise.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

pub struct SeenRecords {
    db: Database,
    window_us: i64,
    /// Held from the check to the record of a request's identities, so two deliveries of one
    /// record at the same moment cannot both pass the check.
    claims: tokio::sync::Mutex<()>,
}

impl SeenRecords {
    pub fn open(path: &Path, window: Duration) -> Result<SeenRecords> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        }
        // A small page cache: redb's default is 1 GiB, and lookups here are few and recent.
        let db = redb::Builder::new()
            .set_cache_size(16 << 20)
            .create(path)
            .map_err(|e| Error::index("open dedup store", e))?;
        let txn = db.begin_write().map_err(|e| Error::index("dedup", e))?;
        txn.open_table(SEEN).map_err(|e| Error::index("dedup", e))?;
        txn.open_table(BY_TIME)
            .map_err(|e| Error::index("dedup", e))?;
        txn.commit().map_err(|e| Error::index("dedup", e))?;
        Ok(SeenRecords {
            db,
            window_us: i64::try_from(window.as_micros()).unwrap_or(i64::MAX),
            claims: tokio::sync::Mutex::new(()),
        })
    }

    /// Exclusive use for one request: check, append, record.
    pub async fn claim(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.claims.lock().await
    }

    /// Which of `ids` were recorded within the window.
    pub fn seen(&self, ids: &[&str]) -> Result<Vec<bool>> {
        let txn = self.db.begin_read().map_err(|e| Error::index("dedup", e))?;
        let table = txn.open_table(SEEN).map_err(|e| Error::index("dedup", e))?;
        let horizon = now_us().saturating_sub(self.window_us);
        ids.iter()
            .map(|id| {
                let at = table.get(*id).map_err(|e| Error::index("dedup", e))?;
                Ok(at.is_some_and(|at| at.value() >= horizon))
            })
            .collect()
    }

    /// Remember `ids` (their events are durable) and forget what fell out of the window.
    pub fn record(&self, ids: &[&str]) -> Result<()> {
        let now = now_us();
        let horizon = now.saturating_sub(self.window_us);
        let txn = self
            .db
            .begin_write()
            .map_err(|e| Error::index("dedup", e))?;
        {
            let mut seen = txn.open_table(SEEN).map_err(|e| Error::index("dedup", e))?;
            let mut by_time = txn
                .open_table(BY_TIME)
                .map_err(|e| Error::index("dedup", e))?;
            let expired: Vec<(i64, String)> = by_time
                .range(..(horizon, ""))
                .map_err(|e| Error::index("dedup", e))?
                .map(|row| row.map(|(k, _)| (k.value().0, k.value().1.to_string())))
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| Error::index("dedup", e))?;
            for (at, id) in &expired {
                by_time
                    .remove((*at, id.as_str()))
                    .map_err(|e| Error::index("dedup", e))?;
                seen.remove(id.as_str())
                    .map_err(|e| Error::index("dedup", e))?;
            }
            for id in ids {
                if let Some(old) = seen
                    .insert(*id, now)
                    .map_err(|e| Error::index("dedup", e))?
                {
                    by_time
                        .remove((old.value(), *id))
                        .map_err(|e| Error::index("dedup", e))?;
                }
                by_time
                    .insert((now, *id), ())
                    .map_err(|e| Error::index("dedup", e))?;
            }
        }
        txn.commit().map_err(|e| Error::index("dedup", e))
    }

    /// Identities remembered now (expired ones included until the next `record`).
    pub fn len(&self) -> Result<u64> {
        let txn = self.db.begin_read().map_err(|e| Error::index("dedup", e))?;
        let table = txn.open_table(SEEN).map_err(|e| Error::index("dedup", e))?;
        table.len().map_err(|e| Error::index("dedup", e))
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_across_reopen_and_forgets_after_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ingest").join("s3-events.redb");
        {
            let seen = SeenRecords::open(&path, DEFAULT_WINDOW).unwrap();
            assert_eq!(seen.seen(&["a", "b"]).unwrap(), [false, false]);
            seen.record(&["a"]).unwrap();
            seen.record(&["a"]).unwrap();
            assert_eq!(seen.seen(&["a", "b"]).unwrap(), [true, false]);
            assert_eq!(seen.len().unwrap(), 1);
        }
        let seen = SeenRecords::open(&path, DEFAULT_WINDOW).unwrap();
        assert_eq!(seen.seen(&["a"]).unwrap(), [true]);
        drop(seen);
        // A zero window: everything recorded before now has expired, and is purged.
        let seen = SeenRecords::open(&path, Duration::ZERO).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(seen.seen(&["a"]).unwrap(), [false]);
        seen.record(&["c"]).unwrap();
        assert_eq!(seen.len().unwrap(), 1);
    }
}
