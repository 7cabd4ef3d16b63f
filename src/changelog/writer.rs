//! Producing flushed state to Kafka: [`TrackedProducer`] enqueues records with rdkafka and
//! keeps their delivery futures until [`TrackedProducer::flush`] has seen every one
//! acknowledged; [`ChangelogWriter`] pins it to one changelog topic partition and remembers
//! the last acknowledged offset (the checkpoint). Owns delivery tracking; knows nothing of
//! stores or tasks, and never drops a record silently: a failed delivery fails the flush,
//! naming the topic, partition and librdkafka error.

use std::collections::VecDeque;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use super::ChangelogError;

/// librdkafka settings for a producer of changelog and output records: idempotent,
/// `acks=all`, batches of up to 1 MiB that linger 5 ms. `extra` (e.g. `kafka.*` security
/// settings) is applied last.
pub fn producer_config(bootstrap: &str, extra: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.size", "1048576")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "120000");
    for (k, v) in extra {
        config.set(k, v);
    }
    config
}

/// Where flushed changelog entries go. The worker uses [`ChangelogWriter`]; unit tests of
/// the runtime plug in a fake.
pub trait ChangelogSink {
    /// Enqueues one entry; `value == None` is a tombstone.
    fn send(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        timestamp: i64,
    ) -> impl std::future::Future<Output = Result<(), ChangelogError>> + Send;

    /// Resolves once every entry sent so far is acknowledged; returns how many were.
    fn flush(&mut self) -> impl std::future::Future<Output = Result<u64, ChangelogError>> + Send;
}

struct Pending {
    topic: String,
    partition: i32,
    delivery: DeliveryFuture,
}

/// An rdkafka producer plus the delivery futures of everything it sent and not yet flushed.
pub struct TrackedProducer {
    producer: FutureProducer,
    pending: VecDeque<Pending>,
}

/// What one delivery acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    pub partition: i32,
    pub offset: i64,
}

impl TrackedProducer {
    pub fn new(producer: FutureProducer) -> Self {
        Self {
            producer,
            pending: VecDeque::new(),
        }
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Records enqueued and not yet flushed.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Enqueues a record for `topic`/`partition`. When librdkafka's queue is full it waits
    /// for the oldest of its own deliveries instead of sleeping.
    pub async fn send(
        &mut self,
        topic: &str,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
        timestamp: i64,
    ) -> Result<Option<Acked>, ChangelogError> {
        let mut acked = None;
        loop {
            let mut record = FutureRecord::<[u8], [u8]>::to(topic)
                .key(key)
                .partition(partition)
                .timestamp(timestamp);
            if let Some(v) = value {
                record = record.payload(v);
            }
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    self.pending.push_back(Pending {
                        topic: topic.to_string(),
                        partition,
                        delivery,
                    });
                    return Ok(acked);
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    match self.pending.pop_front() {
                        Some(oldest) => acked = Some(Self::await_one(oldest).await?),
                        None => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
                Err((source, _)) => {
                    return Err(ChangelogError::Produce {
                        topic: topic.to_string(),
                        partition,
                        source,
                    })
                }
            }
        }
    }

    async fn await_one(p: Pending) -> Result<Acked, ChangelogError> {
        match p.delivery.await {
            Ok(Ok(delivery)) => Ok(Acked {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Ok(Err((source, _))) => Err(ChangelogError::Delivery {
                topic: p.topic,
                partition: p.partition,
                source,
            }),
            Err(_) => Err(ChangelogError::DeliveryCanceled {
                topic: p.topic,
                partition: p.partition,
            }),
        }
    }

    /// Waits for every pending delivery. Returns the acknowledgements in send order, or the
    /// first failure (the remaining deliveries are still awaited so none is left behind).
    pub async fn flush(&mut self) -> Result<Vec<Acked>, ChangelogError> {
        let mut acked = Vec::with_capacity(self.pending.len());
        let mut first_error = None;
        while let Some(p) = self.pending.pop_front() {
            match Self::await_one(p).await {
                Ok(a) => acked.push(a),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(acked),
        }
    }

    /// Forgets pending deliveries without waiting (a task closed dirty after it was lost).
    pub fn abandon(&mut self) {
        self.pending.clear();
    }
}

/// Produces one store's flushed entries to its changelog partition.
pub struct ChangelogWriter {
    inner: TrackedProducer,
    topic: String,
    partition: i32,
    last_acked: Option<i64>,
    acked_total: u64,
}

impl ChangelogWriter {
    pub fn new(producer: FutureProducer, topic: impl Into<String>, partition: i32) -> Self {
        Self {
            inner: TrackedProducer::new(producer),
            topic: topic.into(),
            partition,
            last_acked: None,
            acked_total: 0,
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The offset of the last record this writer saw acknowledged: what a checkpoint
    /// written after a successful flush records.
    pub fn last_acked_offset(&self) -> Option<i64> {
        self.last_acked
    }

    /// Records acknowledged over the writer's life.
    pub fn acked_total(&self) -> u64 {
        self.acked_total
    }

    fn note(&mut self, acked: Acked) {
        self.acked_total += 1;
        self.last_acked = Some(
            self.last_acked
                .map_or(acked.offset, |o| o.max(acked.offset)),
        );
    }

    /// Forgets pending deliveries (see [`TrackedProducer::abandon`]).
    pub fn abandon(&mut self) {
        self.inner.abandon();
    }
}

impl ChangelogSink for ChangelogWriter {
    async fn send(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        timestamp: i64,
    ) -> Result<(), ChangelogError> {
        let acked = self
            .inner
            .send(&self.topic, self.partition, key, value, timestamp)
            .await?;
        if let Some(a) = acked {
            self.note(a);
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<u64, ChangelogError> {
        let acked = self.inner.flush().await?;
        let n = acked.len() as u64;
        for a in acked {
            self.note(a);
        }
        Ok(n)
    }
}
