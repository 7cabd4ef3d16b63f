//! One active task: the input partition it owns, its processor (store + aggregation + stream
//! time), its changelog writer and the offsets it has processed and restored. Owns the
//! per-task steps (restore before the first record, process a record, hand out what the
//! store flushed); the run loop decides when each happens and does the produce/commit I/O.

use std::time::Instant;

use rdkafka::producer::FutureProducer;
use tracing::info;

use super::processor::{OutputRecord, ProcessError, TaskProcessor};
use crate::changelog::{
    ChangelogError, ChangelogSink, ChangelogWriter, RestoreOutcome, RestoreProgress, Restorer,
};
use crate::membership::TaskId;
use crate::session::Outcome;
use crate::store::{CachingSessionStore, InMemoryBytesStore, RecordContext};

/// A task's place in its life: a task processes no record before its restore completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Restoring,
    Running,
}

pub struct Task {
    pub id: TaskId,
    /// Its name in logs and metrics (`0_3`).
    pub name: String,
    pub input_topic: std::sync::Arc<str>,
    processor: Box<dyn TaskProcessor>,
    changelog: ChangelogWriter,
    /// Offset of the last changelog record known to be in the store (restored or acked).
    changelog_offset: Option<i64>,
    /// The next input offset to commit (last processed + 1).
    next_offset: Option<i64>,
    /// The offset last committed for this task.
    committed_offset: Option<i64>,
    state: TaskState,
}

impl Task {
    pub fn new(
        id: TaskId,
        input_topic: std::sync::Arc<str>,
        processor: Box<dyn TaskProcessor>,
        producer: FutureProducer,
        changelog_topic: String,
        changelog_offset: Option<i64>,
    ) -> Self {
        Self {
            name: id.to_string(),
            changelog: ChangelogWriter::new(producer, changelog_topic, id.partition),
            id,
            input_topic,
            processor,
            changelog_offset,
            next_offset: None,
            committed_offset: None,
            state: TaskState::Restoring,
        }
    }

    pub fn partition(&self) -> i32 {
        self.id.partition
    }

    pub fn state(&self) -> TaskState {
        self.state
    }

    pub fn changelog_topic(&self) -> &str {
        self.changelog.topic()
    }

    /// The last changelog offset reflected in the store: the checkpoint of a clean close.
    pub fn changelog_offset(&self) -> Option<i64> {
        self.changelog_offset
    }

    /// Makes the restore start after `offset`: the store already holds the changelog up to
    /// it (loaded from a snapshot).
    pub fn resume_after(&mut self, offset: i64) {
        self.changelog_offset = Some(offset);
    }

    /// The task's session store (the snapshot of a clean close is taken of its inner store).
    pub fn store(&mut self) -> &mut CachingSessionStore<InMemoryBytesStore> {
        self.processor.store()
    }

    /// Replays the task's changelog partition into its store, starting after
    /// `changelog_offset` (a store kept from an earlier assignment or loaded from a snapshot)
    /// or at the log start.
    /// Blocking: run it on a blocking thread.
    pub fn restore(
        &mut self,
        restorer: &Restorer,
        progress: &mut dyn FnMut(&RestoreProgress),
    ) -> Result<RestoreOutcome, ChangelogError> {
        let started = Instant::now();
        info!(task = %self.name, after = ?self.changelog_offset, "task restoring");
        let outcome = match restorer.restore(
            self.changelog.topic(),
            self.id.partition,
            self.changelog_offset,
            self.processor.store(),
            progress,
        ) {
            Ok(outcome) => outcome,
            Err(ChangelogError::Cancelled {
                topic,
                partition,
                restored,
                last_offset,
            }) => {
                // The store holds the changelog up to `last_offset`: a later restore of
                // this task continues from there.
                self.changelog_offset = last_offset;
                return Err(ChangelogError::Cancelled {
                    topic,
                    partition,
                    restored,
                    last_offset,
                });
            }
            Err(e) => return Err(e),
        };
        self.changelog_offset = outcome.last_offset;
        self.state = TaskState::Running;
        info!(
            task = %self.name,
            restored = outcome.applied,
            from = outcome.start_offset,
            to = outcome.end_offset,
            full = outcome.full_restore,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "task restored"
        );
        Ok(outcome)
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
        let outcome = self.processor.process(key, value, context);
        // A skipped undeserializable record is still consumed.
        self.next_offset = Some(offset + 1);
        outcome
    }

    /// Marks an input record as consumed without processing it (a skipped bad record).
    pub fn skip(&mut self, offset: i64) {
        self.next_offset = Some(offset + 1);
    }

    /// Records cache eviction wrote through since the last call.
    pub fn take_evicted(&mut self) -> Result<Vec<OutputRecord>, ProcessError> {
        self.processor.take_evicted()
    }

    /// Flushes the store's cache: the records for the changelog and the output.
    pub fn flush(&mut self) -> Result<Vec<OutputRecord>, ProcessError> {
        self.processor.flush()
    }

    /// Enqueues flushed records to the task's changelog partition (acknowledged by
    /// [`flush_changelog`](Self::flush_changelog)).
    pub async fn send_changelog(&mut self, records: &[OutputRecord]) -> Result<(), ChangelogError> {
        for r in records {
            self.changelog
                .send(&r.key, r.value.as_deref(), r.changelog_timestamp)
                .await?;
        }
        Ok(())
    }

    /// Waits until every changelog record sent so far is acknowledged.
    pub async fn flush_changelog(&mut self) -> Result<u64, ChangelogError> {
        let n = self.changelog.flush().await?;
        if let Some(acked) = self.changelog.last_acked_offset() {
            self.changelog_offset = Some(self.changelog_offset.map_or(acked, |o| o.max(acked)));
        }
        Ok(n)
    }

    /// Forgets changelog deliveries in flight (the task was lost).
    pub fn abandon(&mut self) {
        self.changelog.abandon();
    }

    /// The offset to commit, if the task processed anything since its last commit. Never
    /// one at or below the committed offset: offsets only move forward.
    pub fn offset_to_commit(&self) -> Option<i64> {
        self.next_offset
            .filter(|&n| self.committed_offset.is_none_or(|c| n > c))
    }

    /// Records a successful commit of `offset`.
    pub fn committed(&mut self, offset: i64) {
        self.committed_offset = Some(self.committed_offset.map_or(offset, |c| c.max(offset)));
    }

    /// Makes the group's committed offset the task's input position, on every (re)assignment:
    /// a task taken back from the dormant set forgets the position it had when it was revoked
    /// (another member may have committed beyond it since).
    pub fn start_at(&mut self, committed: Option<i64>) {
        self.committed_offset = committed;
        self.next_offset = committed;
    }

    /// The offset last committed for this task.
    pub fn committed_offset(&self) -> Option<i64> {
        self.committed_offset
    }

    pub fn metrics(&self) -> crate::session::AggregateMetrics {
        self.processor.metrics()
    }

    pub fn cache_metrics(&mut self) -> crate::store::CacheMetrics {
        self.store().cache().metrics()
    }
}
