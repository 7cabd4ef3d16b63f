//! What the driver and the status board read off the [`TaskManager`]: task states, the
//! tasks whose changelog is read, and whether a commit cycle or the shutdown is under way.

use super::{Partition, TaskManager, TaskState, TaskStatus};

impl TaskManager {
    /// Every task with its state.
    pub fn snapshot(&self) -> Vec<TaskStatus> {
        self.tasks
            .iter()
            .map(|(task, e)| TaskStatus {
                task: *task,
                state: e.state,
                committed: e.committed,
            })
            .collect()
    }

    pub fn state(&self, task: Partition) -> Option<TaskState> {
        self.tasks.get(&task).map(|e| e.state)
    }

    /// Whether input records of `task` are to be processed.
    pub fn is_running(&self, task: Partition) -> bool {
        self.state(task) == Some(TaskState::Running)
    }

    /// Tasks whose changelog the driver reads (restoring and standby).
    pub fn restoring(&self) -> impl Iterator<Item = Partition> + '_ {
        self.tasks.iter().filter_map(|(p, e)| {
            matches!(
                e.state,
                TaskState::Restoring { .. } | TaskState::Standby { .. }
            )
            .then_some(*p)
        })
    }

    /// Whether a commit cycle is under way.
    pub fn has_cycle(&self) -> bool {
        self.cycle.is_some()
    }

    pub fn running_count(&self) -> usize {
        self.tasks
            .values()
            .filter(|e| e.state == TaskState::Running)
            .count()
    }

    /// Whether the driver's work is done after [`shutdown`](Self::shutdown).
    pub fn has_left(&self) -> bool {
        self.left
    }
}
