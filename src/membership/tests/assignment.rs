//! Joining, heartbeat timing, the all-null / all-present rule and reconciliation.

use std::time::{Duration, Instant};

use super::*;

#[test]
fn join_sends_topology_process_id_and_three_empty_lists() {
    let mut m = Membership::new(config(), 1);
    let now = Instant::now();
    let join = send(&mut m, now);
    assert_eq!(join.member_epoch, 0);
    assert_eq!(join.group_id, "app");
    assert_eq!(join.member_id, MEMBER_ID);
    assert_eq!(join.topology, Some(config().topology));
    assert_eq!(join.process_id.as_deref(), Some("process-1"));
    assert_eq!(join.rebalance_timeout_ms, 300_000);
    assert_eq!(join.rack_id.as_deref(), Some("rack-a"));
    assert_eq!(join.endpoint_information_epoch, -1);
    assert_eq!(join.active_tasks, Some(vec![]));
    assert_eq!(join.standby_tasks, Some(vec![]));
    assert_eq!(join.warmup_tasks, Some(vec![]));
    assert_eq!(m.state(), MemberState::Joining);
    assert!(
        m.poll_request(now).is_none(),
        "one request in flight at a time"
    );
}

#[test]
fn topology_is_never_sent_on_a_non_zero_epoch() {
    let mut m = Membership::new(config(), 1);
    let mut now = Instant::now();
    send(&mut m, now);
    m.handle_response(now, assign(1, &[], &[], &[]));
    for _ in 0..3 {
        now += INTERVAL;
        let hb = send(&mut m, now);
        assert_eq!(hb.member_epoch, 1);
        assert!(hb.topology.is_none());
        assert!(hb.process_id.is_none());
        assert_eq!(hb.rebalance_timeout_ms, -1);
        assert!(hb.active_tasks.is_none() && hb.standby_tasks.is_none());
        assert!(hb.warmup_tasks.is_none(), "unchanged lists are null");
        m.handle_response(now, ok(1));
    }
}

#[test]
fn heartbeat_interval_is_taken_from_the_response() {
    let (mut m, now) = member_owning(1, &[]);
    let at = now;
    send(&mut m, at);
    m.handle_response(
        at,
        StreamsGroupHeartbeatResponse {
            heartbeat_interval_ms: 1_300,
            ..ok(1)
        },
    );
    assert_eq!(m.heartbeat_interval(), Duration::from_millis(1_300));
    assert_eq!(m.next_deadline(), Some(at + Duration::from_millis(1_300)));
    assert!(m.poll_request(at + Duration::from_millis(1_299)).is_none());
    assert!(m.poll_request(at + Duration::from_millis(1_300)).is_some());
}

#[test]
fn all_null_task_lists_keep_what_the_member_owns() {
    let (mut m, now) = member_owning(1, &[0, 1]);
    send(&mut m, now);
    m.handle_response(now, ok(2));
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.owned_active(), &ids(&[0, 1]));
    assert_eq!(m.state(), MemberState::Stable);
}

#[test]
fn all_present_task_lists_replace_the_assignment() {
    let (mut m, now) = member_owning(1, &[0, 1]);
    send(&mut m, now);
    m.handle_response(now, assign(3, &[0, 1, 2], &[3], &[4]));
    assert_eq!(
        drain(&mut m),
        vec![MembershipEvent::Assigned {
            active: ids(&[0, 1, 2]),
            standby: ids(&[3, 4]),
        }]
    );
    assert_eq!(m.state(), MemberState::Acknowledging);
    let ack = send(&mut m, now);
    assert_eq!(ack.member_epoch, 3);
    assert_eq!(ack.active_tasks, Some(lists(&[0, 1, 2])));
    assert_eq!(ack.standby_tasks, Some(lists(&[3])));
    assert_eq!(
        ack.warmup_tasks,
        Some(lists(&[4])),
        "warm-ups reported as warm-ups"
    );
    m.handle_response(now, ok(3));
    assert_eq!(m.state(), MemberState::Stable);
}

