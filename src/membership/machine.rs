//! The streams-group member as a sans-IO state machine: [`Membership`].
//!
//! Owns the member's epoch, its owned and target tasks, the request to send next and when,
//! and the events the runtime must act on. It does no I/O and reads no clock: time comes in
//! as `now`, responses through `handle_*`, and requests and events go out through `poll_*`.
//! Reconciliation (revoke, then assign) lives in `reconcile.rs`.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;

use super::errors::{classify, ErrorAction, FailureKind, MembershipError};
use super::task::{TaskAssignment, TaskId};
use crate::protocol::streams_group_heartbeat::{JOIN_GROUP_MEMBER_EPOCH, LEAVE_GROUP_MEMBER_EPOCH};
use crate::protocol::{
    Status, StatusCode, StreamsGroupHeartbeatRequest, StreamsGroupHeartbeatResponse, TaskLists,
    TaskOffset, Topology,
};

/// First retry delay after a retriable failure (Java's `retry.backoff.ms` default).
pub const RETRY_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Upper bound of the doubling retry delay (Java's `retry.backoff.max.ms` default).
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long after [`Membership::leave`] the member reports [`MembershipEvent::Left`] even if
/// the leave heartbeat was never answered.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Heartbeat interval assumed until the broker names one (the broker default).
const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Task-offset reporting interval assumed until the broker names one (the broker default).
const DEFAULT_TASK_OFFSET_INTERVAL: Duration = Duration::from_secs(60);

/// Who the member is and what it declares when it joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipConfig {
    /// The group id (`application.id`).
    pub group_id: String,
    /// The client-generated member id, kept for the process lifetime (also across rejoins).
    pub member_id: String,
    /// The process id shared by every member of one worker process.
    pub process_id: String,
    /// The topology sent on every join (epoch 0) and never otherwise.
    pub topology: Topology,
    /// Sent as `RebalanceTimeoutMs` on joins.
    pub rebalance_timeout: Duration,
    /// Static membership instance id; sent only when version 1 or later is negotiated.
    pub instance_id: Option<String>,
    /// Rack id, sent on joins.
    pub rack_id: Option<String>,
}

/// What the runtime must act on, drained with [`Membership::poll_event`] in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    /// The full target the runtime should now own (not a delta): tasks not in it are closed
    /// cleanly, new ones created and restored. Warm-up tasks are included in `standby`.
    Assigned {
        /// Active tasks.
        active: BTreeSet<TaskId>,
        /// Standby and warm-up tasks.
        standby: BTreeSet<TaskId>,
    },
    /// Commit and close these active tasks, then call [`Membership::tasks_revoked`]. The
    /// broker hands their successor tasks out only after that.
    Revoke {
        /// The active tasks to give up.
        tasks: BTreeSet<TaskId>,
    },
    /// The member was fenced: every task is lost (close dirty, no commit). The member rejoins
    /// at epoch 0 with the same member id by itself.
    Lost,
    /// The group cannot process yet (status MISSING_SOURCE_TOPICS, MISSING_INTERNAL_TOPICS,
    /// INCORRECTLY_PARTITIONED_TOPICS or ASSIGNMENT_DELAYED). Emitted on entering the state and
    /// whenever the set of status codes changes; the member keeps heartbeating.
    NotReady {
        /// Every status of the response, including those that do not block.
        statuses: Vec<Status>,
    },
    /// The group is ready: no blocking status is present.
    Ready,
    /// The coordinator moved or is unavailable: the driver must find it again before sending
    /// the next request (which carries the full state).
    CoordinatorChanged,
    /// A broker error the member reports but survives (TOPIC_AUTHORIZATION_FAILED); it stays in
    /// the group and retries after a backoff.
    Warning(MembershipError),
    /// The member stops: no further requests. Every task must be treated as lost.
    Fatal(MembershipError),
    /// The member has left the group (leave answered, failed, or [`LEAVE_TIMEOUT`] passed).
    Left,
}

/// The member's state, as [`Membership::state`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberState {
    /// Sending (or about to send) a join at epoch 0.
    Joining,
    /// Waiting for the runtime to revoke tasks ([`Membership::tasks_revoked`]).
    Reconciling,
    /// A new assignment is reconciled; the next heartbeat, due at once, reports it.
    Acknowledging,
    /// In the group, heartbeating at the broker's interval.
    Stable,
    /// The leave heartbeat (epoch -1) is due or in flight.
    Leaving,
    /// Out of the group for good.
    Left,
    /// Stopped by an error.
    Fatal,
}

