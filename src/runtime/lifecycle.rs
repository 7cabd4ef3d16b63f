//! The driver's side of task lifecycles: the [`TaskManager`](super::manager::TaskManager)'s
//! actions carried out. A created task takes its store from the dormant ones or loads the
//! snapshot of an earlier clean close from its task directory; a restore assigns its
//! changelog partition to the restore consumer; a restored task gets its input partition at
//! the committed offset; a clean close writes the snapshot and checkpoint and keeps the store
//! dormant, a dirty one deletes the checkpoint and drops it.

use std::collections::BTreeSet;
use std::time::{Instant, SystemTime};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::error::RuntimeError;
use super::manager::{Action, CommitFailure, TaskState};
use super::metrics;
use super::offsets::OffsetCommitter;
use super::restore::RestoreReader;
use super::run::{RestoreStats, Runtime};
use super::state_cleaner;
use super::status::TaskPhase;
use super::task::Task;
use super::task_dir::TaskDir;
use super::task_store::open_task_store;
use crate::membership::TaskId;
use crate::store::{PersistentBytesStore, StoreError, StoreType, TaskBytesStore};

pub(super) fn task_id(partition: i32) -> TaskId {
    TaskId {
        subtopology: "0".into(),
        partition,
    }
}

impl Runtime {
    /// Carries out one action of the task manager.
    pub(super) async fn execute(
        &mut self,
        action: Action,
        consumer: &StreamConsumer,
        restore: &mut RestoreReader,
    ) -> Result<(), RuntimeError> {
        match action {
            Action::Create { task, standby } => self.create(task, standby)?,
            Action::StartRestore { task, after } => self.start_restore(restore, task, after)?,
            Action::StopRestore { task } => {
                if let Err(e) = restore.stop(task) {
                    warn!(
                        task,
                        error = &e as &dyn std::error::Error,
                        "stopping a restore"
                    );
                }
            }
            Action::FetchCommitted { tasks } => self.fetch_committed(&tasks).await?,
            Action::StartProcessing { task, offset } => {
                self.start_processing(consumer, task, offset)?
            }
            Action::StopProcessing { tasks } => self.stop_processing(consumer, &tasks),
            Action::Flush { id, tasks } => self.flush(id, &tasks).await?,
            Action::CommitOffsets { offsets } => self.commit_offsets(&offsets).await?,
            Action::CommitTransaction { offsets } => self.commit_transaction(&offsets)?,
            Action::AbortTransaction => self.abort_transaction(),
            Action::Checkpoint { task, offset } => self.checkpoint(task, offset),
            Action::DiscardCheckpoint { task } => self
                .task_dir(task)
                .discard_checkpoint(&task_id(task).to_string()),
            Action::CloseClean { task } => self.close(task, true),
            Action::CloseDirty { task } => self.close(task, false),
            Action::DropDormant { task } => {
                if self.dormant.remove(&task).is_some() {
                    info!(task = %task_id(task), "dropping the store of a task given away (state.cleanup.delay.ms)");
                }
            }
            Action::AcknowledgeRevocation { tasks } => {
                let ids: BTreeSet<TaskId> = tasks.into_iter().map(task_id).collect();
                self.driver.tasks_revoked(ids);
            }
            Action::Rejoin => self.driver.rejoin(),
            Action::Leave => {
                let left = self.driver.leave(self.config.leave_timeout).await;
                info!(?left, "leaving the streams group");
                self.left = true;
            }
        }
        metrics::assigned_tasks(self.manager.running_count());
        Ok(())
    }

    /// Every `state.cleanup.delay.ms`, Kafka Streams' state directory cleaner: deletes the
    /// directories of tasks this worker does not hold that were idle that long.
    pub(super) fn clean_state_dir(&mut self, now: Instant) {
        let delay = self.config.state_cleanup_delay;
        if now < self.last_state_cleanup + delay {
            return;
        }
        self.last_state_cleanup = now;
        let held: BTreeSet<String> = (self.tasks.keys())
            .chain(self.dormant.keys())
            .chain(self.restores.keys())
            .map(|p| task_id(*p).to_string())
            .collect();
        state_cleaner::clean_obsolete_task_dirs(
            &self.config.state_dir.join(&self.config.application_id),
            &|task| held.contains(task),
            SystemTime::now(),
            delay,
        );
    }

    pub(super) fn task_dir(&self, partition: i32) -> TaskDir {
        TaskDir::new(
            &self.config.state_dir,
            &self.config.application_id,
            &task_id(partition),
            &self.config.store_name,
        )
    }