#[test]
fn mixed_task_lists_are_fatal() {
    let (mut m, now) = member_owning(1, &[0]);
    send(&mut m, now);
    m.handle_response(
        now,
        StreamsGroupHeartbeatResponse {
            active_tasks: Some(lists(&[0])),
            warmup_tasks: Some(vec![]),
            ..ok(3)
        },
    );
    assert_eq!(
        drain(&mut m),
        vec![MembershipEvent::Fatal(MembershipError::MixedTaskLists {
            active: true,
            standby: false,
            warmup: true,
        })]
    );
    assert_eq!(m.state(), MemberState::Fatal);
    assert!(m.poll_request(now + Duration::from_secs(60)).is_none());
    assert_eq!(m.next_deadline(), None);
}

#[test]
fn revocation_is_acknowledged_only_after_tasks_revoked() {
    let (mut m, mut now) = member_owning(1, &[0, 1, 2, 3]);
    send(&mut m, now);
    m.handle_response(now, assign(2, &[0, 1], &[], &[]));
    assert_eq!(
        drain(&mut m),
        vec![MembershipEvent::Revoke {
            tasks: ids(&[2, 3])
        }]
    );
    assert_eq!(m.state(), MemberState::Reconciling);
    assert!(m.poll_request(now).is_none(), "nothing to acknowledge yet");

    // Heartbeats go on at the interval, still reporting the revoked tasks as owned.
    now += INTERVAL;
    let hb = send(&mut m, now);
    assert!(hb.active_tasks.is_none(), "owned lists unchanged: null");
    m.handle_response(now, ok(2));
    assert_eq!(m.owned_active(), &ids(&[0, 1, 2, 3]));

    // A partial release is not enough.
    now += Duration::from_millis(10);
    m.tasks_revoked(now, &ids(&[2]));
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.state(), MemberState::Reconciling);

    m.tasks_revoked(now, &ids(&[3, 9]));
    assert_eq!(
        drain(&mut m),
        vec![MembershipEvent::Assigned {
            active: ids(&[0, 1]),
            standby: ids(&[]),
        }]
    );
    assert_eq!(
        m.next_deadline(),
        Some(now),
        "the acknowledgement is due at once"
    );
    let ack = send(&mut m, now);
    assert_eq!(ack.member_epoch, 2);
    assert_eq!(sent_active(&ack), Some(ids(&[0, 1])));
    assert_eq!(ack.standby_tasks, Some(vec![]));
    assert_eq!(ack.warmup_tasks, Some(vec![]));

    // Tasks another member still held arrive in a later response.
    m.handle_response(now, assign(3, &[0, 1, 4], &[], &[]));
    assert_eq!(
        drain(&mut m),
        vec![MembershipEvent::Assigned {
            active: ids(&[0, 1, 4]),
            standby: ids(&[]),
        }]
    );
}

#[test]
fn a_new_target_during_revocation_is_reconciled_after_it() {
    let (mut m, mut now) = member_owning(1, &[0, 1, 2]);
    send(&mut m, now);
    m.handle_response(now, assign(2, &[0, 1], &[], &[]));
    assert_eq!(
        drain(&mut m),
        vec![MembershipEvent::Revoke { tasks: ids(&[2]) }]
    );
    now += INTERVAL;
    send(&mut m, now);
    m.handle_response(now, assign(2, &[0], &[], &[]));
    assert!(drain(&mut m).is_empty(), "one revocation at a time");
    m.tasks_revoked(now, &ids(&[2]));
    assert_eq!(
        drain(&mut m),
        vec![MembershipEvent::Revoke { tasks: ids(&[1]) }]
    );
    m.tasks_revoked(now, &ids(&[1]));
    assert_eq!(
        drain(&mut m),
        vec![MembershipEvent::Assigned {
            active: ids(&[0]),
            standby: ids(&[]),
        }]
    );
    assert_eq!(sent_active(&send(&mut m, now)), Some(ids(&[0])));
}
