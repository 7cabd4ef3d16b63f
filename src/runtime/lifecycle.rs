//! Task lifecycles driven by membership events: assigned tasks are created (or taken back
//! from the dormant ones kept after a clean close), loaded from the snapshot of an earlier
//! clean close when their task directory has one, restored from their changelog on a
//! blocking thread while heartbeats go on, then their input partitions are assigned at the
//! committed offsets; revoked tasks are closed cleanly (state saved to the task directory),
//! lost ones dirty.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::error::RuntimeError;
use super::metrics;
use super::offsets::OffsetCommitter;
use super::run::Runtime;
use super::task::Task;
use super::task_dir::TaskDir;
use crate::changelog::{ChangelogError, CorruptRecordPolicy, RestoreOptions, Restorer};
use crate::membership::{MembershipEvent, TaskId};

fn cancel_requested(restorer: &Restorer) -> bool {
    restorer.cancel_handle().load(Ordering::Acquire)
}

impl Runtime {
    pub(super) async fn on_assigned(
        &mut self,
        consumer: &StreamConsumer,
        events: &mut mpsc::Receiver<MembershipEvent>,
        active: BTreeSet<TaskId>,
    ) -> Result<(), RuntimeError> {
        let wanted: BTreeSet<i32> = active
            .iter()
            .filter(|t| t.subtopology == "0")
            .map(|t| t.partition)
            .collect();
        let gone: Vec<i32> = self
            .tasks
            .keys()
            .filter(|p| !wanted.contains(p))
            .copied()
            .collect();
        if !gone.is_empty() {
            self.commit_or_lose(consumer, "reassignment").await?;
            self.close(consumer, &gone, true);
        }
        let new: Vec<i32> = wanted
            .into_iter()
            .filter(|p| !self.tasks.contains_key(p))
            .collect();
        if new.is_empty() {
            metrics::assigned_tasks(self.tasks.len());
            return Ok(());
        }
        let mut created = Vec::with_capacity(new.len());
        for p in &new {
            // A dormant task's store is current up to its changelog offset; a new one may
            // find the state of an earlier clean close on disk.
            let (task, from_disk) = match self.dormant.remove(p) {
                Some((task, _)) => (task, false),
                None => (self.create_task(*p)?, true),
            };
            created.push((task, self.task_dir(*p), from_disk));
        }
        let created = self.restore(events, created).await?;
        if created.is_empty() {
            metrics::assigned_tasks(self.tasks.len());
            return Ok(());
        }
        let partitions: Vec<(String, i32)> = created
            .iter()
            .map(|t| (self.config.input_topic.clone(), t.partition()))
            .collect();
        let committed =
            self.offsets
                .fetch(&partitions)
                .await
                .map_err(|source| RuntimeError::Offsets {
                    source: Box::new(source),
                })?;
        let mut tpl = TopicPartitionList::new();
        for ((topic, p), c) in partitions.iter().zip(&committed) {
            let offset = c.map_or(Offset::Beginning, Offset::Offset);
            tpl.add_partition_offset(topic, *p, offset)
                .map_err(|source| RuntimeError::Consume {
                    topic: topic.clone(),
                    source,
                })?;
        }
        consumer
            .incremental_assign(&tpl)
            .map_err(|source| RuntimeError::Consume {
                topic: self.config.input_topic.clone(),
                source,
            })?;
        for (mut task, c) in created.into_iter().zip(committed) {
            task.start_at(c);
            info!(task = %task.name, committed = ?c, "task running");
            self.tasks.insert(task.partition(), task);
        }
        metrics::assigned_tasks(self.tasks.len());
        Ok(())
    }

    fn create_task(&self, partition: i32) -> Result<Task, RuntimeError> {
        let id = TaskId {
            subtopology: "0".into(),
            partition,
        };
        let processor = self
            .factory
            .create(&self.config.store_name, self.budget.clone())
            .map_err(|source| RuntimeError::Process {
                task: id.to_string(),
                source: Box::new(source),
            })?;
        Ok(Task::new(
            id,
            self.input_topic.clone(),
            processor,
            self.producer.clone(),
            self.changelog_topic.clone(),
            None,
        ))
    }

    pub(super) fn task_dir(&self, partition: i32) -> TaskDir {
        let id = TaskId {
            subtopology: "0".into(),
            partition,
        };
        TaskDir::new(
            &self.config.state_dir,
            &self.config.application_id,
            &id,
            &self.config.store_name,
        )
    }

