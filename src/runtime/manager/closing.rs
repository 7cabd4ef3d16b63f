//! How the [`TaskManager`] closes tasks: suspended tasks once their last commit is done
//! (clean, kept dormant), every task when they are lost (dirty where they held uncommitted
//! work), the revocation acknowledged once no revoked task is open, and the leave at the end
//! of a shutdown.

use super::{Action, Partition, TaskManager, TaskState};

impl TaskManager {
    pub(super) fn close_suspended(&mut self) {
        let suspended: Vec<Partition> = self
            .tasks
            .iter()
            .filter(|(_, e)| e.state == TaskState::Suspended)
            .map(|(p, _)| *p)
            .collect();
        for task in suspended {
            self.close(task, true);
        }
        self.maybe_acknowledge();
        self.reconcile();
    }

    pub(super) fn close(&mut self, task: Partition, clean: bool) {
        if self.tasks.remove(&task).is_none() {
            return;
        }
        if clean {
            self.dormant.insert(task, self.now);
            self.actions.push_back(Action::CloseClean { task });
        } else {
            self.actions.push_back(Action::CloseDirty { task });
        }
    }

    pub(super) fn maybe_acknowledge(&mut self) {
        if self.revoking.is_empty() {
            return;
        }
        let open = self.revoking.iter().any(|p| self.tasks.contains_key(p));
        if !open {
            let tasks = std::mem::take(&mut self.revoking);
            self.actions
                .push_back(Action::AcknowledgeRevocation { tasks });
        }
    }

    /// Running and suspended tasks are closed dirty; restoring and standby ones keep their
    /// stores (a prefix of their changelog). With `rejoin`, the group is told.
    pub(super) fn lose_all(&mut self, rejoin: bool) {
        self.cycle = None;
        self.commit_again = false;
        if self.config.exactly_once {
            self.actions.push_back(Action::AbortTransaction);
        }
        let all: Vec<(Partition, TaskState)> =
            self.tasks.iter().map(|(p, e)| (*p, e.state)).collect();
        let mut stop = Vec::new();
        for (task, state) in all {
            match state {
                TaskState::Running | TaskState::Suspended => {
                    if state == TaskState::Running {
                        stop.push(task);
                    }
                    self.close(task, false);
                }
                TaskState::Restoring { .. } | TaskState::Standby { .. } => {
                    self.actions.push_back(Action::StopRestore { task });
                    self.close(task, true);
                }
                TaskState::Created | TaskState::Closed => self.close(task, true),
            }
        }
        if !stop.is_empty() {
            self.actions
                .push_back(Action::StopProcessing { tasks: stop });
        }
        self.wanted_active.clear();
        self.wanted_standby.clear();
        self.revoking.clear();
        if rejoin {
            self.actions.push_back(Action::Rejoin);
        }
        if self.shutting_down {
            self.finish_shutdown();
        }
    }

    pub(super) fn finish_shutdown(&mut self) {
        if !self.left && self.tasks.is_empty() {
            self.left = true;
            self.actions.push_back(Action::Leave);
        }
    }
}
