//! Streams-group membership (KIP-1071): owns the member's view of the group — its epoch, the
//! tasks it owns and the broker's target, what heartbeat to send next and when — and the
//! topology it declares on joining.
//!
//! Sans-IO: it opens no sockets, reads no clock and never sleeps. Time comes in as `now`,
//! responses through [`Membership::handle_response`] / [`Membership::handle_failure`], and
//! requests and [`MembershipEvent`]s come out of `poll_request` / `poll_event`; backoff is a
//! deadline ([`Membership::next_deadline`]). A driver runs it with a `select!` over the
//! response future, `sleep_until(next_deadline)` and shutdown: [`driver`] is that driver, on
//! tokio, and also finds the coordinator. Encoding and committing offsets belong to other
//! layers.

pub mod driver;
mod errors;
mod machine;
mod reconcile;
mod task;
pub mod topology;

pub use driver::{DriverConfig, DriverHandle, DriverStatus, LeaveOutcome, MembershipDriver};
pub use errors::{FailureKind, MembershipError};
pub use machine::{
    MemberState, Membership, MembershipConfig, MembershipEvent, LEAVE_TIMEOUT,
    RETRY_BACKOFF_INITIAL, RETRY_BACKOFF_MAX,
};
pub use task::{TaskAssignment, TaskId};
pub use topology::session_count_topology;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
