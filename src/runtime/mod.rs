//! The runtime: tasks created, restored, run, committed and closed as membership events
//! arrive; the poll loop; the commit cycle (flush → changelog and output produced → acked →
//! offsets committed), and the task directories where a clean close leaves a snapshot and a
//! checkpoint. Owns the order of those steps; does no wire encoding (protocol) and no
//! session-window arithmetic (session).

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
mod state_lock;
pub mod status;
mod task;
mod task_dir;

pub use error::RuntimeError;
pub use manager::{TaskManager, TaskState, TaskStatus};
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
