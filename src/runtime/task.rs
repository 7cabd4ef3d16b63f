//! One task's data: its processor (store + aggregation + stream time) and the last changelog
//! offset its store reflects. Owns the per-task steps (apply a restored changelog record,
//! process an input record, hand out what the store flushed or evicted); when each happens,
//! and the task's state and offsets, are the [`TaskManager`](super::manager::TaskManager)'s.

use super::processor::{OutputRecord, ProcessError, TaskProcessor};
use crate::changelog::{apply_record, ChangelogError, CorruptRecordPolicy};
use crate::membership::TaskId;
use crate::session::Outcome;
use crate::store::{CachingSessionStore, RecordContext, TaskBytesStore};

pub struct Task {
    pub id: TaskId,
    /// Its name in logs and metrics (`0_3`).
    pub name: String,
    pub input_topic: std::sync::Arc<str>,
    processor: Box<dyn TaskProcessor>,
    changelog_topic: String,
    /// Offset of the last changelog record known to be in the store (restored or acked).
    changelog_offset: Option<i64>,
}

impl Task {
    pub fn new(
        id: TaskId,
        input_topic: std::sync::Arc<str>,
        processor: Box<dyn TaskProcessor>,
        changelog_topic: String,
        changelog_offset: Option<i64>,
    ) -> Self {
        Self {
            name: id.to_string(),
            id,
            input_topic,
            processor,
            changelog_topic,
            changelog_offset,
        }
    }

    pub fn partition(&self) -> i32 {
        self.id.partition
    }

    pub fn changelog_topic(&self) -> &str {
        &self.changelog_topic
    }

    /// The last changelog offset reflected in the store.
    pub fn changelog_offset(&self) -> Option<i64> {
        self.changelog_offset
    }

    /// The store holds the changelog up to `offset` (loaded from a snapshot, restored, or
    /// written and acknowledged); offsets only move forward.
    pub fn resume_after(&mut self, offset: i64) {
        self.changelog_offset = Some(self.changelog_offset.map_or(offset, |o| o.max(offset)));
    }

    /// Makes what the store holds durable (a no-op in memory), before a checkpoint names it.
    pub fn flush_durable(&mut self) -> Result<(), crate::store::StoreError> {
        self.processor.store().flush_durable()
    }

    /// Empties the store for a full restore.
    pub fn clear(&mut self, position: Option<i64>) -> Result<(), ChangelogError> {
        let partition = self.partition();
        self.processor
            .store()
            .clear()
            .map_err(|e| ChangelogError::ClearStore {
                topic: self.changelog_topic.clone(),
                partition,
                source: Box::new(e),
            })?;
        self.changelog_offset = position;
        Ok(())
    }

    /// Applies one changelog record below the cache; returns whether it was applied (a
    /// corrupt one may be skipped by `policy`).
    pub fn restore_record(
        &mut self,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        policy: CorruptRecordPolicy,
    ) -> Result<bool, ChangelogError> {
        let at = (self.changelog_topic.as_str(), self.id.partition, offset);
        let applied = apply_record(self.processor.store(), at, key, value, policy)?;
        self.changelog_offset = Some(offset);
        Ok(applied)
    }

    /// The task's session store (the snapshot of a clean close is taken of its inner store).
    pub fn store(&mut self) -> &mut CachingSessionStore<TaskBytesStore> {
        self.processor.store()
    }

    /// Processes one input record.
    pub fn process(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        offset: i64,
        timestamp: i64,
    ) -> Result<Outcome, ProcessError> {
        let context = RecordContext {
            topic: self.input_topic.clone(),
            partition: self.id.partition,
            offset,
            timestamp,
        };
        self.processor.process(key, value, context)
    }

    /// Records cache eviction wrote through since the last call.
    pub fn take_evicted(&mut self) -> Result<Vec<OutputRecord>, ProcessError> {
        self.processor.take_evicted()
    }

    /// Flushes the store's cache: the records for the changelog and the output.
    pub fn flush(&mut self) -> Result<Vec<OutputRecord>, ProcessError> {
        self.processor.flush()
    }

    pub fn metrics(&self) -> crate::session::AggregateMetrics {
        self.processor.metrics()
    }

    pub fn cache_metrics(&mut self) -> crate::store::CacheMetrics {
        self.store().cache().metrics()
    }

    /// Memory held by the task's byte store (see `ByteKeyValueStore::memory_bytes`).
    pub fn store_memory_bytes(&mut self) -> usize {
        use crate::store::ByteKeyValueStore;
        self.store().inner().memory_bytes()
    }
}
