//! The changelog layer's error: every variant names the topic and partition (and the offset
//! where there is one) and chains the librdkafka error.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum ChangelogError {
    #[error("creating a Kafka client: {source}")]
    Client {
        #[source]
        source: KafkaError,
    },
    #[error("enqueueing a record for {topic}/{partition}: {source}")]
    Produce {
        topic: String,
        partition: i32,
        #[source]
        source: KafkaError,
    },
    #[error("delivery to {topic}/{partition} failed: {source}")]
    Delivery {
        topic: String,
        partition: i32,
        #[source]
        source: KafkaError,
    },
    #[error("delivery to {topic}/{partition} was cancelled: the producer went away")]
    DeliveryCanceled { topic: String, partition: i32 },
    #[error("reading offsets of {topic}/{partition}: {source}")]
    Offsets {
        topic: String,
        partition: i32,
        #[source]
        source: KafkaError,
    },
    #[error("consuming {topic}/{partition}: {source}")]
    Consume {
        topic: String,
        partition: i32,
        #[source]
        source: KafkaError,
    },
    #[error("corrupt changelog record at {topic}/{partition}@{offset}: {source}")]
    CorruptRecord {
        topic: String,
        partition: i32,
        offset: i64,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("clearing the store before a full restore of {topic}/{partition}: {source}")]
    ClearStore {
        topic: String,
        partition: i32,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("restore of {topic}/{partition} stalled at offset {position}, end {end}")]
    Stalled {
        topic: String,
        partition: i32,
        position: i64,
        end: i64,
    },
    #[error("restore of {topic}/{partition} cancelled after {restored} records")]
    Cancelled {
        topic: String,
        partition: i32,
        restored: u64,
        /// The last offset applied before the cancel: the store holds the changelog up to
        /// it, a consistent prefix a later restore can continue from.
        last_offset: Option<i64>,
    },
    #[error("admin request for topic {topic}: {source}")]
    Admin {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("creating topic {topic}: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
}
