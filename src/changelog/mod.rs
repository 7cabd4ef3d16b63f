//! Change logging and restore: flushed store entries produced to the store's compacted
//! changelog topic ([`ChangelogWriter`]), replayed into a fresh store below its cache
//! ([`Restorer`]), and the `.checkpoint` file that lets a restore start at the tail
//! ([`Checkpoint`]). Owns everything that moves state bytes between a store and Kafka; knows
//! nothing of tasks, membership or the session-window rules.

mod checkpoint;
mod error;
mod restorer;
mod store_target;
mod topic;
mod writer;

pub use checkpoint::{Checkpoint, CheckpointError, OFFSET_UNKNOWN};
pub use error::ChangelogError;
pub(crate) use restorer::leader_unavailable;
pub use restorer::{
    apply_record, CorruptRecordPolicy, RestoreOptions, RestoreOutcome, RestoreProgress,
    RestoreTarget, Restorer,
};
pub use topic::{
    changelog_topic_configs, changelog_topic_name, create_changelog_topic, ADDITIONAL_RETENTION,
};
pub use writer::{producer_config, Acked, ChangelogSink, ChangelogWriter, TrackedProducer};
