//! What wakes the driver's loop, handled: membership events (fed to the task manager, with
//! vanished peers fenced first under exactly-once), batches of changelog records for
//! restoring and standby tasks, batches of input records for running ones, and the periodic
//! standby-lag and throughput report.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::BorrowedMessage;
use rdkafka::Message;
use tracing::{debug, info, warn};

use super::error::RuntimeError;
use super::lifecycle::task_id;
use super::manager::TaskState;
use super::metrics;
use super::processor::ProcessError;
use super::restore::{RestoreReader, Restored};
use super::run::{InputErrorPolicy, Runtime};
use crate::changelog::RestoreProgress;
use crate::membership::{MembershipEvent, TaskId};

/// Input records handled per wake-up of the loop before other events get a look in.
const BATCH: usize = 1_000;
/// How often the loop logs its throughput.
const REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// How often restore progress and standby lags reach the metrics and the status board while
/// changelog records arrive.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

fn partitions(tasks: &BTreeSet<TaskId>) -> BTreeSet<i32> {
    tasks
        .iter()
        .filter(|t| t.subtopology == "0")
        .map(|t| t.partition)
        .collect()
}

impl Runtime {
    /// Restore progress and standby lags into the metrics and the status board (on every
    /// tick of the manager's deadline, and every [`PROGRESS_INTERVAL`] while changelog
    /// batches arrive), and the throughput and restore progress lines (every
    /// [`REPORT_INTERVAL`]).
    pub(super) fn report(&mut self, restore: &RestoreReader) {
        self.last_progress = Instant::now();
        let log = self.last_report.elapsed() >= REPORT_INTERVAL;
        for task in self.manager.snapshot() {
            if let (TaskState::Restoring { .. }, Some(stats)) =
                (task.state, self.restores.get(&task.task))
            {
                let secs = stats.started.elapsed().as_secs_f64();
                let progress = RestoreProgress {
                    topic: self.changelog_topic.clone(),
                    partition: task.task,
                    start: stats.from,
                    end: stats.end,
                    restored: stats.applied,
                    total: u64::try_from(stats.end - stats.from).unwrap_or(0),
                    records_per_sec: if secs > 0.0 {
                        stats.applied as f64 / secs
                    } else {
                        0.0
                    },
                    done: false,
                };
                let name = format!("0_{}", task.task);
                metrics::restore_progress(&name, &progress);
                self.config
                    .status
                    .restore_progress(&task_id(task.task), &progress);
                if log {
                    info!(task = %name, restored = progress.restored, total = progress.total,
                        rate = format!("{:.0}/s", progress.records_per_sec), "restore progress");
                }
            }
            if let TaskState::Standby { .. } = task.state {
                if let Some(end) = restore.cached_end(task.task) {
                    self.manager.handle_standby_end(task.task, end);
                }
                if let Some(TaskState::Standby { lag: Some(lag), .. }) =
                    self.manager.state(task.task)
                {
                    self.config.status.set_standby_lag(&task_id(task.task), lag);
                }
            }
        }
        let elapsed = self.last_report.elapsed();
        if !log {
            return;
        }
        if self.handled > 0 {
            info!(
                records = self.handled,
                rate = format!("{:.0}/s", self.handled as f64 / elapsed.as_secs_f64()),
                tasks = self.manager.running_count(),
                "processing"
            );
        }
        self.handled = 0;
        self.last_report = Instant::now();
    }

