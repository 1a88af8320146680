//! The log on Kafka (any Kafka-protocol broker), through librdkafka.
//!
//! # Layout
//! - `config.rs`: brokers, replication, producer batching, extra librdkafka properties.
//! - `security.rs`: TLS and SASL settings, checked before connecting.
//! - `secret.rs`: passwords given as values or `env:` / `file:` references, never printed.
//! - `client.rs`: every librdkafka client is made there, with the same settings and context.
//! - `broker_errors.rs`: the brokers' most recent refusal (TLS, SASL, ...), which the log's
//!   errors name, since librdkafka's API calls only say "transport failure" or time out.
//! - `reader.rs`: reading one partition from a given offset.
//! - `group.rs`: group membership (which node writes which partition).
//!
//! Appends go through one idempotent producer (`enable.idempotence=true`, `acks=all`), so
//! records of one partition land in the order they were enqueued and never twice; an append
//! resolves only when every record's delivery report is in. Records carry an explicit
//! partition chosen with the same murmur2 hash as the embedded log, so a key has the same
//! partition on both backends. Committed offsets are Kafka consumer-group offsets (group id =
//! consumer name), so Kafka tools show them.

mod broker_errors;
mod client;
mod config;
mod group;
mod reader;
mod secret;
mod security;

pub use config::KafkaConfig;
pub use secret::Secret;
pub use security::{SaslMechanism, Security, SecurityProtocol, is_secret_property};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};

use self::broker_errors::Context;
use self::client::{Clients, Consumer, Producer, drain_events, wait_for_cluster};
use self::reader::PartitionReader;
use crate::log::{
    AppendFuture, Log, NewRecord, OffsetRange, Position, Record, TopicSpec, partition_for,
    validate_name,
};
use crate::{Error, Result};

/// The producer an append used, and each record's partition and delivery report.
type Queued = (Arc<Producer>, Vec<(u32, rdkafka::producer::DeliveryFuture)>);

/// A partition reader shared by calls for the same topic and partition.
type SharedReader = Arc<Mutex<PartitionReader>>;

/// Consumers kept per partition for plain reads (see `KafkaLog::readers`).
const READERS_PER_PARTITION: usize = 8;

pub struct KafkaLog {
    config: KafkaConfig,
    /// Makes the clients; holds what the brokers last refused us with.
    clients: Clients,
    producer: Arc<ProducerSlot>,
    admin: AdminClient<Context>,
    /// For metadata, watermarks and offsets-for-times.
    meta: Arc<Consumer>,
    /// Per partition, a few readers: the materializer, every subscription and the tools read
    /// one partition at different positions, and each should find a consumer already
    /// positioned where it reads next instead of seeking one shared consumer back and forth.
    readers: Mutex<HashMap<(String, u32), Vec<SharedReader>>>,
    /// One group consumer per named consumer, for its committed offsets.
    groups: Mutex<HashMap<String, Arc<Consumer>>>,
    /// Live members of the groups this process joined, by group: commits go through them.
    members: Mutex<HashMap<String, std::sync::Weak<BaseConsumer<group::GroupContext>>>>,
    partitions: RwLock<HashMap<String, u32>>,
}

/// The producer, replaced when it cannot produce again: after a fatal librdkafka error, or
/// once the cluster has fenced it. A new producer (a new producer id) can.
struct ProducerSlot {
    config: KafkaConfig,
    clients: Clients,
    current: RwLock<Arc<Producer>>,
}

impl ProducerSlot {
    fn get(&self) -> Arc<Producer> {
        self.current.read().unwrap().clone()
    }

    /// If `used` failed fatally, start a new producer (once).
    fn renew_if_fatal(&self, used: &Arc<Producer>) {
        if let Some((code, reason)) = used.client().fatal_error() {
            self.renew(used, &format!("{code:?}: {reason}"));
        }
    }

