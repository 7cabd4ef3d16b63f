//! The worker's tasks as a sans-IO state machine: [`TaskManager`].
//!
//! Owns each task's state (Created → Restoring → Running → Suspended → Closed, and Standby),
//! its input position and committed offset, its changelog position, the commit cycle and the
//! dormant stores kept after a clean close. It opens no client and reads no clock: membership
//! events, restore progress, processed offsets, flush acknowledgements and commit results
//! come in through `handle_*` with `now`; what to do comes out of
//! [`poll_action`](TaskManager::poll_action), and when to wake next out of
//! [`poll_timeout`](TaskManager::poll_timeout). The driver (`run.rs`) carries the actions out
//! with rdkafka and holds the stores; it decides nothing.
//!
//! Rules it enforces:
//! - a task processes nothing before its restore reached the changelog end captured when the
//!   restore started, and starts at the group's committed offset (offsets only move forward:
//!   no commit is at or below an offset already committed for the partition);
//! - under at-least-once a commit flushes every running task and notes their positions, and
//!   commits those positions once the flush is acknowledged, while processing goes on; under
//!   exactly-once the flush and the offsets go into one transaction;
//! - a revoked task stops processing, is committed, then closed cleanly (kept dormant) before
//!   the revocation is acknowledged; a restoring or standby task has nothing to commit;
//! - a refused commit or an aborted transaction closes the tasks dirty and rejoins the group;
//! - a standby task follows its changelog and never processes; promoted, it restores only the
//!   tail after its position;
//! - a persistent store (`checkpoint` policy set) is checkpointed, at most as often as the
//!   policy says ([`CheckpointPolicy`]), at the changelog offset it holds: while it restores or
//!   follows its changelog (the records come from the changelog), and under at-least-once
//!   after a commit whose changelog records are all acknowledged. Under exactly-once a
//!   running store holds uncommitted writes, so its checkpoint is removed when it starts
//!   running and written again only by a clean close (docs/DESIGN.md §1).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

mod checkpoint;
mod closing;
mod queries;
mod types;

use checkpoint::CheckpointClock;
pub use checkpoint::CheckpointPolicy;
pub use types::{Action, CommitFailure, ManagerConfig, Partition, TaskState, TaskStatus};

#[derive(Debug)]
struct Entry {
    state: TaskState,
    /// Next input offset (last processed + 1).
    position: Option<i64>,
    committed: Option<i64>,
    /// Last changelog offset the store holds that Kafka holds too (restored, or produced and
    /// acknowledged).
    changelog: Option<i64>,
    checkpoint: CheckpointClock,
}

/// A commit cycle in flight.
#[derive(Debug)]
struct Cycle {
    id: u64,
    offsets: Vec<(Partition, i64)>,
    /// Set once the offsets were sent (awaiting the result).
    committing: bool,
}

#[derive(Debug)]
pub struct TaskManager {
    config: ManagerConfig,
    tasks: BTreeMap<Partition, Entry>,
    wanted_active: BTreeSet<Partition>,
    wanted_standby: BTreeSet<Partition>,
    /// Revoked tasks to acknowledge once closed.
    revoking: BTreeSet<Partition>,
    /// Stores kept after a clean close, with when.
    dormant: BTreeMap<Partition, Instant>,
    cycle: Option<Cycle>,
    /// Another commit is due as soon as the one in flight ends.
    commit_again: bool,
    next_cycle_id: u64,
    next_commit: Option<Instant>,
    shutting_down: bool,
    left: bool,
    actions: VecDeque<Action>,
    /// The latest `now` passed in.
    now: Instant,
}

impl TaskManager {
    pub fn new(config: ManagerConfig, now: Instant) -> Self {
        Self {
            config,
            tasks: BTreeMap::new(),
            wanted_active: BTreeSet::new(),
            wanted_standby: BTreeSet::new(),
            revoking: BTreeSet::new(),
            dormant: BTreeMap::new(),
            cycle: None,
            commit_again: false,
            next_cycle_id: 1,
            next_commit: None,
            shutting_down: false,
            left: false,
            actions: VecDeque::new(),
            now,
        }
    }

