//! The record context a cached write carries: where the input record that caused it came from.
//! Owns `RecordContext` only; knows no consumer or producer, it is plain data handed down.

use std::sync::Arc;

/// Topic, partition, offset and timestamp of the input record behind a store write.
///
/// A cached entry keeps the context of its latest write; on flush it travels with the
/// entry so the changelog record gets `timestamp` as its timestamp. `topic` is an
/// `Arc<str>` so cloning a context per record costs a reference count, not a copy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordContext {
    /// Input topic.
    pub topic: Arc<str>,
    /// Input partition.
    pub partition: i32,
    /// Input offset.
    pub offset: i64,
    /// Input record timestamp in milliseconds.
    pub timestamp: i64,
}

impl RecordContext {
    /// Builds a context.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32, offset: i64, timestamp: i64) -> Self {
        Self {
            topic: topic.into(),
            partition,
            offset,
            timestamp,
        }
    }
}
