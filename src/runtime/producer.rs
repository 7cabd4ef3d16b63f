//! The worker's one producer of changelog and output records: an rdkafka
//! [`ThreadedProducer`] whose delivery callback counts acknowledgements per destination
//! partition (no future per record). Delivery reports of one partition arrive in send order
//! (idempotent producer), so "every record sent to a partition before a flush is
//! acknowledged" is a count: [`Marks`] taken at the flush, compared with the acknowledged
//! counts. Also remembers the last acknowledged offset of each changelog partition (the
//! checkpoint) and the first failed delivery.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message};
use tokio::sync::Notify;

/// Which partition of which topic a record goes to: changelog partitions are slots
/// `0..changelog_partitions`, output partitions follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Destination {
    Changelog(i32),
    Output(i32),
}

/// A failed delivery.
#[derive(Debug, Clone)]
pub(super) struct DeliveryFailure {
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) error: KafkaError,
}

/// What the delivery callback updates.
pub(super) struct Deliveries {
    changelog_partitions: usize,
    acked: Vec<AtomicU64>,
    last_changelog_offset: Vec<AtomicI64>,
    failure: Mutex<Option<DeliveryFailure>>,
    notify: Notify,
}

impl Deliveries {
    fn slot(&self, d: Destination) -> usize {
        match d {
            Destination::Changelog(p) => p as usize,
            Destination::Output(p) => self.changelog_partitions + p as usize,
        }
    }
}

pub(super) struct DeliveryContext(Arc<Deliveries>);

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, slot: usize) {
        let d = &self.0;
        match result {
            Ok(msg) => {
                if slot < d.changelog_partitions {
                    d.last_changelog_offset[slot].fetch_max(msg.offset(), Ordering::AcqRel);
                }
            }
            Err((error, msg)) => {
                if let Ok(mut failure) = d.failure.lock() {
                    failure.get_or_insert_with(|| DeliveryFailure {
                        topic: msg.topic().to_string(),
                        partition: msg.partition(),
                        error: error.clone(),
                    });
                }
            }
        }
        d.acked[slot].fetch_add(1, Ordering::AcqRel);
        d.notify.notify_one();
    }
}

/// Records sent per slot at some point: reached once as many are acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Marks(Vec<u64>);

pub(super) struct RecordProducer {
    producer: ThreadedProducer<DeliveryContext>,
    deliveries: Arc<Deliveries>,
    sent: Vec<u64>,
    changelog_topic: String,
    output_topic: String,
}

impl RecordProducer {
    pub(super) fn new(
        config: &ClientConfig,
        changelog_topic: String,
        changelog_partitions: i32,
        output_topic: String,
        output_partitions: i32,
    ) -> Result<Self, KafkaError> {
        let slots = (changelog_partitions + output_partitions).max(0) as usize;
        let deliveries = Arc::new(Deliveries {
            changelog_partitions: changelog_partitions.max(0) as usize,
            acked: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            last_changelog_offset: (0..changelog_partitions.max(0))
                .map(|_| AtomicI64::new(-1))
                .collect(),
            failure: Mutex::new(None),
            notify: Notify::new(),
        });
        let producer = config.create_with_context(DeliveryContext(deliveries.clone()))?;
        Ok(Self {
            producer,
            deliveries,
            sent: vec![0; slots],
            changelog_topic,
            output_topic,
        })
    }

    /// Replaces this producer by a new one built from `config` (its transactional id was
    /// fenced): fresh delivery counts, the same topics and partitions.
    pub(super) fn renew(&mut self, config: &ClientConfig) -> Result<(), KafkaError> {
        let changelog = self.deliveries.changelog_partitions as i32;
        let output = self.sent.len() as i32 - changelog;
        *self = Self::new(
            config,
            self.changelog_topic.clone(),
            changelog,
            self.output_topic.clone(),
            output,
        )?;
        Ok(())
    }

    pub(super) fn producer(&self) -> &ThreadedProducer<DeliveryContext> {
        &self.producer
    }

    /// Enqueues one record; waits for deliveries while librdkafka's queue is full.
    pub(super) async fn send(
        &mut self,
        to: Destination,
        key: &[u8],
        value: Option<&[u8]>,
        timestamp: i64,
    ) -> Result<(), DeliveryFailure> {
        let slot = self.deliveries.slot(to);
        let (topic, partition) = match to {
            Destination::Changelog(p) => (self.changelog_topic.as_str(), p),
            Destination::Output(p) => (self.output_topic.as_str(), p),
        };
        loop {
            let mut record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, slot)
                .key(key)
                .partition(partition)
                .timestamp(timestamp);
            if let Some(v) = value {
                record = record.payload(v);
            }
            match self.producer.send(record) {
                Ok(()) => {
                    self.sent[slot] += 1;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    let _ = tokio::time::timeout(Duration::from_millis(10), self.notified()).await;
                }
                Err((error, _)) => {
                    return Err(DeliveryFailure {
                        topic: topic.to_string(),
                        partition,
                        error,
                    })
                }
            }
        }
    }

    /// What has been sent so far.
    pub(super) fn marks(&self) -> Marks {
        Marks(self.sent.clone())
    }

    /// Whether every record counted in `marks` is acknowledged (delivered or failed).
    pub(super) fn reached(&self, marks: &Marks) -> bool {
        marks
            .0
            .iter()
            .zip(&self.deliveries.acked)
            .all(|(sent, acked)| acked.load(Ordering::Acquire) >= *sent)
    }

    /// Resolves at the next delivery report.
    pub(super) async fn notified(&self) {
        self.deliveries.notify.notified().await
    }

    /// The first failed delivery, if any.
    pub(super) fn failure(&self) -> Option<DeliveryFailure> {
        self.deliveries.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Forgets a failure: the records belonged to an aborted transaction or to lost tasks.
    /// The counts stay: records still in flight are acknowledged (or fail) later.
    pub(super) fn clear_failure(&self) {
        if let Ok(mut f) = self.deliveries.failure.lock() {
            *f = None;
        }
    }

    /// The last acknowledged offset of a changelog partition.
    pub(super) fn last_changelog_offset(&self, partition: i32) -> Option<i64> {
        self.deliveries
            .last_changelog_offset
            .get(partition as usize)
            .map(|o| o.load(Ordering::Acquire))
            .filter(|&o| o >= 0)
    }
}
