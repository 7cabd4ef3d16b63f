//! The persistent store (`store.type = persistent`, issue 14), end to end.
//!
//! - `bounded_memory`: a persistent store of a million live sessions (ten million on request),
//!   its memory bounded to a small budget, keeps the process's resident memory under the
//!   budget plus a documented constant, and answers every lookup as an in-memory store of the
//!   same sessions does.

#[path = "persistent/bounded_memory.rs"]
mod bounded_memory;
