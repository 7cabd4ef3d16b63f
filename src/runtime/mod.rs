//! The runtime: a sans-IO [`TaskManager`] that decides, for every task, when it is created,
//! restored (or kept as a standby), run, committed and closed, and a thin tokio/rdkafka
//! driver (`run.rs`, `events.rs`, `lifecycle.rs`, `commit.rs`) that carries its actions out
//! in one poll loop: restores batch by batch beside processing, at-least-once commits that
//! wait for acknowledgements without stalling the loop, one transaction per commit under
//! exactly-once, and the task directories where a clean close leaves a snapshot and a
//! checkpoint. The driver publishes the tasks' states into the [`StatusBoard`] (`/readyz`,
//! `/status`). Does no wire encoding (protocol) and no session-window arithmetic (session).

mod commit;
mod eos;
mod error;
mod events;
mod lifecycle;
pub mod manager;
pub mod metrics;
pub mod offsets;
pub mod partitioner;
pub mod processor;
mod producer;
mod restore;
mod run;
mod state_cleaner;
mod state_lock;
pub mod status;
mod task;
mod task_dir;
mod task_store;

pub use error::RuntimeError;
pub use manager::{CheckpointPolicy, TaskManager, TaskState, TaskStatus};
pub use offsets::{CoordinatorOffsets, OffsetCommitter, OffsetsError};
pub use partitioner::{murmur2, windowed_partition};
pub use processor::{
    count_factory, sum_factory, OutputRecord, ProcessError, ProcessorFactory,
    SessionAggregationFactory, TaskProcessor,
};
pub use run::{run, InputErrorPolicy, RuntimeConfig};
pub use state_lock::StateDirLock;
pub use status::StatusBoard;
pub use task::Task;
