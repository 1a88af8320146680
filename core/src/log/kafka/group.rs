//! Group membership on Kafka: a consumer that subscribes to the topic only to take part in
//! the group's partition assignment (it fetches nothing: assigned partitions are paused). The
//! eager rebalance protocol revokes a member's partitions, and waits for it, before assigning
//! them to anyone, which is what makes ownership exclusive.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::{mpsc, watch};

use super::broker_errors::Context;
use super::client::Clients;
use super::{KafkaConfig, kafka_err};
use crate::Result;
use crate::log::{Membership, REVOKE_TIMEOUT, Revocation};

pub(super) struct GroupContext {
    assigned: watch::Sender<BTreeSet<u32>>,
    revoked: mpsc::UnboundedSender<Revocation>,
    /// The log's context: the group's connection failures are the log's too.
    log: Context,
}

fn partitions(tpl: &TopicPartitionList) -> BTreeSet<u32> {
    tpl.elements()
        .iter()
        .map(|e| e.partition() as u32)
        .collect()
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.log.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let gone = partitions(tpl);
        if gone.is_empty() {
            return;
        }
        // No new work on them from now on; then wait until the member's current work is done.
        self.assigned
            .send_modify(|a| a.retain(|p| !gone.contains(p)));
        let (revocation, ack) = Revocation::new(gone);
        if self.revoked.send(revocation).is_ok() && ack.recv_timeout(REVOKE_TIMEOUT).is_err() {
            tracing::warn!(
                "a revocation was not acknowledged within {REVOKE_TIMEOUT:?}; the group moves on"
            );
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // Membership only: fetch nothing.
            if let Err(e) = consumer.pause(tpl) {
                tracing::warn!("pausing group partitions: {e}");
            }
            self.assigned.send_replace(partitions(tpl));
        }
    }
}

/// Stops the polling thread (which closes the consumer, leaving the group) when dropped.
struct Guard {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The group's member consumer, shared with the log so offsets are committed by the member
/// (with its generation): a broker refuses commits to a group with active members from a
/// consumer that is not one of them. Tansu accepts them anyway, so only a real Kafka shows it.
pub(super) type Member = Arc<BaseConsumer<GroupContext>>;

pub(super) fn join(
    clients: &Clients,
    config: &KafkaConfig,
    group: &str,
    topic: &str,
) -> Result<(Membership, std::sync::Weak<BaseConsumer<GroupContext>>)> {
    let (assigned_tx, assigned) = watch::channel(BTreeSet::new());
    let (revoked_tx, revoked) = mpsc::unbounded_channel();
    let context = GroupContext {
        assigned: assigned_tx,
        revoked: revoked_tx,
        log: Context {
            errors: clients.errors().clone(),
        },
    };
    let settings = clients.config(|c| {
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", config.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (config.session_timeout_ms / 4).max(100).to_string(),
            )
            // Eager assignors: every partition is revoked before any is reassigned.
            .set("partition.assignment.strategy", "range")
            // A JoinGroup legitimately waits out a whole rebalance; a short request
            // timeout would cut it off and rejoin forever.
            .set("socket.timeout.ms", "60000");
        if let Some(id) = &config.instance_id {
            c.set("group.instance.id", format!("{id}-{group}"));
        }
    });
    let consumer: BaseConsumer<GroupContext> =
        clients.create_with("group consumer", &settings, context)?;
    let consumer: Member = Arc::new(consumer);
    let member = Arc::downgrade(&consumer);
    consumer
        .subscribe(&[topic])
        .map_err(kafka_err("join group"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name(format!("tidemark-group-{group}"))
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    // Runs the rebalance callbacks; paused partitions return no records.
                    let _ = consumer.poll(Duration::from_millis(100));
                }
                // Dropping the consumer closes it, which leaves the group at once.
            })
            .map_err(|e| crate::Error::Unavailable(format!("start group thread: {e}")))?
    };
    let membership = Membership {
        assigned,
        revoked,
        _guard: Box::new(Guard {
            stop,
            thread: Some(thread),
        }),
    };
    Ok((membership, member))
}
