//! Per-key heads (current state and sequence) for ingest, in memory set by configuration, not
//! by the number of keys.
//!
//! A key's head comes from, in order:
//! 1. this map: each entry is either *pinned* — the key's newest event is written (or being
//!    written) to the log but may not be applied by the index yet — or *cached*, a recently
//!    used head. A pinned entry is unpinned once the index has applied its offset, and ingest
//!    waits (backpressure) while pinned entries take more than their budget. Cached entries
//!    are kept up to a byte budget; writes update them, so what the map holds is never older
//!    than the index; when over budget, cached entries are dropped in hash order, which for
//!    keys that come round in cycles does better than least-recently-used.
//! 2. the index, in one read transaction for all the keys of a batch that were not here.
//!
//! Invariant: whenever a key has an event the index has not applied, its head is here, pinned;
//! so a head read from the index is the newest one whenever the map has none.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::event::{Head, HeadMap, ObjectState};

/// Bytes counted per entry besides its key and state (map slots, allocation headers).
const ENTRY_OVERHEAD: usize = 160;

/// Why an entry stays until the index applied it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pin {
    /// Cached only: may be evicted.
    None,
    /// Its event is being appended.
    InFlight,
    /// Its event is at this offset; unpinned once the index applied it.
    Landed(u64),
}

struct Entry {
    head: Head,
    partition: u32,
    bytes: usize,
    pin: Pin,
}

pub(super) struct Heads {
    entries: HeadMap<Entry>,
    /// Bytes and count of pinned entries.
    pending_bytes: usize,
    pending_len: usize,
    /// Bytes of cached (unpinned) entries.
    cache_bytes: usize,
    /// Most bytes cached entries take.
    cache_budget: usize,
    /// Per partition, the pinned entries that landed, in the order they landed (offset, key,
    /// sequence): pruning pops what the index has applied instead of scanning the map.
    landed: HashMap<u32, VecDeque<(u64, String, i64)>>,
}

/// Roughly what a head takes in memory.
pub(super) fn head_bytes(key: &str, head: &Head) -> usize {
    let state = head.state.as_ref().map_or(0, state_bytes);
    ENTRY_OVERHEAD + key.len() + state
}

fn state_bytes(s: &ObjectState) -> usize {
    let strings = |m: &crate::event::StringMap| -> usize {
        m.iter().map(|(k, v)| k.len() + v.len() + 48).sum()
    };
    let opt = |o: &Option<String>| o.as_ref().map_or(0, |s| s.len());
    std::mem::size_of::<ObjectState>()
        + strings(&s.metadata)
        + strings(&s.tags)
        + opt(&s.version_id)
        + opt(&s.etag)
        + opt(&s.content_type)
        + opt(&s.sha256)
        + opt(&s.storage_class)
}

impl Heads {
    pub fn new(cache_budget: usize) -> Heads {
        Heads {
            entries: HeadMap::default(),
            pending_bytes: 0,
            pending_len: 0,
            cache_bytes: 0,
            cache_budget,
            landed: HashMap::new(),
        }
    }

    /// The head of `key`, if this map has it (else ask the index).
    pub fn get(&self, key: &str) -> Option<&Head> {
        self.entries.get(key).map(|e| &e.head)
    }

