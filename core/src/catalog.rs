//! The catalog: configuration entities (subscriptions, secrets, later filters and tokens)
//! event-sourced on `_config`.
//!
//! Every change is a `ConfigEvent` appended to `_config`; each node follows the topic and
//! applies the events in log order, so all nodes converge on the same catalog and a restart
//! rebuilds it. Conflicts are decided by the log, not by a lock: a `created` event for a name
//! that exists already, or an `updated`/`deleted` event for one that does not, is ignored when
//! applied, and [`Catalog::change`] reports whether its own event won.
//!
//! `_config` is compacted (Kafka's `cleanup.policy=compact`; the embedded log does the same):
//! only the newest record per `kind/name` survives in old segments. So the newest record of
//! an entity must say everything about it:
//! - an `updated` record carries the entity's generation in headers ([`CREATED_BY`],
//!   [`CREATED_AT`]) and applies as an upsert, so it stands alone once the `created` before
//!   it is gone;
//! - a delete is followed by a tombstone (an empty value), which removes the key from the
//!   compacted topic after the tombstone retention;
//! - a `created` that lost to an existing entity is followed by the winner's state again
//!   (an `updated` record), so the loser's record is never the newest.
//!
//! The audit trail (`history`) shows what compaction has kept.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use crate::codec::config::{ConfigCodec, ConfigEvent};
use crate::log::{Header, Log, NewRecord, Record};
use crate::time::now_us;
use crate::{CONFIG_TOPIC, Error, Result};

/// Header of an `updated` record: the id of the event that created the entity.
pub const CREATED_BY: &str = "tm-created-by";
/// Header of an `updated` record: when the entity was created (µs, decimal).
pub const CREATED_AT: &str = "tm-created-at";

/// Names users give catalog entities (subscriptions, filters): 1-100 characters from
/// `[A-Za-z0-9._-]`, not starting with `.`. Returns what is wrong, naming `what`.
pub fn check_entity_name(what: &str, name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a valid {what} name: use 1-100 characters from [A-Za-z0-9._-], \
             not starting with '.'"
        ))
    }
}

/// One live entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: String,
    pub name: String,
    /// The entity as JSON.
    pub spec: String,
    /// Id of the event that created it (stays across updates): a generation that tells a
    /// re-created entity from the one deleted before it.
    pub created_by: Uuid,
    pub created_at: i64,
    /// Id and time of the latest change.
    pub changed_by: Uuid,
    pub changed_at: i64,
    pub actor: Option<String>,
}

/// What a change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Create => "created",
            Action::Update => "updated",
            Action::Delete => "deleted",
        }
    }
}

#[derive(Default)]
struct State {
    entries: BTreeMap<(String, String), Entry>,
    /// Next offset of `_config` to apply.
    next: u64,
}

pub struct Catalog {
    log: Arc<dyn Log>,
    /// `_config`, or another topic of the same shape (dead letters).
    topic: &'static str,
    codec: Arc<ConfigCodec>,
    node: Option<String>,
    state: RwLock<State>,
    /// The next offset to apply, published after each applied batch.
    applied: watch::Sender<u64>,
}

impl Catalog {
    /// Load `_config` to its end, then keep following it in a background task.
    pub async fn open(
        log: Arc<dyn Log>,
        codec: Arc<ConfigCodec>,
        node: Option<String>,
    ) -> Result<Arc<Catalog>> {
        Self::open_topic(log, codec, node, CONFIG_TOPIC).await
    }

    /// A catalog kept on `topic` (one partition, created by the caller).
    pub async fn open_topic(
        log: Arc<dyn Log>,
        codec: Arc<ConfigCodec>,
        node: Option<String>,
        topic: &'static str,
    ) -> Result<Arc<Catalog>> {
        let start = log.offsets(topic, 0).await?;
        let catalog = Arc::new(Catalog {
            log,
            topic,
            codec,
            node,
            state: RwLock::new(State {
                next: start.start,
                ..State::default()
            }),
            applied: watch::channel(start.start).0,
        });
        while catalog.next() < start.end {
            catalog.step(Duration::ZERO).await?;
        }
        tokio::spawn(catalog.clone().follow());
        Ok(catalog)
    }

    fn next(&self) -> u64 {
        self.state.read().unwrap().next
    }

