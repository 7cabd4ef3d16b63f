//! The changelog layer's error: every variant names the topic and partition (and the offset
//! where there is one) and chains the librdkafka error.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum ChangelogError {
    #[error("creating a Kafka client")]
    Client {
        #[source]
        source: KafkaError,
    },
    #[error("enqueueing a record for {topic}/{partition}")]
    Produce {
        topic: String,
        partition: i32,
        #[source]
        source: KafkaError,
    },
    #[error("delivery to {topic}/{partition} failed")]
    Delivery {
        topic: String,
        partition: i32,
        #[source]
        source: KafkaError,
    },
    #[error("delivery to {topic}/{partition} was cancelled: the producer went away")]
    DeliveryCanceled { topic: String, partition: i32 },
    #[error("reading offsets of {topic}/{partition}")]
    Offsets {
        topic: String,
        partition: i32,
        #[source]
        source: KafkaError,
    },
    #[error("consuming {topic}/{partition}")]
    Consume {
        topic: String,
        partition: i32,
        #[source]
        source: KafkaError,
    },
    #[error("corrupt changelog record at {topic}/{partition}@{offset}")]
    CorruptRecord {
        topic: String,
        partition: i32,
        offset: i64,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("clearing the store before a full restore of {topic}/{partition}")]
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
    #[error("admin request for topic {topic}")]
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    /// The crate's convention: a message never repeats its source, which `source()`
    /// returns, so a report that walks the chain (`anyhow`'s `{:#}`, tracing's
    /// `error.sources`) prints every cause once.
    #[test]
    fn the_cause_is_chained_not_repeated() {
        let kafka = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        let errors = [
            ChangelogError::Delivery {
                topic: "app-counts-changelog".into(),
                partition: 3,
                source: kafka.clone(),
            },
            ChangelogError::CorruptRecord {
                topic: "app-counts-changelog".into(),
                partition: 3,
                offset: 7,
                source: Box::new(kafka.clone()),
            },
        ];
        for error in errors {
            let cause = error.source().expect("a chained source").to_string();
            assert!(!error.to_string().contains(&cause), "{error}");
            let report = format!("{:#}", anyhow::Error::from(error));
            assert_eq!(report.matches(&cause).count(), 1, "{report}");
        }
    }
}
