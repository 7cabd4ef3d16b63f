//! Scenario tests of the membership machine: a stepped fake clock (plain `Instant`s advanced
//! by hand) and scripted broker responses. This file holds the shared script helpers.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;

use super::*;
use crate::protocol::{
    Status, StatusCode, StreamsGroupHeartbeatRequest, StreamsGroupHeartbeatResponse, TaskIds,
    TaskOffset,
};

pub(super) const MEMBER_ID: &str = "member-1";
pub(super) const INTERVAL: Duration = Duration::from_millis(500);

pub(super) fn config() -> MembershipConfig {
    MembershipConfig {
        group_id: "app".into(),
        member_id: MEMBER_ID.into(),
        process_id: "process-1".into(),
        topology: session_count_topology("clicks", "app-sessions-changelog", &[]),
        rebalance_timeout: Duration::from_secs(300),
        instance_id: Some("instance-1".into()),
        rack_id: Some("rack-a".into()),
    }
}

pub(super) fn lists(partitions: &[i32]) -> Vec<TaskIds> {
    if partitions.is_empty() {
        return Vec::new();
    }
    vec![TaskIds {
        subtopology_id: "0".into(),
        partitions: partitions.to_vec(),
    }]
}

pub(super) fn ids(partitions: &[i32]) -> BTreeSet<TaskId> {
    partitions.iter().map(|p| TaskId::new("0", *p)).collect()
}

/// A successful response with null task lists and no statuses.
pub(super) fn ok(epoch: i32) -> StreamsGroupHeartbeatResponse {
    StreamsGroupHeartbeatResponse {
        member_id: MEMBER_ID.into(),
        member_epoch: epoch,
        heartbeat_interval_ms: INTERVAL.as_millis() as i32,
        task_offset_interval_ms: 60_000,
        ..StreamsGroupHeartbeatResponse::default()
    }
}

pub(super) fn assign(
    epoch: i32,
    active: &[i32],
    standby: &[i32],
    warmup: &[i32],
) -> StreamsGroupHeartbeatResponse {
    StreamsGroupHeartbeatResponse {
        active_tasks: Some(lists(active)),
        standby_tasks: Some(lists(standby)),
        warmup_tasks: Some(lists(warmup)),
        ..ok(epoch)
    }
}

pub(super) fn error(code: i16) -> StreamsGroupHeartbeatResponse {
    StreamsGroupHeartbeatResponse {
        error_code: code,
        error_message: Some(format!("error {code}")),
        member_epoch: -1,
        ..StreamsGroupHeartbeatResponse::default()
    }
}

pub(super) fn status(code: i8) -> Status {
    Status {
        status_code: StatusCode(code),
        status_detail: format!("status {code}"),
    }
}

pub(super) fn with_statuses(codes: &[i8]) -> StreamsGroupHeartbeatResponse {
    StreamsGroupHeartbeatResponse {
        status: Some(codes.iter().map(|c| status(*c)).collect()),
        ..ok(1)
    }
}

pub(super) fn drain(m: &mut Membership) -> Vec<MembershipEvent> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

pub(super) fn send(m: &mut Membership, now: Instant) -> StreamsGroupHeartbeatRequest {
    m.poll_request(now).expect("a heartbeat is due")
}

pub(super) fn sent_active(req: &StreamsGroupHeartbeatRequest) -> Option<BTreeSet<TaskId>> {
    req.active_tasks.as_deref().map(task::task_set)
}

/// A member on `version` that joined at epoch 1 and owns `active` (epoch 2); events drained.
pub(super) fn member_owning(version: i16, active: &[i32]) -> (Membership, Instant) {
    let mut m = Membership::new(config(), version);
    let mut now = Instant::now();
    send(&mut m, now);
    m.handle_response(now, assign(1, &[], &[], &[]));
    if !active.is_empty() {
        now += INTERVAL;
        send(&mut m, now);
        m.handle_response(now, assign(2, active, &[], &[]));
        send(&mut m, now);
        m.handle_response(now, ok(2));
    }
    drain(&mut m);
    (m, now + INTERVAL)
}

mod assignment;
mod driver;
mod errors;
mod lifecycle;
