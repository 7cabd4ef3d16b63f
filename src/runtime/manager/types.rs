//! The task manager's vocabulary: task states, the actions it asks of its driver, commit
//! failures and the status it reports.

use std::collections::BTreeSet;
use std::time::Duration;

/// A task is named by its input partition (the topology has one subtopology, `0`).
pub type Partition = i32;

/// Where a task is in its life. Changelog positions are the last offset applied to the
/// store (`None`: nothing); `end` is the exclusive end captured when the restore started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Created,
    Restoring {
        position: Option<i64>,
        end: Option<i64>,
    },
    Running,
    Standby {
        position: Option<i64>,
        lag: Option<i64>,
    },
    Suspended,
    Closed,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the task's store (take it from the dormant ones, or load the task directory's
    /// snapshot) and answer with [`TaskManager::handle_created`](super::TaskManager::handle_created).
    Create { task: Partition, standby: bool },
    /// Read the task's changelog into its store from after `after`, capturing the end now,
    /// and answer with [`TaskManager::handle_restore_started`](super::TaskManager::handle_restore_started).
    StartRestore { task: Partition, after: Option<i64> },
    /// Stop reading the task's changelog.
    StopRestore { task: Partition },
    /// Fetch the group's committed offsets; answer with [`TaskManager::handle_committed`](super::TaskManager::handle_committed).
    FetchCommitted { tasks: Vec<Partition> },
    /// Assign the task's input partition at `offset` (the log start when `None`).
    StartProcessing {
        task: Partition,
        offset: Option<i64>,
    },
    /// Unassign these input partitions; records of them still buffered are dropped.
    StopProcessing { tasks: Vec<Partition> },
    /// Flush these tasks' caches and produce what they flushed; under at-least-once answer
    /// with [`TaskManager::handle_flush_acked`](super::TaskManager::handle_flush_acked) once every record sent so far is acknowledged.
    Flush { id: u64, tasks: Vec<Partition> },
    /// Commit these input offsets with the member id and epoch (none: nothing moved, the
    /// cycle ends); answer with [`TaskManager::handle_commit_result`](super::TaskManager::handle_commit_result).
    CommitOffsets { offsets: Vec<(Partition, i64)> },
    /// Send these offsets to the open transaction and commit it (begin one first if none is
    /// open); answer with [`TaskManager::handle_commit_result`](super::TaskManager::handle_commit_result).
    CommitTransaction { offsets: Vec<(Partition, i64)> },
    /// Abort the open transaction, if any.
    AbortTransaction,
    /// Make the task's persistent store durable (`flush_durable`), then write its
    /// `.checkpoint` naming `offset`, the last changelog record the store holds.
    Checkpoint { task: Partition, offset: i64 },
    /// Delete the task's `.checkpoint` (exactly-once: a running store holds uncommitted
    /// writes, and only a clean close vouches for it again).
    DiscardCheckpoint { task: Partition },
    /// Write the task's checkpoint (with its snapshot, or its persistent store made durable)
    /// and keep its store dormant.
    CloseClean { task: Partition },
    /// Delete the task's checkpoint and drop its store.
    CloseDirty { task: Partition },
    /// Drop a dormant store (given away longer than `state.cleanup.delay.ms` ago).
    DropDormant { task: Partition },
    /// Tell the member these revoked tasks are closed.
    AcknowledgeRevocation { tasks: BTreeSet<Partition> },
    /// Tell the member to rejoin owning nothing (tasks lost on the runtime's side).
    Rejoin,
    /// Every task is closed after [`TaskManager::shutdown`](super::TaskManager::shutdown): leave the group.
    Leave,
}

/// Why a commit did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitFailure {
    /// The group refused it: the tasks moved to another member.
    Refused,
    /// The transaction had to be aborted.
    Aborted,
}

/// A task as [`TaskManager::snapshot`](super::TaskManager::snapshot) reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskStatus {
    pub task: Partition,
    pub state: TaskState,
    pub committed: Option<i64>,
}

/// The settings the manager decides with.
#[derive(Debug, Clone, Copy)]
pub struct ManagerConfig {
    pub exactly_once: bool,
    pub commit_interval: Duration,
    pub cleanup_delay: Duration,
    /// Checkpoints between clean closes, for a persistent store; `None` for the in-memory
    /// store (its checkpoint needs a snapshot, written on a clean close only).
    pub checkpoint: Option<super::CheckpointPolicy>,
}