    /// After `error` on `used`: replace it if it cannot produce again.
    fn renew_after(&self, used: &Arc<Producer>, error: &KafkaError) {
        if matches!(
            error,
            KafkaError::MessageProduction(RDKafkaErrorCode::ProducerFenced)
        ) {
            self.renew(used, "fenced by the cluster");
        } else {
            self.renew_if_fatal(used);
        }
    }

    fn renew(&self, used: &Arc<Producer>, why: &str) {
        let mut current = self.current.write().unwrap();
        if !Arc::ptr_eq(&current, used) {
            return; // already renewed
        }
        tracing::warn!("kafka producer cannot produce again ({why}); starting a new one");
        match create_producer(&self.clients, &self.config) {
            Ok(p) => *current = Arc::new(p),
            Err(e) => tracing::error!("cannot start a new kafka producer: {e}"),
        }
    }
}

fn create_producer(clients: &Clients, config: &KafkaConfig) -> Result<Producer> {
    let settings = clients.config(|c| {
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", config.linger_ms.to_string())
            .set("batch.size", config.batch_size.to_string())
            .set("message.timeout.ms", config.delivery_timeout_ms.to_string())
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            // Partitions are always set explicitly; this only matters to other tools.
            .set("partitioner", "murmur2_random");
    });
    clients.create("producer", &settings)
}

/// Map a librdkafka error to ours, naming what we were doing.
fn kafka_err(what: &'static str) -> impl Fn(KafkaError) -> Error {
    move |e| Error::Unavailable(format!("kafka {what}: {e}"))
}

impl KafkaLog {
    /// Connect to the cluster. Checks the settings first (errors name the flag), then waits
    /// until a broker answers a metadata request, at most the request timeout; a refusal (a
    /// TLS handshake or SASL login that failed) ends the wait at once, and the error says what
    /// the brokers answered and which setting to check.
    pub fn connect(config: KafkaConfig) -> Result<KafkaLog> {
        let start = Instant::now();
        let clients = Clients::new(&config)?;
        let producer = Arc::new(ProducerSlot {
            current: RwLock::new(Arc::new(create_producer(&clients, &config)?)),
            config: config.clone(),
            clients: clients.clone(),
        });
        let admin = clients.create("admin client", &clients.config(|_| {}))?;
        let meta: Consumer = clients.create(
            "consumer",
            &Self::consumer_config(&clients, "tidemark-meta"),
        )?;
        wait_for_cluster(&clients, &meta, &config, start)?;
        Ok(KafkaLog {
            config,
            clients,
            producer,
            admin,
            meta: Arc::new(meta),
            readers: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
            members: Mutex::new(HashMap::new()),
            partitions: RwLock::new(HashMap::new()),
        })
    }

    /// What the brokers refuse us with now, if anything: their last refusal (a failed TLS
    /// handshake or SASL login, a lost connection), when no broker has answered a request
    /// since. `N s ago: <librdkafka's report>; check <flag>`. For readiness checks, which
    /// should not wait out a request timeout to learn it.
    pub fn broker_problem(&self) -> Option<String> {
        drain_events(&self.meta);
        self.clients.errors().current().map(|e| e.describe())
    }

    /// An error of the log, with the brokers' recent refusal added when there is one.
    fn explain(&self, error: Error) -> Error {
        // The metadata consumer is never polled for messages: serve its queued reports now.
        drain_events(&self.meta);
        self.clients.errors().explain(error)
    }

