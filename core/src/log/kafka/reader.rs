//! Reading one partition: a consumer assigned to that partition only (no group), positioned
//! where the caller asks. Reads are sequential in practice (materializer, tail), so the consumer
//! keeps its position between calls and seeks only when asked for another offset.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::Message;
use rdkafka::consumer::Consumer as _;
use rdkafka::message::Headers;
use rdkafka::{Offset, TopicPartitionList};

use super::client::Consumer;
use super::kafka_err;
use crate::Result;
use crate::log::{Header, Record};

pub(super) struct PartitionReader {
    consumer: Consumer,
    topic: String,
    partition: u32,
    /// Offset the consumer will return next, if positioned.
    next: Option<u64>,
}

impl PartitionReader {
    pub fn new(consumer: Consumer, topic: &str, partition: u32) -> Self {
        PartitionReader {
            consumer,
            topic: topic.to_string(),
            partition,
            next: None,
        }
    }

    /// The offset a read continues at without seeking.
    pub fn next(&self) -> Option<u64> {
        self.next
    }

    /// Up to `max` records from `from`, waiting up to `wait` for the first one.
    pub fn read(&mut self, from: u64, max: usize, wait: Duration) -> Result<Vec<Record>> {
        if self.next != Some(from) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(
                &self.topic,
                self.partition as i32,
                Offset::Offset(from as i64),
            )
            .map_err(kafka_err("assign"))?;
            self.consumer.assign(&tpl).map_err(kafka_err("assign"))?;
            self.next = Some(from);
        }
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while out.len() < max {
            // Once something arrived, take only what is already buffered.
            let timeout = if out.is_empty() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            match self.consumer.poll(timeout) {
                None => break,
                Some(Err(e)) => {
                    // Position is unknown after an error: reposition on the next call.
                    self.next = None;
                    return Err(kafka_err("consume")(e));
                }
                Some(Ok(m)) => {
                    let offset = m.offset() as u64;
                    // After a fetch error librdkafka may reset its position on its own (to the
                    // start, by `auto.offset.reset`) and hand back records before the one asked
                    // for; passing them on would apply them twice.
                    if offset < self.next.unwrap_or(from) {
                        continue;
                    }
                    self.next = Some(offset + 1);
                    out.push(Record {
                        partition: self.partition,
                        offset,
                        timestamp: m.timestamp().to_millis().unwrap_or(0) * 1000,
                        key: Bytes::copy_from_slice(m.key().unwrap_or_default()),
                        value: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
                        headers: m
                            .headers()
                            .map(|hs| {
                                hs.iter()
                                    .map(|h| Header {
                                        name: h.key.to_string(),
                                        value: Bytes::copy_from_slice(h.value.unwrap_or_default()),
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                    });
                }
            }
        }
        Ok(out)
    }
}
