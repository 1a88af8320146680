//! Subscriptions, event-sourced on `_config` through the catalog (kind `subscription`).
//!
//! Creating a subscription resolves its `start` into one offset per partition of `objects`
//! right away and stores them with it, so `latest` means "from the moment the request was
//! acknowledged" whichever node later runs it and however long it takes to start. Its
//! delivery position is the consumer `sub.<name>.<generation>` of the log; the generation
//! (the id of the creating event) keeps a re-created subscription from inheriting the
//! position of a deleted one with the same name.

mod budget;
pub mod spec;
mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tidemark_core::OBJECTS_TOPIC;
use tidemark_core::catalog::{Action, Catalog, Entry};
use tidemark_core::log::Log;
use tidemark_core::rules::Rule;
use tidemark_plugins::{FilterInstance, Filters, Users};

use crate::function::Functions;
use crate::guard::DestinationPolicy;
use crate::{Error, Result, secrets};
use spec::{SinkSpec, SubscriptionSpec};

/// Catalog kind of subscriptions.
pub const SUBSCRIPTION_KIND: &str = "subscription";

/// What `_config` holds for a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// The spec, with secrets replaced by references.
    pub spec: SubscriptionSpec,
    /// Partition -> first offset to deliver, resolved from `start` at creation.
    pub start_offsets: BTreeMap<u32, u64>,
    /// Why delivery stopped for good (the endpoint answered 410 Gone); `None` while active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<String>,
}

/// A subscription as the catalog has it now.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub stored: Stored,
    pub rule: Rule,
    pub entry: Entry,
}

impl Subscription {
    pub fn name(&self) -> &str {
        &self.stored.spec.name
    }

    /// The log consumer whose committed offsets are this subscription's position.
    pub fn consumer(&self) -> String {
        format!("sub.{}.{}", self.name(), self.entry.created_by.simple())
    }

    /// The JSON the API shows: the spec (secrets as references) and its state.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.stored.spec).unwrap_or_default();
        v["created_at"] = tidemark_core::time::format_us(self.entry.created_at).into();
        v["updated_at"] = tidemark_core::time::format_us(self.entry.changed_at).into();
        v["state"] = match &self.stored.disabled {
            None => "active".into(),
            Some(_) => "disabled".into(),
        };
        if let Some(reason) = &self.stored.disabled {
            v["disabled_reason"] = reason.clone().into();
        }
        v
    }

    fn from_entry(entry: Entry) -> Result<Subscription> {
        let stored: Stored = serde_json::from_str(&entry.spec).map_err(|e| {
            Error::Core(tidemark_core::Error::Corrupt(format!(
                "subscription '{}' in the catalog is unreadable: {e}",
                entry.name
            )))
        })?;
        let rule = Rule::compile(
            &stored.spec.rules,
            "rules",
            tidemark_core::rules::Limits::default(),
        )?;
        Ok(Subscription {
            stored,
            rule,
            entry,
        })
    }
}

/// Create, change and remove subscriptions.
pub struct Subscriptions {
    catalog: Arc<Catalog>,
    log: Arc<dyn Log>,
    policy: DestinationPolicy,
    filters: Arc<Filters>,
    /// The process functions the operator declared; sinks name them.
    functions: Arc<Functions>,
    /// Where Iceberg sinks register their tables unless told (`with_iceberg_catalog`).
    iceberg_catalog: Option<std::path::PathBuf>,
}

impl Subscriptions {
    pub fn new(
        catalog: Arc<Catalog>,
        log: Arc<dyn Log>,
        policy: DestinationPolicy,
        filters: Arc<Filters>,
        functions: Arc<Functions>,
    ) -> Self {
        Subscriptions {
            catalog,
            log,
            policy,
            filters,
            functions,
            iceberg_catalog: None,
        }
    }

    /// Iceberg sinks created without a catalog path register their tables in `path` (the
    /// server's own catalog, `<data-dir>/iceberg/catalog.db`).
    pub fn with_iceberg_catalog(mut self, path: std::path::PathBuf) -> Self {
        self.iceberg_catalog = Some(path);
        self
    }

