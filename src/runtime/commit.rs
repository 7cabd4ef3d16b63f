//! The driver's side of the commit cycle: a flush produces every task's flushed records to
//! its changelog partition and the output topic through the one producer; under
//! at-least-once the input offsets noted at the flush are committed (with the member id and
//! epoch) once the delivery reports reached what was sent by then, while the loop goes on
//! processing; under exactly-once the records and the offsets are committed in one
//! transaction. A commit the group refuses, or a transaction that must be aborted, is handed
//! back to the task manager, which loses the tasks and rejoins.

use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::eos::Transactions;
use super::error::RuntimeError;
use super::manager::CommitFailure;
use super::metrics;
use super::offsets::{OffsetCommitter, OffsetsError};
use super::partitioner::windowed_partition;
use super::processor::OutputRecord;
use super::producer::{DeliveryFailure, Destination};
use super::run::Runtime;
use crate::changelog::ChangelogError;

/// Broker error codes of an offset commit that mean "these tasks are no longer yours".
const UNKNOWN_MEMBER_ID: i16 = 25;
const ILLEGAL_GENERATION: i16 = 22;
const FENCED_MEMBER_EPOCH: i16 = 110;
const STALE_MEMBER_EPOCH: i16 = 113;

impl Runtime {
    /// Flushes `tasks`' caches and produces what they flushed; under at-least-once the
    /// flush waits (outside the loop) for its acknowledgements.
    pub(super) async fn flush(&mut self, id: u64, tasks: &[i32]) -> Result<(), RuntimeError> {
        self.cycle_started.get_or_insert_with(Instant::now);
        let mut produced = 0u64;
        for p in tasks {
            let Some(task) = self.tasks.get_mut(p) else {
                continue;
            };
            let records = task.flush().map_err(|source| RuntimeError::Process {
                task: task.name.clone(),
                source: Box::new(source),
            })?;
            if records.is_empty() {
                continue;
            }
            if !self.begin_transaction()? {
                return Ok(());
            }
            produced += records.len() as u64;
            self.forward(*p, &records).await?;
        }
        metrics::produced("changelog", produced);
        metrics::produced("output", produced);
        if self.txn.is_none() {
            self.awaiting.push_back((id, self.producer.marks()));
        }
        Ok(())
    }

    /// Produces what cache evictions wrote through, to the changelog and the output.
    pub(super) async fn forward_evicted(&mut self) -> Result<(), RuntimeError> {
        let running: Vec<i32> = self.processing.iter().copied().collect();
        for p in running {
            let Some(task) = self.tasks.get_mut(&p) else {
                continue;
            };
            let records = task
                .take_evicted()
                .map_err(|source| RuntimeError::Process {
                    task: task.name.clone(),
                    source: Box::new(source),
                })?;
            if !records.is_empty() {
                self.forward(p, &records).await?;
            }
        }
        Ok(())
    }

    /// Sends `records` of task `p` to its changelog partition and to the output topic,
    /// partitioned as Kafka Streams partitions windowed keys.
    async fn forward(&mut self, p: i32, records: &[OutputRecord]) -> Result<(), RuntimeError> {
        for r in records {
            self.producer
                .send(
                    Destination::Changelog(p),
                    &r.key,
                    r.value.as_deref(),
                    r.changelog_timestamp,
                )
                .await
                .map_err(|f| self.delivery_error(f))?;
            let partition = windowed_partition(r.inner_key(), self.output_partitions);
            self.producer
                .send(
                    Destination::Output(partition),
                    &r.key,
                    r.value.as_deref(),
                    r.output_timestamp,
                )
                .await
                .map_err(|f| self.delivery_error(f))?;
        }
        Ok(())
    }

    fn delivery_error(&self, f: DeliveryFailure) -> RuntimeError {
        let source = Box::new(ChangelogError::Produce {
            topic: f.topic.clone(),
            partition: f.partition,
            source: f.error,
        });
        if f.topic == self.changelog_topic {
            RuntimeError::Changelog {
                task: format!("0_{}", f.partition),
                source,
            }
        } else {
            RuntimeError::Output {
                topic: f.topic,
                source,
            }
        }
    }

    /// Under at-least-once a failed delivery stops the worker (its record would be lost);
    /// under exactly-once the transaction's commit reports it.
    pub(super) fn check_deliveries(&self) -> Result<(), RuntimeError> {
        match self.producer.failure() {
            Some(f) if self.txn.is_none() => Err(self.delivery_error(f)),
            _ => Ok(()),
        }
    }

    /// Hands every flush whose records are all acknowledged to the manager; returns whether
    /// it did (the manager has new actions).
    pub(super) fn acks_reached(&mut self) -> bool {
        let mut any = false;
        while let Some((id, marks)) = self.awaiting.front() {
            if !self.producer.reached(marks) {
                break;
            }
            let id = *id;
            self.awaiting.pop_front();
            for p in &self.processing {
                if let Some(offset) = self.producer.last_changelog_offset(*p) {
                    self.manager.handle_changelog_acked(*p, offset);
                }
            }
            self.manager.handle_flush_acked(Instant::now(), id);
            any = true;
        }
        any
    }