    /// The next action for the driver, oldest first.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let cleanup = self
            .dormant
            .values()
            .min()
            .map(|since| *since + self.config.cleanup_delay);
        match (self.next_commit, cleanup) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The full target from the group: tasks no longer in it are committed and closed
    /// cleanly, new ones created; a standby in the active set is promoted.
    pub fn handle_assignment(
        &mut self,
        now: Instant,
        active: BTreeSet<Partition>,
        standby: BTreeSet<Partition>,
    ) {
        self.now = now;
        if self.shutting_down {
            return;
        }
        self.wanted_active = active;
        self.wanted_standby = standby.difference(&self.wanted_active).copied().collect();
        let gone: Vec<Partition> = self
            .tasks
            .iter()
            .filter(|(p, e)| {
                let role_kept = match e.state {
                    TaskState::Standby { .. } => {
                        self.wanted_standby.contains(p) || self.wanted_active.contains(p)
                    }
                    _ => self.wanted_active.contains(p),
                };
                !role_kept && e.state != TaskState::Suspended
            })
            .map(|(p, _)| *p)
            .collect();
        self.suspend(&gone);
        self.reconcile();
    }

    /// Commit and close these active tasks, then acknowledge.
    pub fn handle_revoke(&mut self, now: Instant, tasks: BTreeSet<Partition>) {
        self.now = now;
        self.wanted_active.retain(|p| !tasks.contains(p));
        let owned: Vec<Partition> = tasks
            .iter()
            .filter(|p| self.tasks.contains_key(p))
            .copied()
            .collect();
        self.revoking.extend(tasks);
        self.suspend(&owned);
        self.maybe_acknowledge();
    }

    /// The member was fenced: every active task is closed dirty, without a commit.
    pub fn handle_lost(&mut self, now: Instant) {
        self.now = now;
        self.lose_all(false);
    }

    /// The driver created `task`'s store holding the changelog up to `position`.
    pub fn handle_created(&mut self, task: Partition, position: Option<i64>) {
        self.dormant.remove(&task);
        let Some(entry) = self.tasks.get_mut(&task) else {
            return;
        };
        if entry.state != TaskState::Created {
            return;
        }
        entry.changelog = position;
        entry.checkpoint = CheckpointClock::new(position, self.now);
        entry.state = if self.wanted_standby.contains(&task) {
            TaskState::Standby {
                position,
                lag: None,
            }
        } else {
            TaskState::Restoring {
                position,
                end: None,
            }
        };
        self.actions.push_back(Action::StartRestore {
            task,
            after: position,
        });
    }

    /// The restore of `task` starts after `position` (moved to `None` when the store was
    /// cleared for a full restore) and ends at `end`.
    pub fn handle_restore_started(&mut self, task: Partition, position: Option<i64>, end: i64) {
        if let Some(entry) = self.tasks.get_mut(&task) {
            if entry.changelog != position {
                entry.changelog = position;
                entry.checkpoint.reset(position);
            }
            match &mut entry.state {
                TaskState::Restoring {
                    position: p,
                    end: e,
                } => {
                    *p = position;
                    *e = Some(end);
                }
                TaskState::Standby { position: p, lag } => {
                    *p = position;
                    *lag = Some(lag_of(position, end));
                }
                _ => return,
            }
        }
        self.check_restored(task);
    }

    /// Records up to `offset` of `task`'s changelog are in its store (a transaction marker
    /// may move it without a record).
    pub fn handle_restored(&mut self, task: Partition, offset: i64) {
        if let Some(entry) = self.tasks.get_mut(&task) {
            match &mut entry.state {
                TaskState::Restoring { position, .. } | TaskState::Standby { position, .. } => {
                    *position = Some(position.map_or(offset, |p| p.max(offset)));
                    entry.changelog = *position;
                }
                _ => return,
            }
        }
        self.maybe_checkpoint(task);
        self.check_restored(task);
    }

    /// The changelog end of a standby task, for its lag.
    pub fn handle_standby_end(&mut self, task: Partition, end: i64) {
        if let Some(Entry {
            state: TaskState::Standby { position, lag },
            ..
        }) = self.tasks.get_mut(&task)
        {
            *lag = Some(lag_of(*position, end));
        }
    }

    /// The group's committed offsets of restored tasks: they start processing there.
    pub fn handle_committed(&mut self, committed: &[(Partition, Option<i64>)]) {
        for (task, offset) in committed {
            let Some(entry) = self.tasks.get_mut(task) else {
                continue;
            };
            if !matches!(entry.state, TaskState::Restoring { .. }) {
                continue;
            }
            entry.state = TaskState::Running;
            entry.committed = *offset;
            entry.position = *offset;
            if self.config.checkpoint.is_some() && self.config.exactly_once {
                // From here on the store takes writes of open transactions: only a clean
                // close vouches for it again.
                entry.checkpoint = CheckpointClock::new(None, self.now);
                self.actions
                    .push_back(Action::DiscardCheckpoint { task: *task });
            }
            self.actions.push_back(Action::StartProcessing {
                task: *task,
                offset: *offset,
            });
        }
    }

