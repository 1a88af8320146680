//! Per-key heads (current state and sequence) for ingest, in memory set by configuration, not
//! by the number of keys.
//!
//! A key's head comes from, in order:
//! 1. `pending`: the heads of keys whose newest event is written (or being written) to the log
//!    but may not be applied by the index yet. Bounded: an entry leaves once the index has
//!    applied its offset, and ingest waits (backpressure) while the entries take more than
//!    their budget.
//! 2. `cache`: recently used heads, up to a byte budget. Writes update it, so what it holds is
//!    never older than the index; when over budget, entries are dropped in hash order, which
//!    for keys that come round in cycles does better than least-recently-used.
//! 3. the index, in one read transaction for all the keys of a batch that were in neither.
//!
//! Invariant: whenever a key has an event the index has not applied, its head is in `pending`;
//! so a head read from the index is the newest one whenever `pending` has none.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::event::{Head, HeadMap, ObjectState};

/// Bytes counted per entry besides its key and state (map slots, allocation headers).
const ENTRY_OVERHEAD: usize = 160;

/// A head the index may not have applied yet.
struct Pending {
    head: Head,
    partition: u32,
    /// The event's offset once its append resolved; `None` while it is in flight.
    offset: Option<u64>,
    bytes: usize,
}

struct Cached {
    head: Head,
    partition: u32,
    bytes: usize,
}

pub(super) struct Heads {
    pending: HeadMap<Pending>,
    pending_bytes: usize,
    /// Per partition, the pending heads that landed, in the order they landed (offset, key,
    /// sequence): pruning pops what the index has applied instead of scanning `pending`.
    landed: HashMap<u32, VecDeque<(u64, String, i64)>>,
    cache: HeadMap<Cached>,
    cache_bytes: usize,
    /// Most bytes the cache holds.
    cache_budget: usize,
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

/// Where a head was found. (Matched at once where it is returned: its size does not matter.)
#[allow(clippy::large_enum_variant)]
pub(super) enum Found {
    Known(Option<Head>),
    /// In neither `pending` nor the cache: ask the index.
    Unknown,
}

impl Heads {
    pub fn new(cache_budget: usize) -> Heads {
        Heads {
            pending: HeadMap::default(),
            pending_bytes: 0,
            landed: HashMap::new(),
            cache: HeadMap::default(),
            cache_bytes: 0,
            cache_budget,
        }
    }

    pub fn find(&self, key: &str) -> Found {
        if let Some(p) = self.pending.get(key) {
            return Found::Known(Some(p.head.clone()));
        }
        match self.cache.get(key) {
            Some(c) => Found::Known(Some(c.head.clone())),
            None => Found::Unknown,
        }
    }

    /// Whether the head of `key` is known here (pending or cached).
    pub fn knows(&self, key: &str) -> bool {
        self.pending.contains_key(key) || self.cache.contains_key(key)
    }

    /// Keep a head read from the index (`None`: the key was never written; nothing to keep).
    pub fn remember(&mut self, key: String, partition: u32, head: Option<Head>) {
        if let Some(head) = head {
            self.cache_insert(key, partition, head);
        }
    }

    /// A new event for `key` was queued to the log: its head is the newest.
    pub fn written(&mut self, key: String, partition: u32, head: Head) {
        let bytes = head_bytes(&key, &head);
        self.cache_insert(key.clone(), partition, head.clone());
        let entry = Pending {
            head,
            partition,
            offset: None,
            bytes,
        };
        self.pending_bytes += bytes;
        if let Some(old) = self.pending.insert(key, entry) {
            self.pending_bytes -= old.bytes;
        }
    }

    /// The append of `key`'s event resolved at `offset` (the entry may have been replaced by a
    /// newer event meanwhile: then that one's offset is still to come).
    pub fn landed(&mut self, key: &str, sequence: i64, offset: u64) {
        if let Some(p) = self.pending.get_mut(key)
            && p.head.sequence == sequence
        {
            p.offset = Some(offset);
            self.landed.entry(p.partition).or_default().push_back((
                offset,
                key.to_string(),
                sequence,
            ));
        }
    }