    fn default_catalog(&self, spec: &mut SubscriptionSpec, old: Option<&SinkSpec>) {
        default_catalog(self.iceberg_catalog.as_deref(), &mut spec.sink, old);
    }

    pub fn functions(&self) -> &Arc<Functions> {
        &self.functions
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn filters(&self) -> &Arc<Filters> {
        &self.filters
    }

    /// The filter a spec names exists, fits in the filter memory budget, loads, and accepts
    /// the spec's parameters.
    async fn check_filter(&self, spec: &SubscriptionSpec) -> Result<()> {
        let Some(reference) = &spec.filter else {
            return Ok(());
        };
        let version = self
            .filters
            .resolve(reference)
            .map_err(|e| Error::invalid("filter", e.to_string()))?;
        budget::admit(self, spec, &version)?;
        let module = self
            .filters
            .module(&version)
            .await
            .map_err(|e| Error::invalid("filter", format!("{}: {e}", version.reference())))?;
        if !module.has_init {
            return Ok(());
        }
        let params = spec.filter_params.as_ref().map(|p| p.to_string());
        let started =
            tokio::task::spawn_blocking(move || FilterInstance::new(module, params.as_deref()))
                .await
                .map_err(|e| Error::Unavailable(e.to_string()))?;
        started.map(|_| ()).map_err(|e| match e {
            tidemark_plugins::Error::Capacity(_) => {
                Error::Unavailable(format!("filter_params cannot be checked now: {e}"))
            }
            e => Error::invalid(
                "filter_params",
                format!("{} refused these parameters: {e}", version.reference()),
            ),
        })
    }

    /// Who needs which version of filter `name` now (for the version cap at upload):
    /// subscriptions pinned to a version, and those following its latest.
    pub fn version_users(&self, name: &str) -> Users {
        let mut users = Users::default();
        for s in self.list() {
            let Some(Ok((n, pinned))) = s
                .stored
                .spec
                .filter
                .as_deref()
                .map(tidemark_plugins::parse_reference)
            else {
                continue;
            };
            if n != name {
                continue;
            }
            match pinned {
                Some(v) => users
                    .pinned
                    .entry(v)
                    .or_default()
                    .push(s.name().to_string()),
                None => users.following.push(s.name().to_string()),
            }
        }
        users
    }

    /// Subscriptions that would lose their filter if `name` (or its version `version`) were
    /// deleted: those naming it pinned to that version, and those following its latest
    /// version when no other live version would remain.
    pub fn filter_users(&self, name: &str, version: Option<u32>) -> Vec<String> {
        let live = self
            .filters
            .versions(name)
            .iter()
            .filter(|v| v.deleted_at.is_none())
            .count();
        self.list()
            .into_iter()
            .filter(|s| {
                let Some(Ok((n, pinned))) = s
                    .stored
                    .spec
                    .filter
                    .as_deref()
                    .map(tidemark_plugins::parse_reference)
                else {
                    return false;
                };
                n == name
                    && match (version, pinned) {
                        (None, _) => true,
                        (Some(v), Some(p)) => v == p,
                        (Some(_), None) => live <= 1,
                    }
            })
            .map(|s| s.name().to_string())
            .collect()
    }

    pub fn get(&self, name: &str) -> Result<Subscription> {
        let entry = self
            .catalog
            .get(SUBSCRIPTION_KIND, name)
            .ok_or_else(|| Error::NotFound(format!("subscription '{name}' does not exist")))?;
        Subscription::from_entry(entry)
    }

    pub fn list(&self) -> Vec<Subscription> {
        self.catalog
            .list(SUBSCRIPTION_KIND)
            .into_iter()
            .filter_map(|e| match Subscription::from_entry(e) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("{e}");
                    None
                }
            })
            .collect()
    }

    pub async fn create(
        &self,
        mut spec: SubscriptionSpec,
        actor: Option<String>,
    ) -> Result<Subscription> {
        self.default_catalog(&mut spec, None);
        validate::validate(&spec, self.policy, &self.functions)?;
        self.check_filter(&spec).await?;
        if self.catalog.get(SUBSCRIPTION_KIND, &spec.name).is_some() {
            return Err(Error::Conflict(format!(
                "subscription '{}' exists already; change it with PUT /v1/subscriptions/{0} or remove it first",
                spec.name
            )));
        }
        let start_offsets = self.resolve_start(&spec.start).await?;
        let refs = self.store_secrets(&mut spec).await?;
        let stored = Stored {
            spec,
            start_offsets,
            disabled: None,
        };
        let name = stored.spec.name.clone();
        let text = serde_json::to_string(&stored).expect("a subscription serializes");
        match self
            .catalog
            .change(SUBSCRIPTION_KIND, &name, Action::Create, Some(text), actor)
            .await
        {
            Ok(entry) => Subscription::from_entry(entry.expect("created")),
            Err(e) => {
                secrets::forget(&self.catalog, &refs).await;
                Err(e.into())
            }
        }
    }

    /// Replace a subscription's spec, keeping its position (`start` is ignored) and
    /// re-enabling it if it was disabled.
    pub async fn replace(
        &self,
        mut spec: SubscriptionSpec,
        actor: Option<String>,
    ) -> Result<Subscription> {
        let old = self.get(&spec.name);
        let old_sink = old.as_ref().ok().map(|o| &o.stored.spec.sink);
        self.default_catalog(&mut spec, old_sink);
        validate::validate(&spec, self.policy, &self.functions)?;
        let old = old?;
        self.check_filter(&spec).await?;
        let refs = self.store_secrets(&mut spec).await?;
        let stored = Stored {
            spec,
            start_offsets: old.stored.start_offsets.clone(),
            disabled: None,
        };
        let name = stored.spec.name.clone();
        let text = serde_json::to_string(&stored).expect("a subscription serializes");
        let entry = self
            .catalog
            .change(SUBSCRIPTION_KIND, &name, Action::Update, Some(text), actor)
            .await?
            .expect("updated");
        // Secrets the new spec no longer references are removed.
        let kept: Vec<String> = sink_secrets(&stored.spec.sink);
        let dropped: Vec<String> = sink_secrets(&old.stored.spec.sink)
            .into_iter()
            .filter(|r| !kept.contains(r) && !refs.contains(r))
            .collect();
        secrets::forget(&self.catalog, &dropped).await;
        Subscription::from_entry(entry)
    }

    /// Stop delivering for good until the spec is replaced (an endpoint answered 410 Gone).
    pub async fn disable(&self, name: &str, reason: String) -> Result<()> {
        let mut sub = self.get(name)?;
        sub.stored.disabled = Some(reason);
        let text = serde_json::to_string(&sub.stored).expect("a subscription serializes");
        self.catalog
            .change(SUBSCRIPTION_KIND, name, Action::Update, Some(text), None)
            .await?;
        Ok(())
    }

    pub async fn delete(&self, name: &str, actor: Option<String>) -> Result<()> {
        let old = self.get(name)?;
        self.catalog
            .change(SUBSCRIPTION_KIND, name, Action::Delete, None, actor)
            .await?;
        secrets::forget(&self.catalog, &sink_secrets(&old.stored.spec.sink)).await;
        Ok(())
    }

    async fn resolve_start(&self, start: &str) -> Result<BTreeMap<u32, u64>> {
        let n = self.log.partitions(OBJECTS_TOPIC)?;
        let mut offsets = BTreeMap::new();
        for p in 0..n {
            let range = self.log.offsets(OBJECTS_TOPIC, p).await?;
            let at = match start {
                "latest" => range.end,
                "earliest" => range.start,
                t => {
                    let us = tidemark_core::time::parse_rfc3339_us(t)
                        .map_err(|e| Error::invalid("start", e))?;
                    self.log.offset_for_time(OBJECTS_TOPIC, p, us).await?
                }
            };
            offsets.insert(p, at);
        }
        Ok(offsets)
    }

    /// Move inline secret values into the secret store; returns the new references.
    async fn store_secrets(&self, spec: &mut SubscriptionSpec) -> Result<Vec<String>> {
        let owner = spec.name.clone();
        let mut created = Vec::new();
        let (secret, bearer) = match &mut spec.sink {
            SinkSpec::Webhook(w) => (&mut w.secret, Some(&mut w.bearer_token)),
            SinkSpec::Function(f) => (&mut f.secret, None),
            SinkSpec::Parquet(p) => {
                if let Some(key) = p.s3.as_mut().and_then(|s| s.secret_access_key.as_mut()) {
                    *key = self.reference(&owner, key, &mut created).await?;
                }
                return Ok(created);
            }
            SinkSpec::Iceberg(i) => {
                for value in i.secrets_mut() {
                    *value = self.reference(&owner, value, &mut created).await?;
                }
                return Ok(created);
            }
            SinkSpec::Kafka(k) => {
                for (name, value) in k.properties.iter_mut() {
                    if crate::kafka::is_secret_property(name) {
                        *value = self.reference(&owner, value, &mut created).await?;
                    }
                }
                if let Some(p) = k.schema_registry.as_mut().and_then(|r| r.password.as_mut()) {
                    *p = self.reference(&owner, p, &mut created).await?;
                }
                return Ok(created);
            }
            SinkSpec::Amqp(a) => {
                a.password = self.reference(&owner, &a.password, &mut created).await?;
                return Ok(created);
            }
            SinkSpec::Nats(n) => {
                for value in n.secrets_mut() {
                    *value = self.reference(&owner, value, &mut created).await?;
                }
                return Ok(created);
            }
            SinkSpec::RedisStream(r) => {
                if let Some(p) = r.password.as_mut() {
                    *p = self.reference(&owner, p, &mut created).await?;
                }
                return Ok(created);
            }
            SinkSpec::Sqs(crate::sqs::SqsSinkSpec { credentials, .. })
            | SinkSpec::Lambda(crate::lambda::LambdaSinkSpec { credentials, .. }) => {
                for value in credentials.iter_mut().flat_map(|c| c.secrets_mut()) {
                    *value = self.reference(&owner, value, &mut created).await?;
                }
                return Ok(created);
            }
        };
        let mut refs = Vec::new();
        for value in secret.list() {
            refs.push(self.reference(&owner, &value, &mut created).await?);
        }
        *secret = match refs.len() {
            0 => spec::Secrets::None,
            1 => spec::Secrets::One(refs.remove(0)),
            _ => spec::Secrets::Many(refs),
        };
        if let Some(Some(token)) = bearer {
            *token = self.reference(&owner, token, &mut created).await?;
        }
        Ok(created)
    }

    async fn reference(
        &self,
        owner: &str,
        value: &str,
        created: &mut Vec<String>,
    ) -> Result<String> {
        if secrets::is_reference(value) {
            secrets::check(&self.catalog, "sink.secret", value)?;
            return Ok(value.to_string());
        }
        let r = secrets::store(&self.catalog, owner, value).await?;
        created.push(r.clone());
        Ok(r)
    }
}

