//! The closed set of sink kinds: which folder builds the sink a subscription's `sink` names,
//! with the node's services. The one place that knows every kind; the delivery engine only
//! sees the [`SinkKind`] built here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tidemark_core::catalog::Catalog;
use tidemark_core::codec::EventCodec;

use crate::client::Outbound;
use crate::function::{self, Functions, Invocations};
use crate::sink::{BuildCtx, SinkKind};
use crate::subscription::spec::SinkSpec;
use crate::{Error, Result, amqp, iceberg, kafka, lake, lambda, nats, redis_stream, sqs, webhook};

/// Builds sinks from specs.
pub struct Kinds {
    /// Where secret references are resolved.
    catalog: Arc<Catalog>,
    /// The process functions the operator declared on this node.
    functions: Arc<Functions>,
    outbound: Outbound,
    /// CloudEvents `source` base of this node's payloads.
    source: String,
    /// The log's codec: writer schemas by id.
    codec: Arc<EventCodec>,
    /// Function sinks' recent invocations, by subscription: kept across restarts of a
    /// subscription's delivery (a replaced spec keeps its history).
    invocations: Mutex<HashMap<String, Arc<Invocations>>>,
}

impl Kinds {
    pub fn new(
        catalog: Arc<Catalog>,
        functions: Arc<Functions>,
        outbound: Outbound,
        source: String,
        codec: Arc<EventCodec>,
    ) -> Kinds {
        Kinds {
            catalog,
            functions,
            outbound,
            source,
            codec,
            invocations: Default::default(),
        }
    }

    /// The sink `spec` describes for subscription `subscription`, secrets resolved; `replay`
    /// is the replay job it re-delivers for, if any.
    pub fn build(
        &self,
        spec: &SinkSpec,
        subscription: &str,
        replay: Option<&str>,
    ) -> Result<SinkKind> {
        let ctx = BuildCtx {
            subscription,
            catalog: &self.catalog,
            client: &self.outbound.http,
            outbound: &self.outbound,
            codec: &self.codec,
            source: &self.source,
            replay,
        };
        match spec {
            SinkSpec::Webhook(w) => webhook::build(w, &ctx),
            SinkSpec::Function(f) => {
                let invocations = self.invocations_of(subscription);
                function::build(f, &ctx, &self.functions, invocations)
            }
            SinkSpec::Parquet(p) => lake::build(p, &ctx),
            SinkSpec::Iceberg(i) => iceberg::build(i, &ctx),
            SinkSpec::Kafka(k) => kafka::build(k, &ctx),
            SinkSpec::Sqs(q) => sqs::build(q, &ctx),
            SinkSpec::Lambda(l) => lambda::build(l, &ctx),
            SinkSpec::RedisStream(r) => redis_stream::build(r, &ctx),
            SinkSpec::Nats(n) => nats::build(n, &ctx),
            SinkSpec::Amqp(a) => amqp::build(a, &ctx),
        }
    }

    /// Why this node cannot run `spec` at all (not a passing failure): a process function it
    /// does not declare. Such a subscription resumes when the operator declares it.
    pub fn paused_reason(&self, spec: &SinkSpec) -> Option<String> {
        match spec {
            SinkSpec::Function(f) if f.mode == "process" => self.functions.resolve(f).err(),
            _ => None,
        }
    }

    /// Recent invocations of subscription `name`, whose sink is `spec`.
    pub fn invocations(&self, name: &str, spec: &SinkSpec) -> Result<serde_json::Value> {
        if !matches!(spec, SinkSpec::Function(_)) {
            return Err(Error::invalid(
                "name",
                format!("subscription '{name}' has no function sink"),
            ));
        }
        Ok(self.invocations_of(name).to_json())
    }

    fn invocations_of(&self, name: &str) -> Arc<Invocations> {
        self.invocations
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .clone()
    }
}