    /// Drop the pending heads the index has applied (`applied`: partition -> next offset).
    pub fn prune(&mut self, applied: &BTreeMap<u32, u64>) {
        for (partition, queue) in &mut self.landed {
            let Some(&applied) = applied.get(partition) else {
                continue;
            };
            while let Some((offset, _, _)) = queue.front() {
                if *offset >= applied {
                    break;
                }
                let (_, key, sequence) = queue.pop_front().expect("front exists");
                // A newer event for the key replaced this one: that one stays pending.
                if self
                    .pending
                    .get(&key)
                    .is_some_and(|p| p.head.sequence == sequence)
                    && let Some(p) = self.pending.remove(&key)
                {
                    self.pending_bytes -= p.bytes;
                }
            }
        }
    }

    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub fn cached_len(&self) -> usize {
        self.cache.len()
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
        let (mut pending_freed, mut cache_freed) = (0, 0);
        self.pending.retain(|_, p| {
            let drop = partitions.contains(&p.partition);
            if drop {
                pending_freed += p.bytes;
            }
            !drop
        });
        self.cache.retain(|_, c| {
            let drop = partitions.contains(&c.partition);
            if drop {
                cache_freed += c.bytes;
            }
            !drop
        });
        self.pending_bytes -= pending_freed;
        self.cache_bytes -= cache_freed;
        self.landed.retain(|p, _| !partitions.contains(p));
    }

    fn cache_insert(&mut self, key: String, partition: u32, head: Head) {
        if self.cache_budget == 0 {
            return;
        }
        let bytes = head_bytes(&key, &head);
        self.cache_bytes += bytes;
        if let Some(old) = self.cache.insert(
            key,
            Cached {
                head,
                partition,
                bytes,
            },
        ) {
            self.cache_bytes -= old.bytes;
        }
        if self.cache_bytes > self.cache_budget {
            self.evict();
        }
    }

    /// Drop entries (in hash order: effectively at random) until the cache is at 7/8 of its
    /// budget, so evictions come in batches rather than one per insert.
    fn evict(&mut self) {
        let target = self.cache_budget / 8 * 7;
        let mut freed = 0;
        let excess = self.cache_bytes.saturating_sub(target);
        let victims: Vec<String> = self
            .cache
            .iter()
            .take_while(|(_, c)| {
                let take = freed < excess;
                freed += c.bytes;
                take
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in victims {
            if let Some(c) = self.cache.remove(&k) {
                self.cache_bytes -= c.bytes;
            }
        }
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
        h.remember("b/k".into(), 0, Some(head(1)));
        h.written("b/k".into(), 0, head(2));
        let Found::Known(Some(found)) = h.find("b/k") else {
            panic!("known")
        };
        assert_eq!(found.sequence, 2);
        // Not landed yet: never pruned, whatever the index says.
        h.prune(&BTreeMap::from([(0, 100)]));
        assert_eq!(h.pending_len(), 1);
        h.landed("b/k", 2, 7);
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
        let Found::Known(Some(found)) = h.find("b/k") else {
            panic!("cached")
        };
        assert_eq!(found.sequence, 2);
    }

    #[test]
    fn the_cache_stays_within_its_budget() {
        let budget = 100 * (ENTRY_OVERHEAD + 16);
        let mut h = Heads::new(budget);
        for i in 0..10_000 {
            h.remember(format!("bucket/key-{i:06}"), 0, Some(head(1)));
            assert!(h.cache_bytes() <= budget, "{} > {budget}", h.cache_bytes());
        }
        assert!(h.cached_len() > 50, "{}", h.cached_len());
        h.forget_partitions(&[0].into());
        assert_eq!((h.cached_len(), h.cache_bytes()), (0, 0));
    }
}
