//! The persistent store (`store.type = persistent`) end to end, against the real broker with
//! workers as child processes.

mod common;

#[path = "persistent/restart_after_kill.rs"]
mod restart_after_kill;