    /// Opens a task's byte store as `store.type` says. A persistent store is kept when its
    /// checkpoint vouches for it (the offset is returned: its restore replays only the
    /// changelog after it); otherwise, or when it cannot be opened, its checkpoint is deleted
    /// and it is wiped for a full restore.
    fn open_store(
        &self,
        dir: &TaskDir,
        task: &str,
        partition: i32,
    ) -> Result<(TaskBytesStore, Option<i64>), StoreError> {
        let StoreType::Persistent(options) = &self.config.store_type else {
            return Ok((TaskBytesStore::default(), None));
        };
        if let Some(offset) = dir.prepare_persistent(task, &self.changelog_topic, partition) {
            match PersistentBytesStore::open(dir.store_dir(), options) {
                Ok(store) => return Ok((store.into(), Some(offset))),
                Err(e) => {
                    warn!(task, error = &e as &dyn std::error::Error,
                        "cannot open the checkpointed persistent store; restoring the whole changelog");
                    dir.discard_checkpoint(task);
                }
            }
        }
        Ok((
            open_task_store(&self.config.store_type, dir.store_dir())?,
            None,
        ))
    }

    fn create(&mut self, partition: i32, standby: bool) -> Result<(), RuntimeError> {
        let persistent = matches!(self.config.store_type, StoreType::Persistent(_));
        // A dormant task's store is current up to its changelog offset; a new one may find
        // the state of an earlier clean close on disk.
        let task = match self.dormant.remove(&partition) {
            Some(task) => task,
            None => {
                let id = task_id(partition);
                let dir = self.task_dir(partition);
                let (inner, checkpointed) = tokio::task::block_in_place(|| {
                    self.open_store(&dir, &id.to_string(), partition)
                })
                .map_err(|source| RuntimeError::OpenStore {
                    task: id.to_string(),
                    source,
                })?;
                let processor = self
                    .factory
                    .create(&self.config.store_name, self.budget.clone(), inner)
                    .map_err(|source| RuntimeError::Process {
                        task: id.to_string(),
                        source: Box::new(source),
                    })?;
                let mut task = Task::new(
                    id,
                    self.input_topic.clone(),
                    processor,
                    self.changelog_topic.clone(),
                    None,
                );
                match checkpointed {
                    Some(offset) => task.resume_after(offset),
                    None if !persistent => {
                        tokio::task::block_in_place(|| {
                            dir.load(&mut task, self.config.exactly_once)
                        });
                    }
                    None => {}
                }
                task
            }
        };
        if self.config.exactly_once && !persistent {
            // Written again only on a clean close: a crash from here on must restore the
            // whole changelog (Kafka Streams under exactly-once does the same). A persistent
            // store's checkpoint stays while it restores: the manager has it deleted when the
            // task starts running.
            self.task_dir(partition).discard_checkpoint(&task.name);
        }
        let position = task.changelog_offset();
        info!(task = %task.name, standby, changelog_offset = ?position, "task created");
        self.tasks.insert(partition, task);
        self.manager.handle_created(partition, position);
        Ok(())
    }

    fn start_restore(
        &mut self,
        restore: &mut RestoreReader,
        partition: i32,
        after: Option<i64>,
    ) -> Result<(), RuntimeError> {
        let dir = self.task_dir(partition);
        let Some(task) = self.tasks.get_mut(&partition) else {
            return Ok(());
        };
        let changelog_error = |task: &Task, source| RuntimeError::Changelog {
            task: task.name.clone(),
            source: Box::new(source),
        };
        let range = restore
            .start(partition, after)
            .map_err(|e| changelog_error(task, e))?;
        if range.full && after.is_some() {
            warn!(task = %task.name, position = ?after, start = range.start, end = range.end,
                "the store's position is outside the changelog; clearing it for a full restore");
        }
        if range.full {
            // The checkpoint goes first: a crash while the store is rebuilt must not leave it
            // naming state the store no longer holds.
            if after.is_some() {
                dir.discard_checkpoint(&task.name);
            }
            task.clear(range.position)
                .map_err(|e| changelog_error(task, e))?;
        }
        if matches!(
            self.manager.state(partition),
            Some(TaskState::Restoring { .. })
        ) {
            self.config.status.set_task(&task.id, TaskPhase::Restoring);
        }
        info!(task = %task.name, after = ?range.position, end = range.end, "task restoring");
        self.restores.insert(
            partition,
            RestoreStats {
                started: Instant::now(),
                from: range.start,
                end: range.end,
                full: range.full,
                applied: 0,
            },
        );
        self.manager
            .handle_restore_started(partition, range.position, range.end);
        Ok(())
    }

