//! kstate: session-windowed state for Kafka stream processing, kept in a write-back cache,
//! logged to a compacted changelog topic and restored on whichever worker the streams group
//! protocol (KIP-1071) assigns the task to.

pub mod changelog;
pub mod membership;
pub mod protocol;
pub mod runtime;
pub mod session;
pub mod store;
pub mod worker;

pub use worker::{Worker, WorkerConfig};