/// Where the member is in its lifecycle; the finer states are derived in [`Membership::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Joining,
    Member,
    Leaving { deadline: Instant, sent: bool },
    Left,
    Fatal,
}

/// Task offsets the runtime reported, sent on v1 only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct OffsetReport {
    pub(super) offsets: Vec<TaskOffset>,
    pub(super) end_offsets: Vec<TaskOffset>,
}

/// A KIP-1071 streams-group member, without I/O.
///
/// Driving it: after every input (`handle_*`, [`tasks_revoked`](Self::tasks_revoked),
/// [`leave`](Self::leave)) drain [`poll_event`](Self::poll_event), then call
/// [`poll_request`](Self::poll_request); send what it returns and answer it with exactly one
/// [`handle_response`](Self::handle_response) or [`handle_failure`](Self::handle_failure).
/// Otherwise sleep until [`next_deadline`](Self::next_deadline), then call
/// [`handle_timeout`](Self::handle_timeout) and `poll_request` again.
#[derive(Debug)]
pub struct Membership {
    pub(super) config: MembershipConfig,
    pub(super) version: i16,
    pub(super) phase: Phase,
    pub(super) member_epoch: i32,
    pub(super) endpoint_information_epoch: i32,
    /// What the runtime owns, as the member reports it.
    pub(super) owned: TaskAssignment,
    /// The broker's latest full target.
    pub(super) target: TaskAssignment,
    /// Active tasks the runtime was asked to revoke and has not yet released.
    pub(super) pending_revoke: BTreeSet<TaskId>,
    /// Task lists in the last request; `None` after an error, so the next one carries all.
    pub(super) last_sent: Option<TaskAssignment>,
    /// A reconciled assignment not yet reported to the broker.
    pub(super) ack_pending: bool,
    pub(super) in_flight: bool,
    pub(super) heartbeat_interval: Duration,
    /// When the next heartbeat is due; `None` = at once.
    pub(super) heartbeat_at: Option<Instant>,
    pub(super) backoff_until: Option<Instant>,
    pub(super) failed_attempts: u32,
    /// `None` until the first successful response.
    pub(super) ready: Option<bool>,
    pub(super) not_ready_codes: Vec<StatusCode>,
    pub(super) offsets: Option<OffsetReport>,
    pub(super) offsets_unsent: bool,
    pub(super) offsets_sent_at: Option<Instant>,
    pub(super) task_offset_interval: Duration,
    /// The latest `now` seen, for "due at once" deadlines.
    pub(super) last_now: Option<Instant>,
    pub(super) events: VecDeque<MembershipEvent>,
}

impl Membership {
    /// A member about to join, speaking StreamsGroupHeartbeat `negotiated_version` (0 or 1).
    /// On v0 the instance id and task offsets are never sent (such brokers reject them).
    pub fn new(config: MembershipConfig, negotiated_version: i16) -> Self {
        Membership {
            config,
            version: negotiated_version,
            phase: Phase::Joining,
            member_epoch: JOIN_GROUP_MEMBER_EPOCH,
            endpoint_information_epoch: -1,
            owned: TaskAssignment::default(),
            target: TaskAssignment::default(),
            pending_revoke: BTreeSet::new(),
            last_sent: None,
            ack_pending: false,
            in_flight: false,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_at: None,
            backoff_until: None,
            failed_attempts: 0,
            ready: None,
            not_ready_codes: Vec::new(),
            offsets: None,
            offsets_unsent: false,
            offsets_sent_at: None,
            task_offset_interval: DEFAULT_TASK_OFFSET_INTERVAL,
            last_now: None,
            events: VecDeque::new(),
        }
    }

    /// The member id, for OffsetCommit and transactional group metadata.
    pub fn member_id(&self) -> &str {
        &self.config.member_id
    }

    /// The current member epoch, for OffsetCommit (0 while joining, -1 once leaving).
    pub fn member_epoch(&self) -> i32 {
        self.member_epoch
    }

    /// Active tasks the member owns (including any it was asked to revoke but still holds).
    pub fn owned_active(&self) -> &BTreeSet<TaskId> {
        &self.owned.active
    }

    /// Every task the member owns.
    pub fn owned(&self) -> &TaskAssignment {
        &self.owned
    }

    /// Whether the last response showed the group ready (false before any response).
    pub fn is_ready(&self) -> bool {
        self.ready == Some(true)
    }