    /// `task` processed (or skipped) the input record at `offset`.
    pub fn handle_processed(&mut self, task: Partition, offset: i64) {
        if let Some(entry) = self.tasks.get_mut(&task) {
            if entry.state == TaskState::Running {
                entry.position = Some(entry.position.map_or(offset + 1, |p| p.max(offset + 1)));
            }
        }
    }

    /// The changelog records of `task` up to `offset` are acknowledged (the driver tells
    /// before [`handle_flush_acked`](Self::handle_flush_acked)).
    pub fn handle_changelog_acked(&mut self, task: Partition, offset: i64) {
        if let Some(entry) = self.tasks.get_mut(&task) {
            if matches!(entry.state, TaskState::Running | TaskState::Suspended) {
                entry.changelog = Some(entry.changelog.map_or(offset, |c| c.max(offset)));
            }
        }
    }

    /// Every record produced up to flush `id` is acknowledged (at-least-once).
    pub fn handle_flush_acked(&mut self, now: Instant, id: u64) {
        self.now = now;
        let Some(cycle) = self.cycle.as_mut() else {
            return;
        };
        if cycle.id != id || cycle.committing {
            return;
        }
        cycle.committing = true;
        let offsets = cycle.offsets.clone();
        self.actions.push_back(Action::CommitOffsets { offsets });
    }

    /// The outcome of the commit in flight.
    pub fn handle_commit_result(&mut self, now: Instant, result: Result<(), CommitFailure>) {
        self.now = now;
        let Some(cycle) = self.cycle.take() else {
            return;
        };
        match result {
            Ok(()) => {
                for (task, offset) in &cycle.offsets {
                    if let Some(entry) = self.tasks.get_mut(task) {
                        entry.committed = Some(entry.committed.map_or(*offset, |c| c.max(*offset)));
                    }
                }
                if !self.config.exactly_once {
                    // The flush's changelog records are acknowledged and its offsets
                    // committed: the store backs them (suspended tasks are checkpointed by
                    // their clean close below).
                    let running: Vec<Partition> = self
                        .tasks
                        .iter()
                        .filter(|(_, e)| e.state == TaskState::Running)
                        .map(|(p, _)| *p)
                        .collect();
                    for task in running {
                        self.maybe_checkpoint(task);
                    }
                }
                self.close_suspended();
                if self.commit_again || self.has_suspended() {
                    self.commit_again = false;
                    self.start_cycle();
                }
                if self.shutting_down && self.cycle.is_none() {
                    self.finish_shutdown();
                }
            }
            Err(_) => self.lose_all(true),
        }
    }

    /// The transaction failed outside a commit (its producer was fenced, or it must be
    /// aborted): every task is closed dirty and the member rejoins, as after a refused commit.
    pub fn handle_transaction_failed(&mut self, now: Instant) {
        self.now = now;
        self.lose_all(true);
    }