    /// Whether the head of `key` is known here.
    pub fn knows(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// A new event for `key` was queued to the log: its head is the newest, pinned. Returns the
    /// head it replaced, if this map had one (moved out: the event's `previous`).
    pub fn written(&mut self, key: String, partition: u32, head: Head) -> Option<Head> {
        let bytes = head_bytes(&key, &head);
        let entry = Entry {
            head,
            partition,
            bytes,
            pin: Pin::InFlight,
        };
        let old = self.entries.insert(key, entry);
        if let Some(old) = &old {
            self.forget_accounting(old);
        }
        self.pending_bytes += bytes;
        self.pending_len += 1;
        old.map(|e| e.head)
    }

    /// The append of `key`'s event resolved at `offset` (the entry may have been replaced by a
    /// newer event meanwhile: then that one's offset is still to come).
    pub fn landed(&mut self, key: String, sequence: i64, offset: u64) {
        if let Some(e) = self.entries.get_mut(&key)
            && e.head.sequence == sequence
            && e.pin == Pin::InFlight
        {
            e.pin = Pin::Landed(offset);
            self.landed
                .entry(e.partition)
                .or_default()
                .push_back((offset, key, sequence));
        }
    }

    /// Unpin the heads the index has applied (`applied`: partition -> next offset).
    pub fn prune(&mut self, applied: &BTreeMap<u32, u64>) {
        for (partition, queue) in &mut self.landed {
            let Some(&applied) = applied.get(partition) else {
                continue;
            };
            while queue
                .front()
                .is_some_and(|(offset, _, _)| *offset < applied)
            {
                let (offset, key, sequence) = queue.pop_front().expect("front exists");
                // A newer event for the key replaced this one: that one stays pinned.
                if let Some(e) = self.entries.get_mut(&key)
                    && e.head.sequence == sequence
                    && e.pin == Pin::Landed(offset)
                {
                    e.pin = Pin::None;
                    self.pending_bytes -= e.bytes;
                    self.pending_len -= 1;
                    if self.cache_budget == 0 {
                        self.entries.remove(&key);
                    } else {
                        self.cache_bytes += e.bytes;
                    }
                }
            }
        }
        self.evict_if_over();
    }

    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    pub fn pending_len(&self) -> usize {
        self.pending_len
    }

    pub fn cached_len(&self) -> usize {
        self.entries.len() - self.pending_len
    }

    pub fn cache_bytes(&self) -> usize {
        self.cache_bytes
    }

    /// Forget everything (after a failed append, when the log is the only truth).
    pub fn clear(&mut self) {
        *self = Heads::new(self.cache_budget);
    }

    /// Forget the heads of `partitions` (this node stopped or starts writing them: another
    /// node may write, or have written, their keys).
    pub fn forget_partitions(&mut self, partitions: &std::collections::BTreeSet<u32>) {
        let mut gone = Vec::new();
        self.entries.retain(|_, e| {
            let drop = partitions.contains(&e.partition);
            if drop {
                gone.push((e.pin, e.bytes));
            }
            !drop
        });
        for (pin, bytes) in gone {
            if pin == Pin::None {
                self.cache_bytes -= bytes;
            } else {
                self.pending_bytes -= bytes;
                self.pending_len -= 1;
            }
        }
        self.landed.retain(|p, _| !partitions.contains(p));
    }

    /// Take a replaced entry out of the counts.
    fn forget_accounting(&mut self, old: &Entry) {
        if old.pin == Pin::None {
            self.cache_bytes -= old.bytes;
        } else {
            self.pending_bytes -= old.bytes;
            self.pending_len -= 1;
        }
    }

    /// Drop cached entries (in hash order: effectively at random) until they are at 7/8 of
    /// their budget, so evictions come in batches rather than one per insert; the walk stops
    /// as soon as enough is freed.
    fn evict_if_over(&mut self) {
        if self.cache_bytes <= self.cache_budget {
            return;
        }
        let excess = self.cache_bytes - self.cache_budget / 8 * 7;
        let mut freed = 0;
        for (_, e) in self.entries.extract_if(|_, e| e.pin == Pin::None) {
            freed += e.bytes;
            if freed >= excess {
                break;
            }
        }
        self.cache_bytes -= freed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn head(sequence: i64) -> Head {
        Head {
            sequence,
            event_id: Uuid::now_v7(),
            state: None,
        }
    }

    #[test]
    fn pending_heads_win_until_the_index_applied_them() {
        let mut h = Heads::new(1 << 20);
        assert!(h.written("b/k".into(), 0, head(1)).is_none());
        let old = h.written("b/k".into(), 0, head(2)).expect("replaced");
        assert_eq!(old.sequence, 1);
        assert_eq!(h.get("b/k").expect("known").sequence, 2);
        // Not landed yet: never pruned, whatever the index says.
        h.prune(&BTreeMap::from([(0, 100)]));
        assert_eq!(h.pending_len(), 1);
        h.landed("b/k".into(), 2, 7);
        h.prune(&BTreeMap::from([(0, 7)]));
        assert_eq!(
            h.pending_len(),
            1,
            "offset 7 is not applied while the index is at 7"
        );
        h.prune(&BTreeMap::from([(0, 8)]));
        assert_eq!(h.pending_len(), 0);
        assert_eq!(h.pending_bytes(), 0);
        // The cache still has the newest head.
        assert_eq!(h.get("b/k").expect("cached").sequence, 2);
    }

    #[test]
    fn the_cache_stays_within_its_budget() {
        let budget = 100 * (ENTRY_OVERHEAD + 16);
        let mut h = Heads::new(budget);
        for i in 0..10_000u64 {
            let key = format!("bucket/key-{i:06}");
            h.written(key.clone(), 0, head(1));
            h.landed(key, 1, i);
            h.prune(&BTreeMap::from([(0, i + 1)]));
            assert!(h.cache_bytes() <= budget, "{} > {budget}", h.cache_bytes());
        }
        assert!(h.cached_len() > 50, "{}", h.cached_len());
        h.forget_partitions(&[0].into());
        assert_eq!((h.cached_len(), h.cache_bytes()), (0, 0));
    }
}