    async fn fetch_committed(&mut self, tasks: &[i32]) -> Result<(), RuntimeError> {
        for p in tasks {
            if let (Some(stats), Some(task)) = (self.restores.remove(p), self.tasks.get(p)) {
                let total = u64::try_from(stats.end - stats.from).unwrap_or(0);
                let secs = stats.started.elapsed().as_secs_f64().max(f64::EPSILON);
                let progress = crate::changelog::RestoreProgress {
                    topic: self.changelog_topic.clone(),
                    partition: *p,
                    start: stats.from,
                    end: stats.end,
                    restored: total,
                    total,
                    records_per_sec: stats.applied as f64 / secs,
                    done: true,
                };
                metrics::restore_progress(&task.name, &progress);
                self.config.status.restore_progress(&task.id, &progress);
                info!(
                    task = %task.name,
                    restored = stats.applied,
                    from = stats.from,
                    to = stats.end,
                    full = stats.full,
                    elapsed_ms = stats.started.elapsed().as_millis() as u64,
                    "task restored"
                );
            }
        }
        let partitions: Vec<(String, i32)> = tasks
            .iter()
            .map(|p| (self.config.input_topic.clone(), *p))
            .collect();
        let committed =
            self.offsets
                .fetch(&partitions)
                .await
                .map_err(|source| RuntimeError::Offsets {
                    source: Box::new(source),
                })?;
        let fetched: Vec<(i32, Option<i64>)> = tasks.iter().copied().zip(committed).collect();
        self.manager.handle_committed(&fetched);
        Ok(())
    }

    fn start_processing(
        &mut self,
        consumer: &StreamConsumer,
        partition: i32,
        offset: Option<i64>,
    ) -> Result<(), RuntimeError> {
        let topic = self.config.input_topic.clone();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &topic,
            partition,
            offset.map_or(Offset::Beginning, Offset::Offset),
        )
        .and_then(|()| consumer.incremental_assign(&tpl))
        .map_err(|source| RuntimeError::Consume { topic, source })?;
        self.processing.insert(partition);
        self.config
            .status
            .set_task(&task_id(partition), TaskPhase::Running);
        info!(task = %task_id(partition), committed = ?offset, "task running");
        Ok(())
    }

    fn stop_processing(&mut self, consumer: &StreamConsumer, tasks: &[i32]) {
        let mut tpl = TopicPartitionList::new();
        for p in tasks {
            tpl.add_partition(&self.config.input_topic, *p);
        }
        if tpl.count() > 0 {
            if let Err(e) = consumer.incremental_unassign(&tpl) {
                warn!(
                    error = &e as &dyn std::error::Error,
                    "unassigning input partitions"
                );
            }
        }
    }

    /// Closes a task: cleanly (snapshot and checkpoint written, store kept dormant) after a
    /// commit, or dirty (checkpoint deleted, store dropped).
    fn close(&mut self, partition: i32, clean: bool) {
        let unfinished = self.restores.remove(&partition);
        let Some(mut task) = self.tasks.remove(&partition) else {
            return;
        };
        self.config.status.remove_task(&task.id);
        if let Some(stats) = unfinished {
            info!(task = %task.name, restored = stats.applied, changelog_offset = ?task.changelog_offset(), "restore cancelled; task kept dormant");
        }
        // A task that processed in this assignment wrote its changelog up to the last
        // acknowledged offset (a commit waited for every acknowledgement before the close).
        if self.processing.remove(&partition) {
            if let Some(acked) = self.producer.last_changelog_offset(partition) {
                task.resume_after(acked);
            }
        }
        let dir = self.task_dir(partition);
        if clean {
            tokio::task::block_in_place(|| dir.save(&mut task));
            info!(task = %task.name, changelog_offset = ?task.changelog_offset(), "task closed");
            self.dormant.insert(partition, task);
        } else {
            dir.discard_checkpoint(&task.name);
            info!(task = %task.name, "task closed dirty");
        }
    }

    /// Makes a persistent store durable and writes its checkpoint at `offset`.
    fn checkpoint(&mut self, partition: i32, offset: i64) {
        let dir = self.task_dir(partition);
        if let Some(task) = self.tasks.get_mut(&partition) {
            tokio::task::block_in_place(|| dir.checkpoint(task, offset));
        }
    }

    fn abort_transaction(&mut self) {
        if let Some(txn) = self.txn.as_mut() {
            if let Err(e) = txn.abort(self.producer.producer()) {
                warn!(
                    error = &e as &dyn std::error::Error,
                    "aborting the transaction of lost tasks"
                );
            }
        }
        self.producer.clear_failure();
        self.awaiting.clear();
        self.cycle_started = None;
    }

    /// Reports a commit refused because the tasks moved.
    pub(super) fn commit_refused(&mut self, reason: &(dyn std::error::Error + 'static)) {
        warn!(
            error = reason,
            "the group refused the commit: tasks migrated, closing them dirty and rejoining"
        );
        self.awaiting.clear();
        self.cycle_started = None;
        self.manager
            .handle_commit_result(Instant::now(), Err(CommitFailure::Refused));
    }
}