    async fn follow(self: Arc<Self>) {
        // Stops when the last other handle is gone (the weak count keeps no node alive).
        let weak = Arc::downgrade(&self);
        drop(self);
        while let Some(catalog) = weak.upgrade() {
            if let Err(e) = catalog.step(Duration::from_millis(500)).await {
                tracing::warn!("following {}: {e}; retrying in 1s", catalog.topic);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    async fn step(&self, wait: Duration) -> Result<()> {
        let from = self.next();
        let records = self.log.read(self.topic, 0, from, 1000, wait).await?;
        let Some(last) = records.last().map(|r| r.offset) else {
            return Ok(());
        };
        let mut state = self.state.write().unwrap();
        for rec in &records {
            if rec.value.is_empty() {
                forget(&mut state.entries, &rec.key);
                continue;
            }
            match self.codec.decode(&rec.value) {
                Ok(e) => apply(&mut state.entries, e, generation(rec)),
                Err(e) => tracing::warn!(
                    offset = rec.offset,
                    "skipping undecodable config event: {e}"
                ),
            }
        }
        state.next = last + 1;
        drop(state);
        self.applied.send_replace(last + 1);
        Ok(())
    }

    pub fn get(&self, kind: &str, name: &str) -> Option<Entry> {
        let state = self.state.read().unwrap();
        state
            .entries
            .get(&(kind.to_string(), name.to_string()))
            .cloned()
    }

    /// Every entity of `kind`, by name.
    pub fn list(&self, kind: &str) -> Vec<Entry> {
        let state = self.state.read().unwrap();
        state
            .entries
            .values()
            .filter(|e| e.kind == kind)
            .cloned()
            .collect()
    }

    /// Entities of `kind` whose names start with `prefix`, by name, from the first name after
    /// `after` (exclusive), at most `limit`.
    pub fn list_prefix(
        &self,
        kind: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<Entry> {
        let state = self.state.read().unwrap();
        let from = (kind.to_string(), after.unwrap_or(prefix).to_string());
        state
            .entries
            .range(from..)
            .filter(|((_, name), _)| Some(name.as_str()) != after)
            .take_while(|((k, name), _)| k == kind && name.starts_with(prefix))
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// How many entities of `kind` have names starting with `prefix`.
    pub fn count_prefix(&self, kind: &str, prefix: &str) -> usize {
        let state = self.state.read().unwrap();
        state
            .entries
            .range((kind.to_string(), prefix.to_string())..)
            .take_while(|((k, name), _)| k == kind && name.starts_with(prefix))
            .count()
    }

    /// Every entity of `kind` by name, with the id of its latest change (no specs copied):
    /// enough to tell which changed since last looked at.
    pub fn versions(&self, kind: &str) -> Vec<(String, Uuid)> {
        let state = self.state.read().unwrap();
        state
            .entries
            .range((kind.to_string(), String::new())..)
            .take_while(|((k, _), _)| k == kind)
            .map(|((_, name), e)| (name.clone(), e.changed_by))
            .collect()
    }

    /// Wait until this node has applied everything appended to the topic before the call:
    /// a decision taken on the catalog afterwards sees every change made before it.
    pub async fn caught_up(&self) -> Result<()> {
        let end = self.log.offsets(self.topic, 0).await?.end;
        let mut applied = self.applied.subscribe();
        applied
            .wait_for(|next| *next >= end)
            .await
            .map_err(|_| Error::Shutdown)?;
        Ok(())
    }

    async fn wait_applied(&self, offset: u64) -> Result<()> {
        let mut applied = self.applied.subscribe();
        applied
            .wait_for(|next| *next > offset)
            .await
            .map_err(|_| Error::Shutdown)?;
        Ok(())
    }

    /// Append `entry`'s current state again as an `updated` record.
    async fn reassert(&self, entry: &Entry) -> Result<()> {
        let event = ConfigEvent {
            event_id: Uuid::now_v7(),
            event_time: now_us(),
            kind: entry.kind.clone(),
            name: entry.name.clone(),
            action: Action::Update.as_str().into(),
            spec: Some(entry.spec.clone()),
            actor: entry.actor.clone(),
            node: self.node.clone(),
        };
        let mut record = NewRecord::new(
            format!("{}/{}", entry.kind, entry.name),
            self.codec.encode(&event)?,
        );
        record.headers = generation_headers(entry);
        let positions = self.log.append(self.topic, vec![record]).await?;
        self.wait_applied(positions.last().map(|p| p.offset).unwrap_or_default())
            .await
    }

    /// The next offset to apply: changes exactly when the catalog may have changed.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Notified whenever events were applied (the value is the next offset to apply).
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// The audit trail: changes recorded on the topic from offset `from` on that `keep`
    /// selects, oldest first, at most `limit`, with their offsets; and the offset to go on
    /// from (`None` at the end of what this node has applied).
    pub async fn history(
        &self,
        from: u64,
        limit: usize,
        keep: impl Fn(&ConfigEvent) -> bool,
    ) -> Result<(Vec<(u64, ConfigEvent)>, Option<u64>)> {
        let end = self.applied();
        let mut next = from.max(self.log.offsets(self.topic, 0).await?.start);
        let mut out = Vec::new();
        while next < end {
            let records = self
                .log
                .read(self.topic, 0, next, 1000, Duration::ZERO)
                .await?;
            let Some(last) = records.last().map(|r| r.offset) else {
                break;
            };
            for rec in records.into_iter().take_while(|r| r.offset < end) {
                next = rec.offset + 1;
                if let Ok(e) = self.codec.decode(&rec.value)
                    && keep(&e)
                {
                    out.push((rec.offset, e));
                    if out.len() == limit {
                        return Ok((out, (next < end).then_some(next)));
                    }
                }
            }
            next = next.max(last + 1);
        }
        Ok((out, None))
    }

    /// Append a change and wait until this node has applied it. Returns the entity after the
    /// change (`None` after a delete); a change the log ordered after a conflicting one is
    /// an error naming the conflict.
    pub async fn change(
        &self,
        kind: &str,
        name: &str,
        action: Action,
        spec: Option<String>,
        actor: Option<String>,
    ) -> Result<Option<Entry>> {
        let event = ConfigEvent {
            event_id: Uuid::now_v7(),
            event_time: now_us(),
            kind: kind.into(),
            name: name.into(),
            action: action.as_str().into(),
            spec,
            actor,
            node: self.node.clone(),
        };
        let key = format!("{kind}/{name}");
        let mut records = vec![NewRecord::new(key.clone(), self.codec.encode(&event)?)];
        match action {
            Action::Update => {
                if let Some(current) = self.get(kind, name) {
                    records[0].headers = generation_headers(&current);
                }
            }
            Action::Delete => records.push(NewRecord::new(key.clone(), Vec::new())),
            Action::Create => {}
        }
        let positions = self.log.append(self.topic, records).await?;
        let offset = positions.last().map(|p| p.offset).unwrap_or_default();
        self.wait_applied(offset).await?;
        let now = self.get(kind, name);
        let won = match action {
            Action::Delete => now.is_none(),
            _ => now.as_ref().is_some_and(|e| e.changed_by == event.event_id),
        };
        if let (Action::Create, false, Some(winner)) = (action, won, &now) {
            // Our `created` is now the newest record of the key: state the winner again so
            // compaction keeps the winner.
            self.reassert(winner).await?;
        }
        if !won {
            return Err(match action {
                Action::Create => Error::Conflict(format!("{kind} '{name}' exists already")),
                _ => Error::NotFound(format!("{kind} '{name}' does not exist")),
            });
        }
        Ok(now)
    }
}

/// The generation an `updated` record carries in its headers.
fn generation(rec: &Record) -> Option<(Uuid, i64)> {
    let header = |name: &str| {
        rec.headers
            .iter()
            .find(|h| h.name == name)
            .and_then(|h| std::str::from_utf8(&h.value).ok())
    };
    let by = header(CREATED_BY)?.parse().ok()?;
    let at = header(CREATED_AT)?.parse().ok()?;
    Some((by, at))
}

fn generation_headers(entry: &Entry) -> Vec<Header> {
    vec![
        Header {
            name: CREATED_BY.into(),
            value: entry.created_by.to_string().into_bytes().into(),
        },
        Header {
            name: CREATED_AT.into(),
            value: entry.created_at.to_string().into_bytes().into(),
        },
    ]
}

/// A tombstone: the entity named by the record key (`kind/name`) is gone.
fn forget(entries: &mut BTreeMap<(String, String), Entry>, key: &[u8]) {
    let Some((kind, name)) = std::str::from_utf8(key)
        .ok()
        .and_then(|k| k.split_once('/'))
    else {
        return;
    };
    entries.remove(&(kind.to_string(), name.to_string()));
}

fn apply(
    entries: &mut BTreeMap<(String, String), Entry>,
    e: ConfigEvent,
    generation: Option<(Uuid, i64)>,
) {
    let id = (e.kind.clone(), e.name.clone());
    match (e.action.as_str(), entries.get_mut(&id), e.spec) {
        ("created", None, Some(spec)) => {
            entries.insert(
                id,
                Entry {
                    kind: e.kind,
                    name: e.name,
                    spec,
                    created_by: e.event_id,
                    created_at: e.event_time,
                    changed_by: e.event_id,
                    changed_at: e.event_time,
                    actor: e.actor,
                },
            );
        }
        ("updated", Some(entry), Some(spec)) => {
            entry.spec = spec;
            entry.changed_by = e.event_id;
            entry.changed_at = e.event_time;
            entry.actor = e.actor;
        }
        // Compaction removed what came before (or a delete raced this update): the record
        // stands alone.
        ("updated", None, Some(spec)) => {
            if let Some((created_by, created_at)) = generation {
                entries.insert(
                    id,
                    Entry {
                        kind: e.kind,
                        name: e.name,
                        spec,
                        created_by,
                        created_at,
                        changed_by: e.event_id,
                        changed_at: e.event_time,
                        actor: e.actor,
                    },
                );
            }
        }
        ("deleted", Some(_), _) => {
            entries.remove(&id);
        }
        // A conflicting change lost the race in log order; other kinds (ownership
        // announcements) are followed elsewhere.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::SchemaSource;
    use crate::log::TopicSpec;
    use crate::log::embedded::{EmbeddedLog, LogConfig};
    use crate::registry::SchemaRegistry;

    async fn open(log: &Arc<EmbeddedLog>) -> Arc<Catalog> {
        let log: Arc<dyn Log> = log.clone();
        let compacted = TopicSpec {
            compacted: true,
            ..TopicSpec::new(1)
        };
        log.ensure_topic(CONFIG_TOPIC, &compacted).await.unwrap();
        let registry = Arc::new(SchemaRegistry::open(log.clone()).await.unwrap());
        let schema = tidemark_schemas::config_event_latest();
        let id = registry
            .register(schema.subject, schema.text)
            .await
            .unwrap();
        let source: Arc<dyn SchemaSource> = registry;
        let codec = Arc::new(ConfigCodec::new(id, source).unwrap());
        Catalog::open(log, codec, None).await.unwrap()
    }

    fn everything(c: &Catalog) -> Vec<Entry> {
        ["sub", "filter"].iter().flat_map(|k| c.list(k)).collect()
    }

    /// Creates, many updates, deletes, re-creates and a lost create race, then compaction:
    /// a catalog loaded from the compacted topic equals the one that followed every change,
    /// generations included.
    #[tokio::test]
    async fn a_catalog_loaded_after_compaction_equals_the_one_that_saw_everything() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 2048,
            tombstone_retention: Duration::ZERO,
            ..LogConfig::default()
        };
        let log = Arc::new(EmbeddedLog::open(dir.path(), config).unwrap());
        let live = open(&log).await;
        for i in 0..6 {
            let name = format!("s{i}");
            live.change("sub", &name, Action::Create, Some("{}".into()), None)
                .await
                .unwrap();
        }
        for round in 0..20 {
            for i in 0..6 {
                let spec = format!("{{\"round\":{round}}}");
                live.change("sub", &format!("s{i}"), Action::Update, Some(spec), None)
                    .await
                    .unwrap();
            }
        }
        live.change("sub", "s1", Action::Delete, None, None)
            .await
            .unwrap();
        live.change("sub", "s2", Action::Delete, None, None)
            .await
            .unwrap();
        live.change(
            "sub",
            "s2",
            Action::Create,
            Some("{\"again\":1}".into()),
            None,
        )
        .await
        .unwrap();
        let lost = live
            .change(
                "sub",
                "s3",
                Action::Create,
                Some("{\"loser\":1}".into()),
                None,
            )
            .await;
        assert!(matches!(lost, Err(Error::Conflict(_))), "{lost:?}");
        live.change("filter", "f", Action::Create, Some("{}".into()), None)
            .await
            .unwrap();
        let expected = everything(&live);
        assert_eq!(expected.len(), 6);
        assert_eq!(live.get("sub", "s3").unwrap().spec, "{\"round\":19}");

        let before = log.offsets(CONFIG_TOPIC, 0).await.unwrap();
        let done = log.compact_now().unwrap();
        assert!(done.records_removed > 100, "{done:?}");
        let fresh = open(&log).await;
        assert_eq!(everything(&fresh), expected);
        // Offsets are kept, so positions taken before compaction stay valid.
        assert_eq!(log.offsets(CONFIG_TOPIC, 0).await.unwrap(), before);
        drop((live, fresh));
    }
}