/// Give a new Iceberg spec without a catalog path the server's catalog (`server`). `old` is
/// the sink being replaced: one created before that default (no path, so its catalog is
/// `<warehouse>/catalog.db`) keeps its catalog, or its tables would be made again elsewhere.
fn default_catalog(server: Option<&std::path::Path>, sink: &mut SinkSpec, old: Option<&SinkSpec>) {
    let (SinkSpec::Iceberg(i), Some(path)) = (sink, server) else {
        return;
    };
    let legacy = matches!(old, Some(SinkSpec::Iceberg(o)) if o.sql_catalog_unplaced());
    if !legacy {
        i.place_sql_catalog(path);
    }
}

/// Every secret reference a sink holds.
pub fn sink_secrets(sink: &SinkSpec) -> Vec<String> {
    match sink {
        SinkSpec::Webhook(w) => {
            let mut v = w.secret.list();
            v.extend(w.bearer_token.clone());
            v
        }
        SinkSpec::Function(f) => f.secret.list(),
        SinkSpec::Parquet(p) => {
            p.s3.as_ref()
                .and_then(|s| s.secret_access_key.clone())
                .into_iter()
                .collect()
        }
        SinkSpec::Iceberg(i) => i.clone().secrets_mut().map(|s| s.clone()).collect(),
        SinkSpec::Kafka(k) => k
            .properties
            .iter()
            .filter(|(name, _)| crate::kafka::is_secret_property(name))
            .map(|(_, value)| value.clone())
            .chain(k.schema_registry.as_ref().and_then(|r| r.password.clone()))
            .collect(),
        SinkSpec::Sqs(q) => q.credentials.iter().flat_map(|c| c.secrets()).collect(),
        SinkSpec::Lambda(l) => l.credentials.iter().flat_map(|c| c.secrets()).collect(),
        SinkSpec::RedisStream(r) => r.password.iter().cloned().collect(),
        SinkSpec::Nats(n) => n.secrets(),
        SinkSpec::Amqp(a) => vec![a.password.clone()],
    }
}

