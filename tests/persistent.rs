//! The persistent store (`store.type = persistent`, issue 14), end to end.
//!
//! - `bounded_memory`: a persistent store of a million live sessions (ten million on request),
//!   its memory bounded to a small budget, keeps the process's resident memory under the
//!   budget plus a documented constant, and answers every lookup as an in-memory store of the
//!   same sessions does.
//! - `restart_after_kill`: workers as child processes against the real broker, restarted on
//!   the same `state.dir`: a SIGKILL under at_least_once restores only the changelog after
//!   the last checkpoint, under exactly_once_v2 all of it, and switching `store.type`
//!   restores in full.

mod common;

#[path = "persistent/bounded_memory.rs"]
mod bounded_memory;
#[path = "persistent/restart_after_kill.rs"]
mod restart_after_kill;