    /// `body`, its error explained.
    fn explained<'a, T: Send + 'a>(
        &'a self,
        body: impl Future<Output = Result<T>> + Send + 'a,
    ) -> BoxFuture<'a, Result<T>> {
        async move { body.await.map_err(|e| self.explain(e)) }.boxed()
    }

    fn consumer_config(clients: &Clients, group: &str) -> rdkafka::ClientConfig {
        clients.config(|c| {
            c.set("group.id", group)
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                // A position that is not in the log is an error, never a silent jump.
                .set("auto.offset.reset", "error")
                .set("enable.partition.eof", "false");
        })
    }

    /// A reader of `partition` for a read at `from`: one positioned there if it is free, else
    /// a new one (up to [`READERS_PER_PARTITION`]), else a free one to reposition, else the
    /// first one to wait for.
    fn reader(&self, topic: &str, partition: u32, from: u64) -> Result<SharedReader> {
        let mut readers = self.readers.lock().unwrap();
        let pool = readers.entry((topic.to_string(), partition)).or_default();
        let positioned = pool
            .iter()
            .find(|r| r.try_lock().is_ok_and(|reader| reader.next() == Some(from)));
        if let Some(r) = positioned {
            return Ok(r.clone());
        }
        if pool.len() < READERS_PER_PARTITION {
            let consumer: Consumer = self.clients.create(
                "consumer",
                &Self::consumer_config(&self.clients, "tidemark-reader"),
            )?;
            let r = Arc::new(Mutex::new(PartitionReader::new(consumer, topic, partition)));
            pool.push(r.clone());
            return Ok(r);
        }
        let free = pool
            .iter()
            .find(|r| r.try_lock().is_ok())
            .unwrap_or(&pool[0]);
        Ok(free.clone())
    }

    fn group(&self, consumer: &str) -> Result<Arc<Consumer>> {
        let mut groups = self.groups.lock().unwrap();
        if let Some(c) = groups.get(consumer) {
            return Ok(c.clone());
        }
        let c: Consumer = self
            .clients
            .create("consumer", &Self::consumer_config(&self.clients, consumer))?;
        let c = Arc::new(c);
        groups.insert(consumer.to_string(), c.clone());
        Ok(c)
    }

    /// Partition count from the cache, or from cluster metadata.
    fn partition_count(&self, topic: &str) -> Result<u32> {
        if let Some(n) = self.partitions.read().unwrap().get(topic) {
            return Ok(*n);
        }
        let md = self
            .meta
            .fetch_metadata(Some(topic), self.config.request_timeout())
            .map_err(kafka_err("fetch metadata"))?;
        let n = md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len() as u32)
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "topic '{topic}' does not exist on the Kafka cluster"
                ))
            })?;
        self.partitions
            .write()
            .unwrap()
            .insert(topic.to_string(), n);
        Ok(n)
    }

    fn check_partition(&self, topic: &str, partition: u32) -> Result<()> {
        let n = self.partition_count(topic)?;
        if partition >= n {
            return Err(Error::BadInput(format!(
                "topic '{topic}' has {n} partitions; there is no partition {partition}"
            )));
        }
        Ok(())
    }

    /// Low and high watermarks, off the async threads.
    async fn watermarks(&self, topic: &str, partition: u32) -> Result<(u64, u64)> {
        self.check_partition(topic, partition)?;
        let (meta, topic, timeout) = (
            self.meta.clone(),
            topic.to_string(),
            self.config.request_timeout(),
        );
        let range = crate::blocking::blocking(move || {
            let (lo, hi) = meta
                .fetch_watermarks(&topic, partition as i32, timeout)
                .map_err(kafka_err("fetch watermarks"))?;
            Ok((lo.max(0) as u64, hi.max(0) as u64))
        })
        .await?;
        // A round trip to the partition's leader: the brokers take us. (Reports queued before
        // it are served first, so they do not count as newer than this answer.)
        drain_events(&self.meta);
        self.clients.errors().answered();
        Ok(range)
    }

    fn enqueue(&self, topic: &str, records: Vec<NewRecord>) -> Result<Queued> {
        // A producer that failed fatally in the background (an epoch bump refused after an
        // outage) is replaced before it is handed records it can only refuse.
        self.producer.renew_if_fatal(&self.producer.get());
        let producer = self.producer.get();
        let n = self.partition_count(topic)?;
        let mut futures = Vec::with_capacity(records.len());
        for rec in records {
            let p = rec.partition.unwrap_or_else(|| partition_for(&rec.key, n));
            if p >= n {
                return Err(Error::BadInput(format!(
                    "topic '{topic}' has {n} partitions; there is no partition {p}"
                )));
            }
            let mut headers = OwnedHeaders::new_with_capacity(rec.headers.len());
            for h in &rec.headers {
                headers = headers.insert(KafkaHeader {
                    key: &h.name,
                    value: Some(&h.value[..]),
                });
            }
            let mut record = FutureRecord::<[u8], [u8]>::to(topic)
                .partition(p as i32)
                .key(&rec.key[..])
                .headers(headers);
            // An empty value is a tombstone: a null payload, which compaction understands.
            if !rec.value.is_empty() {
                record = record.payload(&rec.value[..]);
            }
            match producer.send_result(record) {
                Ok(delivery) => futures.push((p, delivery)),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    return Err(Error::Unavailable(
                        "kafka producer queue is full (the brokers are not keeping up); retry"
                            .into(),
                    ));
                }
                Err((e, _)) => return Err(kafka_err("produce")(e)),
            }
        }
        Ok((producer, futures))
    }
}

