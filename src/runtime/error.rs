//! The runtime's error: what stops a task or the worker, with the task, topic, partition and
//! offset where there is one, and the lower layer's error chained.

use rdkafka::error::KafkaError;

use super::offsets::OffsetsError;
use super::processor::ProcessError;
use crate::changelog::ChangelogError;
use crate::membership::MembershipError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("creating the {what} client")]
    Client {
        what: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("task {task}")]
    Process {
        task: String,
        #[source]
        source: Box<ProcessError>,
    },
    #[error("task {task}")]
    Changelog {
        task: String,
        #[source]
        source: Box<ChangelogError>,
    },
    #[error("producing output to {topic}")]
    Output {
        topic: String,
        #[source]
        source: Box<ChangelogError>,
    },
    #[error("committing input offsets")]
    Offsets {
        #[source]
        source: Box<OffsetsError>,
    },
    #[error("consuming input topic {topic}")]
    Consume {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("the group connection (kafka.* security settings)")]
    Connection {
        #[source]
        source: crate::protocol::ProtocolError,
    },
    #[error("reading metadata of topic {topic}: {reason}")]
    Metadata { topic: String, reason: String },
    #[error("transaction: {message}")]
    Transaction {
        message: String,
        fatal: bool,
        abortable: bool,
    },
    #[error("the streams group membership failed")]
    Membership {
        #[source]
        source: MembershipError,
    },
    #[error("the membership driver stopped")]
    MembershipStopped,
    #[error("state directory {path}")]
    StateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("task {task}: opening its store")]
    OpenStore {
        task: String,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("state directory {path} is locked by another worker (one worker per state.dir and application.id; give each worker its own state.dir)")]
    StateDirLocked { path: std::path::PathBuf },
    #[error("runtime::run needs a multi-thread tokio runtime (it runs blocking Kafka client calls on the worker threads); build one with #[tokio::main] or tokio::runtime::Builder::new_multi_thread()")]
    CurrentThreadRuntime,
}
