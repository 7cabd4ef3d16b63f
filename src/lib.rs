//! kstate: session-windowed state for Kafka stream processing, kept in a write-back cache,
//! logged to a compacted changelog topic and restored on whichever worker the streams group
//! protocol (KIP-1071) assigns the task to.
//!
//! Layers, top to bottom (each calls only those below it): `worker` (configuration and
//! process concerns), `runtime` (tasks, the poll loop and the commit cycle), `membership`
//! (the KIP-1071 member state machine), `protocol` (wire codecs and the broker connection),
//! `session` (session-window aggregation), `changelog` (change logging, restore and
//! checkpoints) and `store` (the caching session store and byte stores).

pub mod changelog;
pub mod membership;
pub mod protocol;
pub mod runtime;
pub mod worker;