    pub(super) async fn commit_offsets(
        &mut self,
        offsets: &[(i32, i64)],
    ) -> Result<(), RuntimeError> {
        if offsets.is_empty() {
            self.committed(0);
            return Ok(());
        }
        let request: Vec<(String, i32, i64)> = offsets
            .iter()
            .map(|(p, o)| (self.config.input_topic.clone(), *p, *o))
            .collect();
        let (member_id, epoch) = self.driver.member();
        match self.offsets.commit(&member_id, epoch, &request).await {
            Ok(()) => {
                self.committed(offsets.len());
                Ok(())
            }
            Err(
                e @ OffsetsError::CommitRefused {
                    code:
                        UNKNOWN_MEMBER_ID | ILLEGAL_GENERATION | FENCED_MEMBER_EPOCH
                        | STALE_MEMBER_EPOCH,
                    ..
                },
            ) => {
                self.commit_refused(&e);
                Ok(())
            }
            Err(source) => Err(RuntimeError::Offsets {
                source: Box::new(source),
            }),
        }
    }

    pub(super) fn commit_transaction(
        &mut self,
        offsets: &[(i32, i64)],
    ) -> Result<(), RuntimeError> {
        let request: Vec<(String, i32, i64)> = offsets
            .iter()
            .map(|(p, o)| (self.config.input_topic.clone(), *p, *o))
            .collect();
        let (member_id, epoch) = self.driver.member();
        let Some(txn) = self.txn.as_mut() else {
            return Ok(());
        };
        match txn.commit(self.producer.producer(), &request, &member_id, epoch) {
            Ok(()) => {
                self.committed(offsets.len());
                Ok(())
            }
            Err(e) => self.transaction_failed(e),
        }
    }

    /// Begins the transaction (exactly-once) unless one is open. `false` when it failed and
    /// the tasks are being closed dirty: nothing may be produced for them.
    pub(super) fn begin_transaction(&mut self) -> Result<bool, RuntimeError> {
        let Some(txn) = self.txn.as_mut() else {
            return Ok(true);
        };
        match txn.begin(self.producer.producer()) {
            Ok(()) => Ok(true),
            Err(e) => self.transaction_failed(e).map(|()| false),
        }
    }

    /// A failed transaction. An abortable one is aborted; a fatal one means this worker's
    /// transactional id was fenced (by the member that took its tasks over while this one was
    /// paused or cut off), so the producer is replaced, as Kafka Streams does. Either way the
    /// tasks are closed dirty and the member rejoins. Any other error stops the worker.
    fn transaction_failed(&mut self, e: RuntimeError) -> Result<(), RuntimeError> {
        match e {
            RuntimeError::Transaction {
                abortable: true,
                message,
                ..
            } => {
                warn!(%message, "transaction failed: aborting it, closing the tasks dirty and rejoining");
            }
            RuntimeError::Transaction {
                fatal: true,
                message,
                ..
            } => {
                warn!(%message, "the transactional producer was fenced: replacing it, closing the tasks dirty and rejoining");
                self.renew_producer()?;
            }
            e => return Err(e),
        }
        self.awaiting.clear();
        self.cycle_started = None;
        if self.manager.has_cycle() {
            self.manager
                .handle_commit_result(Instant::now(), Err(CommitFailure::Aborted));
        } else {
            self.manager.handle_transaction_failed(Instant::now());
        }
        Ok(())
    }

    fn renew_producer(&mut self) -> Result<(), RuntimeError> {
        let Some(config) = self.txn_config.as_ref() else {
            return Ok(());
        };
        self.producer
            .renew(config)
            .map_err(|source| RuntimeError::Client {
                what: "producer",
                source,
            })?;
        self.txn = Some(Transactions::init(
            self.producer.producer(),
            &self.config.application_id,
            Duration::from_secs(60),
        )?);
        Ok(())
    }

    /// A cycle ended; its latency is recorded when it committed offsets.
    fn committed(&mut self, offsets: usize) {
        if let Some(started) = self.cycle_started.take().filter(|_| offsets > 0) {
            let elapsed = started.elapsed();
            metrics::commit_latency(elapsed.as_secs_f64());
            debug!(
                offsets,
                elapsed_ms = elapsed.as_millis() as u64,
                "committed"
            );
        }
        let mut cache = crate::store::CacheMetrics::default();
        let mut store_memory = 0;
        for t in self.tasks.values_mut() {
            let m = t.cache_metrics();
            cache.hits += m.hits;
            cache.misses += m.misses;
            cache.evictions += m.evictions;
            cache.commit_flushes += m.commit_flushes;
            cache.eviction_flushes += m.eviction_flushes;
            store_memory += t.store_memory_bytes();
        }
        metrics::cache(cache);
        metrics::store_memory(store_memory);
        self.manager.handle_commit_result(Instant::now(), Ok(()));
    }
}