    /// The heartbeat interval in use (the broker's, once it answered).
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// The member's state.
    pub fn state(&self) -> MemberState {
        match self.phase {
            Phase::Joining => MemberState::Joining,
            Phase::Member if !self.pending_revoke.is_empty() => MemberState::Reconciling,
            Phase::Member if self.ack_pending => MemberState::Acknowledging,
            Phase::Member => MemberState::Stable,
            Phase::Leaving { .. } => MemberState::Leaving,
            Phase::Left => MemberState::Left,
            Phase::Fatal => MemberState::Fatal,
        }
    }

    /// The next event for the runtime, oldest first.
    pub fn poll_event(&mut self) -> Option<MembershipEvent> {
        self.events.pop_front()
    }

    /// The heartbeat to send now, if one is due: at once when joining, acknowledging, leaving
    /// or after a coordinator change; else one heartbeat interval after the last response, or
    /// when a retry backoff ends. `None` while a request is in flight, and after `Left` or
    /// `Fatal`. Changes after any `handle_*`, `tasks_revoked`, `leave`, or as time passes.
    pub fn poll_request(&mut self, now: Instant) -> Option<StreamsGroupHeartbeatRequest> {
        self.last_now = Some(now);
        if self.in_flight {
            return None;
        }
        match self.phase {
            Phase::Left | Phase::Fatal | Phase::Leaving { sent: true, .. } => return None,
            Phase::Joining | Phase::Member | Phase::Leaving { sent: false, .. } => {}
        }
        if self.backoff_until.is_some_and(|until| now < until)
            || self.heartbeat_at.is_some_and(|at| now < at)
        {
            return None;
        }
        self.in_flight = true;
        Some(self.build_request(now))
    }

    /// Takes the response to the request in flight.
    pub fn handle_response(&mut self, now: Instant, response: StreamsGroupHeartbeatResponse) {
        self.last_now = Some(now);
        self.in_flight = false;
        match self.phase {
            Phase::Left | Phase::Fatal => return,
            Phase::Leaving { sent: true, .. } => return self.finish_leave(),
            Phase::Joining | Phase::Member | Phase::Leaving { sent: false, .. } => {}
        }
        if let Some(error) = ResponseError::try_from_code(response.error_code) {
            return self.handle_error(now, error, response.error_message);
        }
        self.failed_attempts = 0;
        self.backoff_until = None;
        if response.heartbeat_interval_ms > 0 {
            self.heartbeat_interval = millis(response.heartbeat_interval_ms);
        }
        if response.task_offset_interval_ms > 0 {
            self.task_offset_interval = millis(response.task_offset_interval_ms);
        }
        self.endpoint_information_epoch = response.endpoint_information_epoch;
        if matches!(self.phase, Phase::Leaving { .. }) {
            // An answer to a heartbeat sent before `leave`: its content no longer matters.
            self.heartbeat_at = None;
            return;
        }
        self.heartbeat_at = Some(now + self.heartbeat_interval);
        let target = match response.task_lists() {
            TaskLists::Mixed => {
                return self.fail(MembershipError::MixedTaskLists {
                    active: response.active_tasks.is_some(),
                    standby: response.standby_tasks.is_some(),
                    warmup: response.warmup_tasks.is_some(),
                })
            }
            TaskLists::Unchanged => None,
            TaskLists::Full {
                active,
                standby,
                warmup,
            } => Some(TaskAssignment::from_lists(active, standby, warmup)),
        };
        if response.member_epoch > 0 {
            self.member_epoch = response.member_epoch;
            self.phase = Phase::Member;
        }
        if let (Phase::Member, Some(target)) = (self.phase, target) {
            self.target = target;
            self.reconcile();
        }
        self.update_readiness(response.statuses());
    }

    /// Takes a transport failure or timeout of the request in flight: retried after a backoff
    /// with the full state. A failed leave heartbeat ends the leave.
    pub fn handle_failure(&mut self, now: Instant, kind: FailureKind) {
        self.last_now = Some(now);
        self.in_flight = false;
        tracing::debug!(?kind, member_id = %self.config.member_id, "streams group heartbeat failed");
        match self.phase {
            Phase::Left | Phase::Fatal => {}
            Phase::Leaving { sent: true, .. } => self.finish_leave(),
            Phase::Joining | Phase::Member | Phase::Leaving { sent: false, .. } => {
                self.reset_sent_state();
                self.schedule_backoff(now);
            }
        }
    }