/// Parse a subscription body, naming the field of any problem. `sink` is an enum tagged by
/// its `type`, which serde reads through a buffer that loses the path inside it; a problem
/// there is located again by parsing the sink on its own as the type it names.
pub fn parse(body: &[u8]) -> Result<SubscriptionSpec> {
    let err = match tidemark_core::error::parse_json::<SubscriptionSpec>(body) {
        Ok(spec) => return Ok(spec),
        Err(e) => e,
    };
    let tidemark_core::Error::Invalid { field, .. } = &err else {
        return Err(err.into());
    };
    if field != "sink" {
        return Err(err.into());
    }
    let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Err(err.into());
    };
    let Some(sink) = doc.get_mut("sink").and_then(|s| s.as_object_mut()) else {
        return Err(err.into());
    };
    let kind = sink.remove("type");
    let text = serde_json::Value::Object(sink.clone()).to_string();
    let inner = match kind.as_ref().and_then(|k| k.as_str()) {
        Some("webhook") => {
            tidemark_core::error::parse_json::<spec::WebhookSpec>(text.as_bytes()).err()
        }
        Some("function") => {
            tidemark_core::error::parse_json::<spec::FunctionSpec>(text.as_bytes()).err()
        }
        Some("parquet") => {
            tidemark_core::error::parse_json::<spec::ParquetSpec>(text.as_bytes()).err()
        }
        _ => None,
    };
    match inner {
        Some(tidemark_core::Error::Invalid { field, message }) if field != "body" => {
            Err(Error::invalid(format!("sink.{field}"), message))
        }
        _ => Err(err.into()),
    }
}