    pub(super) async fn on_event(&mut self, event: MembershipEvent) -> Result<(), RuntimeError> {
        let now = Instant::now();
        match event {
            MembershipEvent::Assigned { active, standby } => {
                // Before any await: readiness never sees this assignment without its tasks.
                self.config.status.set_assignment(&active, &standby);
                self.fence_vanished_peers().await;
                self.manager
                    .handle_assignment(now, partitions(&active), partitions(&standby));
            }
            MembershipEvent::Revoke { tasks } => {
                info!(tasks = ?tasks.iter().map(ToString::to_string).collect::<Vec<_>>(), "revoking tasks: commit and close");
                let revoked = partitions(&tasks);
                if revoked.iter().any(|p| self.restores.contains_key(p)) {
                    info!("membership changed mid-restore: cancelling the restore");
                }
                self.manager.handle_revoke(now, revoked);
            }
            MembershipEvent::Lost => {
                warn!(
                    tasks = self.tasks.len(),
                    "all tasks lost (fenced): closing them without a commit"
                );
                self.manager.handle_lost(now);
            }
            MembershipEvent::NotReady { statuses } => {
                warn!(?statuses, "the streams group is not ready; waiting");
            }
            MembershipEvent::Ready => info!("the streams group is ready"),
            MembershipEvent::Fatal(source) => return Err(RuntimeError::Membership { source }),
            MembershipEvent::Warning(e) => warn!(
                error = &e as &dyn std::error::Error,
                "streams group warning"
            ),
            MembershipEvent::CoordinatorChanged | MembershipEvent::Left => {}
        }
        Ok(())
    }

    /// Under exactly-once, on every assignment: fences the transactional id of every member
    /// seen before and gone from the group now, so that a dead peer's open transaction is
    /// aborted before its tasks are restored here (a restore under read_committed would
    /// otherwise end at that transaction and miss what was committed after it).
    async fn fence_vanished_peers(&mut self) {
        let Some(txn_config) = self.txn_config.as_ref() else {
            return;
        };
        let current = match self.offsets.process_ids().await {
            Ok(ids) => ids,
            Err(e) => {
                warn!(
                    error = &e as &dyn std::error::Error,
                    "cannot describe the group; vanished members are not fenced"
                );
                return;
            }
        };
        let own = &self.config.process_id;
        for gone in self.peers.iter().filter(|p| !current.contains(*p)) {
            let id = format!("{}-{gone}", self.config.application_id);
            let started = Instant::now();
            match super::eos::fence(txn_config, &id, Duration::from_secs(30)) {
                Ok(()) => {
                    info!(transactional_id = %id, elapsed_ms = started.elapsed().as_millis() as u64,
                    "fenced the transactional id of a member that left the group")
                }
                Err(e) => {
                    warn!(transactional_id = %id, error = &e as &dyn std::error::Error, "fencing a vanished member")
                }
            }
        }
        self.peers = current.into_iter().filter(|p| p != own).collect();
    }

    /// Applies `first` and the changelog records ready after it to their stores.
    pub(super) fn restore_batch(
        &mut self,
        restore: &RestoreReader,
        first: rdkafka::error::KafkaResult<BorrowedMessage<'_>>,
    ) -> Result<(), RuntimeError> {
        let mut restored = BTreeMap::new();
        restore
            .batch(first, &mut |r| self.on_restored(r, &mut restored))
            .map_err(|source| RuntimeError::Changelog {
                task: "restore".into(),
                source: Box::new(source),
            })?;
        for (task, offset) in restored {
            self.manager.handle_restored(task, offset);
        }
        if self.last_progress.elapsed() >= PROGRESS_INTERVAL {
            self.report(restore);
        }
        Ok(())
    }

    /// Processes `first` and up to [`BATCH`] input records ready after it, then produces
    /// what cache evictions wrote through.
    pub(super) async fn input_batch(
        &mut self,
        consumer: &StreamConsumer,
        first: rdkafka::error::KafkaResult<BorrowedMessage<'_>>,
    ) -> Result<(), RuntimeError> {
        self.on_input(first)?;
        for _ in 1..BATCH {
            match consumer.recv().now_or_never() {
                Some(next) => self.on_input(next)?,
                None => break,
            }
        }
        self.forward_evicted().await
    }