    /// Advances timers: ends a leave that was not answered within [`LEAVE_TIMEOUT`]. Calling
    /// it early, or twice, is a no-op.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = Some(now);
        if let Phase::Leaving { deadline, .. } = self.phase {
            if now >= deadline {
                self.finish_leave();
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) and [`poll_request`](Self::poll_request)
    /// should next be called; a deadline at or before `now` means at once. `None` while only
    /// a response (or nothing, after `Left`/`Fatal`) can move the member on, and before any
    /// call has passed a `now` (a new member: call `poll_request` first).
    pub fn next_deadline(&self) -> Option<Instant> {
        let leave_deadline = match self.phase {
            Phase::Left | Phase::Fatal => return None,
            Phase::Leaving { deadline, .. } => Some(deadline),
            Phase::Joining | Phase::Member => None,
        };
        if self.in_flight {
            return leave_deadline;
        }
        let send_at = match (self.backoff_until, self.heartbeat_at) {
            (Some(backoff), Some(heartbeat)) => Some(backoff.max(heartbeat)),
            (Some(at), None) | (None, Some(at)) => Some(at),
            (None, None) => self.last_now,
        };
        match (send_at, leave_deadline) {
            (Some(send), Some(leave)) => Some(send.min(leave)),
            (send, leave) => send.or(leave),
        }
    }

    /// Leaves the group: the next request is a heartbeat with epoch -1, and
    /// [`MembershipEvent::Left`] follows when it is answered, fails, or after
    /// [`LEAVE_TIMEOUT`]. The runtime commits and closes its tasks before calling this; no
    /// `Revoke` is emitted. A member not in the group (joining with nothing in flight) leaves
    /// at once. No-op when already leaving, left or fatal.
    pub fn leave(&mut self, now: Instant) {
        self.last_now = Some(now);
        match self.phase {
            Phase::Leaving { .. } | Phase::Left | Phase::Fatal => {}
            Phase::Joining if !self.in_flight => self.finish_leave(),
            Phase::Joining | Phase::Member => {
                self.phase = Phase::Leaving {
                    deadline: now + LEAVE_TIMEOUT,
                    sent: false,
                };
                self.member_epoch = LEAVE_GROUP_MEMBER_EPOCH;
                self.heartbeat_at = None;
            }
        }
    }

    /// Records per-task changelog offsets and end offsets for the broker's warm-up planning.
    /// Sent on v1 only: on the next join, else with the next heartbeat once the broker's
    /// `TaskOffsetIntervalMs` has passed since the last report. Ignored on v0.
    pub fn set_task_offsets(&mut self, offsets: Vec<TaskOffset>, end_offsets: Vec<TaskOffset>) {
        if self.version < 1 {
            return;
        }
        let report = OffsetReport {
            offsets,
            end_offsets,
        };
        if self.offsets.as_ref() != Some(&report) {
            self.offsets = Some(report);
            self.offsets_unsent = true;
        }
    }

    fn build_request(&mut self, now: Instant) -> StreamsGroupHeartbeatRequest {
        let mut request = StreamsGroupHeartbeatRequest {
            group_id: self.config.group_id.clone(),
            member_id: self.config.member_id.clone(),
            member_epoch: self.member_epoch,
            endpoint_information_epoch: self.endpoint_information_epoch,
            instance_id: self
                .config
                .instance_id
                .clone()
                .filter(|_| self.version >= 1),
            ..StreamsGroupHeartbeatRequest::default()
        };
        let joining = match self.phase {
            Phase::Leaving { deadline, .. } => {
                self.phase = Phase::Leaving {
                    deadline,
                    sent: true,
                };
                request.member_epoch = LEAVE_GROUP_MEMBER_EPOCH;
                return request;
            }
            Phase::Joining => {
                request.member_epoch = JOIN_GROUP_MEMBER_EPOCH;
                request.topology = Some(self.config.topology.clone());
                request.process_id = Some(self.config.process_id.clone());
                request.rebalance_timeout_ms = duration_ms(self.config.rebalance_timeout);
                request.rack_id = self.config.rack_id.clone();
                request.client_tags = Some(Vec::new());
                request.active_tasks = Some(Vec::new());
                request.standby_tasks = Some(Vec::new());
                request.warmup_tasks = Some(Vec::new());
                self.last_sent = Some(TaskAssignment::default());
                true
            }
            // `poll_request` never builds a request when left or fatal.
            Phase::Member | Phase::Left | Phase::Fatal => {
                if self.last_sent.as_ref() != Some(&self.owned) {
                    let (active, standby, warmup) = self.owned.to_lists();
                    request.active_tasks = Some(active);
                    request.standby_tasks = Some(standby);
                    request.warmup_tasks = Some(warmup);
                    self.last_sent = Some(self.owned.clone());
                    self.ack_pending = false;
                }
                false
            }
        };
        let offsets_due = joining
            || self
                .offsets_sent_at
                .is_none_or(|sent| now >= sent + self.task_offset_interval);
        if self.version >= 1 && self.offsets_unsent && offsets_due {
            if let Some(report) = &self.offsets {
                request.task_offsets = Some(report.offsets.clone());
                request.task_end_offsets = Some(report.end_offsets.clone());
                self.offsets_unsent = false;
                self.offsets_sent_at = Some(now);
            }
        }
        request
    }

    fn handle_error(&mut self, now: Instant, error: ResponseError, message: Option<String>) {
        self.reset_sent_state();
        let leaving = matches!(self.phase, Phase::Leaving { .. });
        match classify(error) {
            ErrorAction::CoordinatorChanged => {
                self.events.push_back(MembershipEvent::CoordinatorChanged);
                self.failed_attempts = 0;
                self.backoff_until = None;
                self.heartbeat_at = None;
            }
            ErrorAction::Backoff => self.schedule_backoff(now),
            ErrorAction::Surface => {
                self.events
                    .push_back(MembershipEvent::Warning(MembershipError::Broker {
                        error,
                        message,
                    }));
                self.schedule_backoff(now);
            }
            ErrorAction::Fenced if leaving => self.finish_leave(),
            ErrorAction::Fenced => self.fence(),
            ErrorAction::Fatal => self.fail(MembershipError::Broker { error, message }),
        }
    }

    /// The runtime lost its tasks on its own (a commit the group refused, an aborted
    /// transaction): the member rejoins at epoch 0 with the same member id at once, owning
    /// nothing, so the group reassigns those tasks without waiting for a rebalance. Kafka
    /// Streams does the same on a migrated task (it leaves and subscribes again). No event is
    /// emitted: the runtime has already closed the tasks. No-op unless in the group.
    pub fn rejoin(&mut self, now: Instant) {
        self.last_now = Some(now);
        if !matches!(self.phase, Phase::Member | Phase::Joining) {
            return;
        }
        tracing::info!(member_id = %self.config.member_id, epoch = self.member_epoch, "tasks lost by the runtime; rejoining");
        self.reset_membership();
    }

    /// All tasks lost; rejoin at epoch 0 with the same member id, at once.
    fn fence(&mut self) {
        tracing::info!(member_id = %self.config.member_id, epoch = self.member_epoch, "fenced; rejoining");
        self.reset_membership();
        self.events.push_back(MembershipEvent::Lost);
    }

    fn reset_membership(&mut self) {
        self.clear_tasks();
        self.phase = Phase::Joining;
        self.member_epoch = JOIN_GROUP_MEMBER_EPOCH;
        self.failed_attempts = 0;
        self.backoff_until = None;
        self.heartbeat_at = None;
    }

    pub(super) fn fail(&mut self, error: MembershipError) {
        tracing::error!(member_id = %self.config.member_id, error = &error as &dyn std::error::Error, "streams group membership failed");
        self.phase = Phase::Fatal;
        self.in_flight = false;
        self.events.push_back(MembershipEvent::Fatal(error));
    }

    fn finish_leave(&mut self) {
        self.clear_tasks();
        self.phase = Phase::Left;
        self.in_flight = false;
        self.member_epoch = LEAVE_GROUP_MEMBER_EPOCH;
        self.events.push_back(MembershipEvent::Left);
    }

    fn clear_tasks(&mut self) {
        self.owned = TaskAssignment::default();
        self.target = TaskAssignment::default();
        self.pending_revoke.clear();
        self.ack_pending = false;
        self.reset_sent_state();
    }

    /// After any error the next heartbeat carries the full state again.
    fn reset_sent_state(&mut self) {
        self.last_sent = None;
        self.offsets_unsent = self.offsets.is_some();
    }

    fn schedule_backoff(&mut self, now: Instant) {
        let doublings = self.failed_attempts.min(16);
        self.failed_attempts = self.failed_attempts.saturating_add(1);
        let delay = RETRY_BACKOFF_INITIAL
            .saturating_mul(1 << doublings)
            .min(RETRY_BACKOFF_MAX);
        self.backoff_until = Some(now + delay);
        self.heartbeat_at = None;
    }
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn duration_ms(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}