#[cfg(test)]
mod catalog_tests {
    use super::*;

    fn iceberg(catalog: serde_json::Value) -> SinkSpec {
        serde_json::from_value(serde_json::json!({
            "type": "iceberg", "warehouse": "/wh", "catalog": catalog
        }))
        .unwrap()
    }

    fn path_of(sink: &SinkSpec) -> serde_json::Value {
        serde_json::to_value(sink).unwrap()["catalog"]["path"].clone()
    }

    #[test]
    fn new_specs_get_the_servers_catalog_and_old_ones_keep_theirs() {
        let server = std::path::Path::new("/data/iceberg/catalog.db");
        let mut new = iceberg(serde_json::json!({"type": "sql"}));
        default_catalog(Some(server), &mut new, None);
        assert_eq!(path_of(&new), "/data/iceberg/catalog.db");
        // Replacing a spec stored without a path keeps `<warehouse>/catalog.db`.
        let stored = iceberg(serde_json::json!({"type": "sql"}));
        let mut replacement = iceberg(serde_json::json!({"type": "sql"}));
        default_catalog(Some(server), &mut replacement, Some(&stored));
        assert!(path_of(&replacement).is_null());
        // A path given, or a REST catalog, is left as it is.
        let mut given = iceberg(serde_json::json!({"type": "sql", "path": "/elsewhere.db"}));
        default_catalog(Some(server), &mut given, None);
        assert_eq!(path_of(&given), "/elsewhere.db");
        let mut rest = iceberg(serde_json::json!({"type": "rest", "uri": "http://c/iceberg"}));
        default_catalog(Some(server), &mut rest, None);
        assert!(path_of(&rest).is_null());
    }
}