    /// Applies one restored changelog record (or end) to its task's store.
    fn on_restored(
        &mut self,
        r: Restored<'_>,
        restored: &mut BTreeMap<i32, i64>,
    ) -> Result<(), crate::changelog::ChangelogError> {
        match r {
            Restored::Record(record) => {
                let p = record.partition;
                let reading = matches!(
                    self.manager.state(p),
                    Some(TaskState::Restoring { .. } | TaskState::Standby { .. })
                );
                let Some(task) = self.tasks.get_mut(&p).filter(|_| reading) else {
                    return Ok(());
                };
                if task.restore_record(
                    record.offset,
                    record.key,
                    record.value,
                    self.corrupt_records,
                )? {
                    if let Some(stats) = self.restores.get_mut(&p) {
                        stats.applied += 1;
                    }
                } else {
                    metrics::records_skipped("corrupt_changelog", 1);
                }
                restored.insert(p, record.offset);
            }
            Restored::End {
                partition,
                position,
            } if position > 0 => {
                if let Some(task) = self.tasks.get_mut(&partition) {
                    task.resume_after(position - 1);
                }
                let last = restored.entry(partition).or_insert(position - 1);
                *last = (*last).max(position - 1);
            }
            Restored::End { .. } => {}
        }
        Ok(())
    }

    fn on_input(
        &mut self,
        msg: rdkafka::error::KafkaResult<BorrowedMessage<'_>>,
    ) -> Result<(), RuntimeError> {
        let msg = match msg {
            Ok(msg) => msg,
            Err(source) if broker_unreachable(&source) => {
                warn!(error = %source, "the broker is unreachable; the consumer reconnects");
                return Ok(());
            }
            Err(source) => {
                return Err(RuntimeError::Consume {
                    topic: self.config.input_topic.clone(),
                    source,
                })
            }
        };
        self.handled += 1;
        let p = msg.partition();
        if !self.manager.is_running(p) {
            debug!(partition = p, "record of a task not running");
            return Ok(());
        }
        if !self.tasks.contains_key(&p) || !self.begin_transaction()? {
            return Ok(());
        }
        let Some(task) = self.tasks.get_mut(&p) else {
            return Ok(());
        };
        let timestamp = msg.timestamp().to_millis().unwrap_or(-1);
        let before = task.metrics();
        match task.process(msg.key(), msg.payload(), msg.offset(), timestamp) {
            Ok(_) => {}
            Err(ProcessError::Input(e))
                if self.config.input_errors == InputErrorPolicy::Continue =>
            {
                warn!(task = %task.name, error = &e as &dyn std::error::Error, "skipping an input record that cannot be deserialized");
                metrics::records_skipped("deserialization", 1);
            }
            Err(source) => {
                return Err(RuntimeError::Process {
                    task: task.name.clone(),
                    source: Box::new(source),
                })
            }
        }
        metrics::aggregate_delta(before, task.metrics());
        self.manager.handle_processed(p, msg.offset());
        Ok(())
    }
}

/// A consumer error librdkafka reports while it reconnects on its own (the broker restarts,
/// or stops answering): not fatal, the consumer resumes where it was once it is back.
pub(super) fn broker_unreachable(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode as Code};
    matches!(
        error,
        KafkaError::MessageConsumption(
            Code::AllBrokersDown
                | Code::BrokerTransportFailure
                | Code::NetworkException
                | Code::RequestTimedOut
                | Code::OperationTimedOut
        )
    )
}

#[cfg(test)]
mod broker_errors {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode as Code};

    use super::broker_unreachable;

    #[test]
    fn only_reconnection_errors_are_survived() {
        for code in [Code::AllBrokersDown, Code::BrokerTransportFailure] {
            assert!(broker_unreachable(&KafkaError::MessageConsumption(code)));
            assert!(!broker_unreachable(&KafkaError::MessageConsumptionFatal(
                code
            )));
        }
        for code in [
            Code::UnknownTopicOrPartition,
            Code::TopicAuthorizationFailed,
        ] {
            assert!(!broker_unreachable(&KafkaError::MessageConsumption(code)));
        }
    }
}