    /// Loads new tasks' snapshots and restores them on a blocking thread; heartbeats go on
    /// meanwhile. Membership events that arrive during the restore are kept for the loop; a
    /// revocation of a restoring task, or the loss of all tasks, cancels the restore: the
    /// tasks it did not finish stay dormant with the changelog prefix they restored, and a
    /// later assignment continues from there. Returns the restored tasks.
    async fn restore(
        &mut self,
        events: &mut mpsc::Receiver<MembershipEvent>,
        tasks: Vec<(Task, TaskDir, bool)>,
    ) -> Result<Vec<Task>, RuntimeError> {
        let options = RestoreOptions {
            corrupt_records: if self.config.restore_skip_corrupt {
                CorruptRecordPolicy::Skip
            } else {
                CorruptRecordPolicy::Fail
            },
            read_committed: self.config.exactly_once,
            consumer_config: self.config.kafka.clone(),
            ..RestoreOptions::default()
        };
        let restorer = Restorer::new(&self.config.bootstrap, options).map_err(|source| {
            RuntimeError::Changelog {
                task: "restore".into(),
                source: Box::new(source),
            }
        })?;
        let cancel = restorer.cancel_handle();
        let restoring: BTreeSet<i32> = tasks.iter().map(|(t, _, _)| t.partition()).collect();
        let exactly_once = self.config.exactly_once;
        let mut job = tokio::task::spawn_blocking(move || {
            let mut restored = Vec::with_capacity(tasks.len());
            let mut unfinished = Vec::new();
            for (mut task, dir, from_disk) in tasks {
                if cancel_requested(&restorer) {
                    unfinished.push(task);
                    continue;
                }
                if from_disk {
                    dir.load(&mut task, exactly_once);
                }
                if exactly_once {
                    // Written again only on a clean close: a crash from here on must restore
                    // the whole changelog (Kafka Streams under exactly-once does the same).
                    dir.discard_checkpoint(&task.name);
                }
                let name = task.name.clone();
                match task.restore(&restorer, &mut |p| metrics::restore_progress(&name, p)) {
                    Ok(_) => restored.push(task),
                    Err(ChangelogError::Cancelled { .. }) => unfinished.push(task),
                    Err(source) => {
                        return Err(RuntimeError::Changelog {
                            task: name,
                            source: Box::new(source),
                        })
                    }
                }
            }
            Ok((restored, unfinished))
        });
        let joined = loop {
            tokio::select! {
                joined = &mut job => break joined,
                event = events.recv() => {
                    let Some(event) = event else {
                        cancel.store(true, Ordering::Release);
                        continue;
                    };
                    let stop = match &event {
                        MembershipEvent::Revoke { tasks } => {
                            tasks.iter().any(|t| restoring.contains(&t.partition))
                        }
                        MembershipEvent::Lost | MembershipEvent::Fatal(_) => true,
                        _ => false,
                    };
                    if stop && !cancel.swap(true, Ordering::AcqRel) {
                        info!(?event, "membership changed mid-restore: cancelling the restore");
                    }
                    self.pending.push_back(event);
                }
            }
        };
        let (restored, unfinished) = joined.map_err(|e| RuntimeError::RestoreJoin {
            reason: e.to_string(),
        })??;
        for task in unfinished {
            info!(task = %task.name, changelog_offset = ?task.changelog_offset(), "restore cancelled; task kept dormant");
            self.dormant
                .insert(task.partition(), (task, std::time::Instant::now()));
        }
        Ok(restored)
    }

    /// Closes `partitions`' tasks: cleanly (snapshot and checkpoint written, kept dormant
    /// with their store) after a commit, or dirty (checkpoint deleted, dropped).
    pub(super) fn close(&mut self, consumer: &StreamConsumer, partitions: &[i32], clean: bool) {
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            if let Some(mut task) = self.tasks.remove(p) {
                tpl.add_partition(&self.config.input_topic, *p);
                let dir = self.task_dir(*p);
                if clean {
                    tokio::task::block_in_place(|| dir.save(&mut task));
                    info!(task = %task.name, changelog_offset = ?task.changelog_offset(), "task closed");
                    self.dormant.insert(*p, (task, std::time::Instant::now()));
                } else {
                    dir.discard_checkpoint(&task.name);
                    task.abandon();
                    info!(task = %task.name, "task closed dirty");
                }
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = consumer.incremental_unassign(&tpl) {
                warn!(error = %e, "unassigning input partitions");
            }
        }
        metrics::assigned_tasks(self.tasks.len());
    }

    /// Drops the stores of tasks given away longer than `state.cleanup.delay.ms` ago.
    pub(super) fn drop_expired_dormant(&mut self, now: std::time::Instant) {
        let delay = self.config.state_cleanup_delay;
        self.dormant.retain(|p, (task, since)| {
            let keep = now.duration_since(*since) < delay;
            if !keep {
                info!(task = %task.name, partition = p, "dropping the store of a task given away (state.cleanup.delay.ms)");
            }
            keep
        });
    }

    /// Closes every task dirty and aborts the open transaction (the tasks were lost).
    pub(super) fn lose_all(&mut self, consumer: &StreamConsumer) {
        let all: Vec<i32> = self.tasks.keys().copied().collect();
        self.close(consumer, &all, false);
        self.output.producer.abandon();
        if let Some(txn) = self.txn.as_mut() {
            if let Err(e) = txn.abort() {
                warn!(error = %e, "aborting the transaction of lost tasks");
            }
        }
    }
}
