//! Errors of the membership layer, and what the member does about each broker error code of a
//! heartbeat response (the error table of KIP-1071 as the Java client applies it).
//!
//! Owns the classification only: the state changes it implies are made by the machine.

use kafka_protocol::error::ResponseError;
use thiserror::Error;

/// Why the member cannot go on, or (for [`MembershipEvent::Warning`](super::MembershipEvent))
/// a broker error it reports while staying in the group.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MembershipError {
    /// The broker answered the heartbeat with an error code.
    #[error(
        "streams group heartbeat failed with {error} (code {code}): {message}",
        code = .error.code(),
        message = .message.as_deref().unwrap_or("no message")
    )]
    Broker {
        /// The error, by its Kafka name.
        error: ResponseError,
        /// The response's `ErrorMessage`.
        message: Option<String>,
    },
    /// A response whose task lists are neither all null nor all present (a protocol
    /// violation: the Java client throws on it).
    #[error(
        "heartbeat response mixes null and non-null task lists \
         (active present: {active}, standby present: {standby}, warm-up present: {warmup})"
    )]
    MixedTaskLists {
        /// Whether `ActiveTasks` was non-null.
        active: bool,
        /// Whether `StandbyTasks` was non-null.
        standby: bool,
        /// Whether `WarmupTasks` was non-null.
        warmup: bool,
    },
}

/// Why a heartbeat got no response: the driver reports these through
/// [`Membership::handle_failure`](super::Membership::handle_failure). Both are retried after a
/// backoff, with the full state re-sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The connection failed (refused, reset, closed, or the response did not decode).
    Transport,
    /// No response arrived within the driver's request timeout.
    Timeout,
}

/// What the member does about a heartbeat error code (kip-1071.md §2, errors table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorAction {
    /// NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE: the driver rediscovers; no backoff.
    CoordinatorChanged,
    /// COORDINATOR_LOAD_IN_PROGRESS: retry after a backoff.
    Backoff,
    /// FENCED_MEMBER_EPOCH, UNKNOWN_MEMBER_ID: all tasks lost, rejoin at epoch 0 at once.
    Fenced,
    /// TOPIC_AUTHORIZATION_FAILED: report it, stay in the group, retry after a backoff.
    Surface,
    /// Everything else, named or not: the member stops.
    Fatal,
}

/// Classifies a non-zero heartbeat error code.
pub(crate) fn classify(error: ResponseError) -> ErrorAction {
    match error {
        ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable => {
            ErrorAction::CoordinatorChanged
        }
        ResponseError::CoordinatorLoadInProgress => ErrorAction::Backoff,
        ResponseError::FencedMemberEpoch | ResponseError::UnknownMemberId => ErrorAction::Fenced,
        ResponseError::TopicAuthorizationFailed => ErrorAction::Surface,
        _ => ErrorAction::Fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_every_row_of_the_error_table() {
        let rows = [
            (16, ErrorAction::CoordinatorChanged),
            (15, ErrorAction::CoordinatorChanged),
            (14, ErrorAction::Backoff),
            (110, ErrorAction::Fenced),
            (25, ErrorAction::Fenced),
            (29, ErrorAction::Surface),
            (30, ErrorAction::Fatal),
            (42, ErrorAction::Fatal),
            (81, ErrorAction::Fatal),
            (130, ErrorAction::Fatal),
            (131, ErrorAction::Fatal),
            (132, ErrorAction::Fatal),
            (35, ErrorAction::Fatal),
            (69, ErrorAction::Fatal),
            (111, ErrorAction::Fatal),
            (31, ErrorAction::Fatal),
            (-1, ErrorAction::Fatal),
            (9999, ErrorAction::Fatal),
        ];
        for (code, action) in rows {
            let error = ResponseError::try_from_code(code).expect("non-zero code");
            assert_eq!(classify(error), action, "code {code}");
        }
    }

    #[test]
    fn broker_error_names_code_and_message() {
        let err = MembershipError::Broker {
            error: ResponseError::GroupAuthorizationFailed,
            message: Some("denied".into()),
        };
        assert_eq!(
            err.to_string(),
            "streams group heartbeat failed with GroupAuthorizationFailed (code 30): denied"
        );
    }
}