    /// Timers: the commit interval, and dormant stores past `state.cleanup.delay.ms`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.next_commit.is_some_and(|at| now >= at) {
            self.next_commit = Some(now + self.config.commit_interval);
            self.request_commit();
        }
        let expired: Vec<Partition> = self
            .dormant
            .iter()
            .filter(|(_, since)| now >= **since + self.config.cleanup_delay)
            .map(|(p, _)| *p)
            .collect();
        for task in expired {
            self.dormant.remove(&task);
            self.actions.push_back(Action::DropDormant { task });
        }
    }

    /// Stops restores, commits and closes every task cleanly, then emits `Leave`.
    pub fn shutdown(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        self.now = now;
        self.shutting_down = true;
        self.next_commit = None;
        self.wanted_active.clear();
        self.wanted_standby.clear();
        let all: Vec<Partition> = self.tasks.keys().copied().collect();
        self.suspend(&all);
        if self.cycle.is_none() {
            self.finish_shutdown();
        }
    }

    /// Moves tasks out: restoring, standby and created ones close at once (nothing to
    /// commit); running ones stop processing and wait for a commit.
    fn suspend(&mut self, tasks: &[Partition]) {
        let mut stop_processing = Vec::new();
        for task in tasks {
            let Some(entry) = self.tasks.get_mut(task) else {
                continue;
            };
            match entry.state {
                TaskState::Running => {
                    entry.state = TaskState::Suspended;
                    stop_processing.push(*task);
                }
                TaskState::Restoring { .. } | TaskState::Standby { .. } => {
                    self.actions.push_back(Action::StopRestore { task: *task });
                    self.close(*task, true);
                }
                TaskState::Created => self.close(*task, true),
                TaskState::Suspended | TaskState::Closed => {}
            }
        }
        if !stop_processing.is_empty() {
            self.actions.push_back(Action::StopProcessing {
                tasks: stop_processing,
            });
            self.request_commit();
        }
    }

    fn request_commit(&mut self) {
        if self.cycle.is_some() {
            self.commit_again = true;
        } else {
            self.start_cycle();
        }
    }

    /// A commit of every running and suspended task: flush, then (at-least-once) the
    /// offsets once acknowledged, or (exactly-once) the transaction at once.
    fn start_cycle(&mut self) {
        let tasks: Vec<Partition> = self
            .tasks
            .iter()
            .filter(|(_, e)| matches!(e.state, TaskState::Running | TaskState::Suspended))
            .map(|(p, _)| *p)
            .collect();
        if tasks.is_empty() {
            return;
        }
        let offsets: Vec<(Partition, i64)> = tasks
            .iter()
            .filter_map(|p| {
                let e = &self.tasks[p];
                e.position
                    .filter(|&pos| e.committed.is_none_or(|c| pos > c))
                    .map(|pos| (*p, pos))
            })
            .collect();
        let id = self.next_cycle_id;
        self.next_cycle_id += 1;
        self.actions.push_back(Action::Flush { id, tasks });
        let exactly_once = self.config.exactly_once;
        self.cycle = Some(Cycle {
            id,
            offsets: offsets.clone(),
            committing: exactly_once,
        });
        if exactly_once {
            self.actions
                .push_back(Action::CommitTransaction { offsets });
        }
    }

    fn has_suspended(&self) -> bool {
        self.tasks.values().any(|e| e.state == TaskState::Suspended)
    }

    /// Creates wanted tasks that do not exist yet, and promotes standbys now active.
    fn reconcile(&mut self) {
        if self.shutting_down {
            return;
        }
        let wanted: Vec<(Partition, bool)> = self
            .wanted_active
            .iter()
            .map(|p| (*p, false))
            .chain(self.wanted_standby.iter().map(|p| (*p, true)))
            .collect();
        for (task, standby) in wanted {
            match self.tasks.get_mut(&task) {
                None => {
                    self.tasks.insert(
                        task,
                        Entry {
                            state: TaskState::Created,
                            position: None,
                            committed: None,
                            changelog: None,
                            checkpoint: CheckpointClock::new(None, self.now),
                        },
                    );
                    self.actions.push_back(Action::Create { task, standby });
                }
                Some(entry) if !standby => {
                    if let TaskState::Standby { position, .. } = entry.state {
                        // Promotion: the store holds the changelog up to `position`; only
                        // the tail after it is restored.
                        entry.state = TaskState::Restoring {
                            position,
                            end: None,
                        };
                        self.actions.push_back(Action::StopRestore { task });
                        self.actions.push_back(Action::StartRestore {
                            task,
                            after: position,
                        });
                    }
                }
                Some(_) => {}
            }
        }
        if self.next_commit.is_none() && !self.wanted_active.is_empty() {
            self.next_commit = Some(self.now + self.config.commit_interval);
        }
    }

    /// Emits a checkpoint of `task`'s persistent store when the policy says it is due (its
    /// time bound read at the latest `now` passed in: restore progress carries none).
    fn maybe_checkpoint(&mut self, task: Partition) {
        let Some(policy) = self.config.checkpoint else {
            return;
        };
        let now = self.now;
        let Some(entry) = self.tasks.get_mut(&task) else {
            return;
        };
        let Some(offset) = entry.changelog else {
            return;
        };
        let running_eos = self.config.exactly_once
            && matches!(entry.state, TaskState::Running | TaskState::Suspended);
        if running_eos || !entry.checkpoint.due(&policy, now, offset) {
            return;
        }
        entry.checkpoint.wrote(offset, now);
        self.actions.push_back(Action::Checkpoint { task, offset });
    }

    fn check_restored(&mut self, task: Partition) {
        let Some(entry) = self.tasks.get(&task) else {
            return;
        };
        if let TaskState::Restoring {
            position,
            end: Some(end),
        } = entry.state
        {
            if position.map_or(0, |p| p + 1) >= end {
                self.actions.push_back(Action::StopRestore { task });
                self.actions
                    .push_back(Action::FetchCommitted { tasks: vec![task] });
            }
        }
    }
}

fn lag_of(position: Option<i64>, end: i64) -> i64 {
    (end - position.map_or(0, |p| p + 1)).max(0)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod checkpoint_tests;