impl Log for KafkaLog {
    fn ensure_topic<'a>(
        &'a self,
        topic: &'a str,
        spec: &'a TopicSpec,
    ) -> BoxFuture<'a, Result<u32>> {
        self.explained(async move {
            validate_name("topic", topic)?;
            let retention_ms = spec
                .retention_ms
                .map_or("-1".to_string(), |ms| ms.to_string());
            let retention_bytes = spec
                .retention_bytes
                .map_or("-1".to_string(), |b| b.to_string());
            let mut new = NewTopic::new(
                topic,
                spec.partitions as i32,
                TopicReplication::Fixed(self.config.replication_factor),
            )
            .set("retention.ms", &retention_ms)
            .set("retention.bytes", &retention_bytes);
            if spec.compacted {
                new = new.set("cleanup.policy", "compact");
            }
            let opts = AdminOptions::new().operation_timeout(Some(self.config.request_timeout()));
            let results = self
                .admin
                .create_topics([&new], &opts)
                .await
                .map_err(kafka_err("create topic"))?;
            for r in results {
                match r {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, code)) => {
                        return Err(Error::Unavailable(format!(
                            "kafka: cannot create topic '{name}': {code}"
                        )));
                    }
                }
            }
            // Metadata can trail a creation briefly.
            self.partitions.write().unwrap().remove(topic);
            for _ in 0..50 {
                match self.partition_count(topic) {
                    Ok(n) => return Ok(n),
                    Err(Error::NotFound(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                    Err(e) => return Err(e),
                }
            }
            self.partition_count(topic)
        })
    }

    fn partitions(&self, topic: &str) -> Result<u32> {
        self.partition_count(topic).map_err(|e| self.explain(e))
    }

    fn append(&self, topic: &str, records: Vec<NewRecord>) -> AppendFuture {
        let queued = self.enqueue(topic, records).map_err(|e| self.explain(e));
        let slot = self.producer.clone();
        let errors = self.clients.errors().clone();
        async move {
            let (producer, deliveries) = queued?;
            let mut positions = Vec::new();
            for (partition, delivery) in deliveries {
                match delivery.await {
                    Ok(Ok(d)) => {
                        errors.answered();
                        positions.push(Position {
                            partition,
                            offset: d.offset as u64,
                        })
                    }
                    Ok(Err((e, _))) => {
                        slot.renew_after(&producer, &e);
                        return Err(errors.explain(kafka_err("delivery")(e)));
                    }
                    Err(_) => {
                        return Err(Error::Unavailable(
                            "kafka producer stopped before delivery".into(),
                        ));
                    }
                }
            }
            Ok(positions)
        }
        .boxed()
    }

    fn read<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<Record>>> {
        self.explained(async move {
            let (start, end) = self.watermarks(topic, partition).await?;
            OffsetRange { start, end }.check(partition, from)?;
            // Records that exist are a fetch round trip away, even when the caller will not wait.
            let wait = if from < end {
                wait.max(self.config.request_timeout())
            } else {
                wait
            };
            let reader = self.reader(topic, partition, from)?;
            crate::blocking::blocking(move || reader.lock().unwrap().read(from, max, wait)).await
        })
    }

    fn offsets<'a>(&'a self, topic: &'a str, partition: u32) -> BoxFuture<'a, Result<OffsetRange>> {
        self.explained(async move {
            let (start, end) = self.watermarks(topic, partition).await?;
            Ok(OffsetRange { start, end })
        })
    }

    fn offset_for_time<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        ts_us: i64,
    ) -> BoxFuture<'a, Result<u64>> {
        self.explained(async move {
            let (_, end) = self.watermarks(topic, partition).await?;
            // Kafka timestamps are milliseconds: the first record at or after ts_us is the first
            // at or after the next whole millisecond.
            let ts_ms = ts_us.div_euclid(1000) + i64::from(ts_us.rem_euclid(1000) != 0);
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition as i32, Offset::Offset(ts_ms))
                .map_err(kafka_err("offsets for times"))?;
            let (meta, timeout) = (self.meta.clone(), self.config.request_timeout());
            let found = crate::blocking::blocking(move || {
                meta.offsets_for_times(tpl, timeout)
                    .map_err(kafka_err("offsets for times"))
            })
            .await?;
            Ok(match found.elements().first().map(|e| e.offset()) {
                Some(Offset::Offset(o)) if o >= 0 => o as u64,
                _ => end,
            })
        })
    }

    fn commit<'a>(
        &'a self,
        consumer: &'a str,
        topic: &'a str,
        partition: u32,
        next_offset: u64,
    ) -> BoxFuture<'a, Result<()>> {
        self.explained(async move {
            validate_name("consumer", consumer)?;
            self.check_partition(topic, partition)?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition as i32, Offset::Offset(next_offset as i64))
                .map_err(kafka_err("commit"))?;
            let member = self
                .members
                .lock()
                .unwrap()
                .get(consumer)
                .and_then(|m| m.upgrade());
            if let Some(member) = member {
                return crate::blocking::blocking(move || {
                    member
                        .commit(&tpl, CommitMode::Sync)
                        .map_err(kafka_err("commit offsets"))
                })
                .await;
            }
            let group = self.group(consumer)?;
            crate::blocking::blocking(move || {
                group
                    .commit(&tpl, CommitMode::Sync)
                    .map_err(kafka_err("commit offsets"))
            })
            .await
        })
    }

    fn join_group<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<crate::log::Membership>> {
        self.explained(async move {
            validate_name("group", group)?;
            self.partition_count(topic)?;
            let (membership, member) = group::join(&self.clients, &self.config, group, topic)?;
            self.members
                .lock()
                .unwrap()
                .insert(group.to_string(), member);
            Ok(membership)
        })
    }

    fn committed<'a>(
        &'a self,
        consumer: &'a str,
        topic: &'a str,
        partition: u32,
    ) -> BoxFuture<'a, Result<Option<u64>>> {
        self.explained(async move {
            validate_name("consumer", consumer)?;
            self.check_partition(topic, partition)?;
            let group = self.group(consumer)?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(topic, partition as i32);
            let timeout = self.config.request_timeout();
            let got = crate::blocking::blocking(move || {
                group
                    .committed_offsets(tpl, timeout)
                    .map_err(kafka_err("fetch committed offsets"))
            })
            .await?;
            Ok(match got.elements().first().map(|e| e.offset()) {
                Some(Offset::Offset(o)) if o >= 0 => Some(o as u64),
                _ => None,
            })
        })
    }
}

impl Drop for KafkaLog {
    fn drop(&mut self) {
        // Deliver what is queued before the process goes away.
        let _ = self.producer.get().flush(Duration::from_secs(5));
    }
}

#[cfg(any(test, feature = "test-broker"))]
pub mod test_broker;
#[cfg(any(test, feature = "test-broker"))]
pub mod test_tls;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
