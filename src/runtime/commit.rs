//! The commit cycle: flush every task's cache, produce to the changelog and the output, wait
//! for every acknowledgement, then commit the input offsets with the member id and epoch (or
//! commit the transaction holding all of it); and the clean shutdown built on it. A commit
//! the group refuses because the tasks moved loses the tasks instead of failing the worker.

use std::time::Instant;

use rdkafka::consumer::StreamConsumer;
use tracing::{debug, info, warn};

use super::error::RuntimeError;
use super::metrics;
use super::offsets::{OffsetCommitter, OffsetsError};
use super::partitioner::windowed_partition;
use super::processor::OutputRecord;
use super::run::Runtime;
use super::task::Task;
use crate::changelog::TrackedProducer;

/// Broker error codes of an offset commit that mean "these tasks are no longer yours".
const UNKNOWN_MEMBER_ID: i16 = 25;
const ILLEGAL_GENERATION: i16 = 22;
const FENCED_MEMBER_EPOCH: i16 = 110;
const STALE_MEMBER_EPOCH: i16 = 113;

impl Runtime {
    /// Commits; a commit the group refuses because the tasks moved loses them instead.
    pub(super) async fn commit_or_lose(
        &mut self,
        consumer: &StreamConsumer,
        reason: &str,
    ) -> Result<(), RuntimeError> {
        match self.commit(reason).await {
            Err(RuntimeError::Offsets { source })
                if matches!(
                    *source,
                    OffsetsError::CommitRefused {
                        code: UNKNOWN_MEMBER_ID
                            | ILLEGAL_GENERATION
                            | FENCED_MEMBER_EPOCH
                            | STALE_MEMBER_EPOCH,
                        ..
                    }
                ) =>
            {
                warn!(error = %source, "the group refused the offset commit: tasks migrated, closing them dirty and rejoining");
                self.lose_all(consumer);
                self.driver.rejoin();
                Ok(())
            }
            Err(RuntimeError::Transaction {
                abortable: true,
                message,
                ..
            }) => {
                warn!(%message, "transaction failed: aborting it, closing the tasks dirty and rejoining");
                self.lose_all(consumer);
                self.driver.rejoin();
                Ok(())
            }
            other => other,
        }
    }

    /// The commit cycle of every task.
    async fn commit(&mut self, reason: &str) -> Result<(), RuntimeError> {
        if self.tasks.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut produced = 0u64;
        for task in self.tasks.values_mut() {
            let records = task.flush().map_err(|source| RuntimeError::Process {
                task: task.name.clone(),
                source: Box::new(source),
            })?;
            if records.is_empty() {
                continue;
            }
            if let Some(txn) = self.txn.as_mut() {
                txn.begin()?;
            }
            produced += records.len() as u64;
            self.output.forward(task, &records).await?;
        }
        for task in self.tasks.values_mut() {
            task.flush_changelog()
                .await
                .map_err(|source| RuntimeError::Changelog {
                    task: task.name.clone(),
                    source: Box::new(source),
                })?;
        }
        self.output.flush().await?;
        let offsets: Vec<(String, i32, i64)> = self
            .tasks
            .values()
            .filter_map(|t| {
                t.offset_to_commit()
                    .map(|o| (self.config.input_topic.clone(), t.partition(), o))
            })
            .collect();
        let (member_id, epoch) = self.driver.member();
        match self.txn.as_mut() {
            Some(txn) => txn.commit(&offsets, &member_id, epoch)?,
            None if !offsets.is_empty() => self
                .offsets
                .commit(&member_id, epoch, &offsets)
                .await
                .map_err(|source| RuntimeError::Offsets {
                source: Box::new(source),
            })?,
            None => {}
        }
        for (_, p, o) in &offsets {
            if let Some(t) = self.tasks.get_mut(p) {
                t.committed(*o);
            }
        }
        let elapsed = started.elapsed();
        metrics::commit_latency(elapsed.as_secs_f64());
        metrics::produced("changelog", produced);
        metrics::produced("output", produced);
        let mut cache = crate::store::CacheMetrics::default();
        for t in self.tasks.values_mut() {
            let m = t.cache_metrics();
            cache.hits += m.hits;
            cache.misses += m.misses;
            cache.evictions += m.evictions;
        }
        metrics::cache(cache);
        debug!(
            reason,
            produced,
            offsets = offsets.len(),
            elapsed_ms = elapsed.as_millis() as u64,
            "committed"
        );
        Ok(())
    }

    pub(super) async fn shutdown(mut self, consumer: &StreamConsumer) -> Result<(), RuntimeError> {
        let started = Instant::now();
        info!(
            tasks = self.tasks.len(),
            "shutting down: committing and closing every task"
        );
        self.commit_or_lose(consumer, "shutdown").await?;
        let all: Vec<i32> = self.tasks.keys().copied().collect();
        self.close(consumer, &all, true);
        let left = self.driver.leave(self.config.leave_timeout).await;
        info!(
            ?left,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "left the streams group; shutdown complete"
        );
        Ok(())
    }
}

/// The output topic: flushed records go there, partitioned as Kafka Streams partitions
/// windowed keys, after they went to their task's changelog.
pub(super) struct Output {
    pub(super) producer: TrackedProducer,
    pub(super) topic: String,
    pub(super) partitions: i32,
}

impl Output {
    /// Sends `records` to `task`'s changelog and to the output topic (acknowledged later, by
    /// the task's and the output's flush).
    pub(super) async fn forward(
        &mut self,
        task: &mut Task,
        records: &[OutputRecord],
    ) -> Result<(), RuntimeError> {
        task.send_changelog(records)
            .await
            .map_err(|source| RuntimeError::Changelog {
                task: task.name.clone(),
                source: Box::new(source),
            })?;
        for r in records {
            let partition = windowed_partition(r.inner_key(), self.partitions);
            self.producer
                .send(
                    &self.topic,
                    partition,
                    &r.key,
                    r.value.as_deref(),
                    r.output_timestamp,
                )
                .await
                .map_err(|source| self.error(source))?;
        }
        Ok(())
    }

    /// Waits until every output record sent so far is acknowledged.
    pub(super) async fn flush(&mut self) -> Result<(), RuntimeError> {
        self.producer
            .flush()
            .await
            .map(|_| ())
            .map_err(|source| self.error(source))
    }

    fn error(&self, source: crate::changelog::ChangelogError) -> RuntimeError {
        RuntimeError::Output {
            topic: self.topic.clone(),
            source: Box::new(source),
        }
    }
}
