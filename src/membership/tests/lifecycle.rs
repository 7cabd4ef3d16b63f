//! Group readiness, status codes, v0/v1 fields and leaving.

use std::time::{Duration, Instant};

use super::*;

#[test]
fn readiness_follows_blocking_statuses() {
    let (mut m, mut now) = member_owning(1, &[]);
    let mut step = |m: &mut Membership, codes: &[i8]| {
        send(m, now);
        m.handle_response(now, with_statuses(codes));
        now += INTERVAL;
        drain(m)
    };
    assert!(m.is_ready(), "no statuses: ready");
    assert_eq!(
        step(&mut m, &[3]),
        vec![MembershipEvent::NotReady {
            statuses: vec![status(3)],
        }]
    );
    assert!(!m.is_ready());
    assert!(step(&mut m, &[3]).is_empty(), "no repeat while unchanged");
    assert_eq!(
        step(&mut m, &[0, 5]),
        vec![MembershipEvent::NotReady {
            statuses: vec![status(0), status(5)],
        }]
    );
    assert_eq!(step(&mut m, &[0]), vec![MembershipEvent::Ready]);
    assert!(m.is_ready());
    assert!(step(&mut m, &[]).is_empty());
    for code in [1, 2] {
        assert!(matches!(
            step(&mut m, &[code]).as_slice(),
            [MembershipEvent::NotReady { .. }]
        ));
        assert_eq!(step(&mut m, &[]), vec![MembershipEvent::Ready]);
    }
}

#[test]
fn unknown_status_codes_are_tolerated() {
    let mut m = Membership::new(config(), 1);
    let now = Instant::now();
    send(&mut m, now);
    m.handle_response(
        now,
        StreamsGroupHeartbeatResponse {
            status: Some(vec![status(42), status(-7), status(4), status(6)]),
            ..assign(1, &[0], &[], &[])
        },
    );
    assert_eq!(
        drain(&mut m),
        vec![
            MembershipEvent::Assigned {
                active: ids(&[0]),
                standby: ids(&[]),
            },
            MembershipEvent::Ready,
        ]
    );
}

fn offsets(offset: i64) -> Vec<TaskOffset> {
    vec![TaskOffset {
        subtopology_id: "0".into(),
        partition: 0,
        offset,
    }]
}

#[test]
fn v0_never_sends_task_offsets_or_instance_id() {
    let mut m = Membership::new(config(), 0);
    let mut now = Instant::now();
    m.set_task_offsets(offsets(5), offsets(9));
    let join = send(&mut m, now);
    assert!(join.instance_id.is_none());
    assert!(join.task_offsets.is_none() && join.task_end_offsets.is_none());
    m.handle_response(now, assign(1, &[0], &[], &[]));
    for _ in 0..3 {
        now += Duration::from_secs(120);
        m.set_task_offsets(offsets(now.elapsed().as_nanos() as i64), offsets(1));
        let hb = send(&mut m, now);
        assert!(hb.instance_id.is_none());
        assert!(hb.task_offsets.is_none() && hb.task_end_offsets.is_none());
        m.handle_response(now, ok(1));
    }
}

#[test]
fn v1_sends_instance_id_and_task_offsets_paced_by_the_broker_interval() {
    let mut m = Membership::new(config(), 1);
    let mut now = Instant::now();
    m.set_task_offsets(offsets(5), offsets(9));
    let join = send(&mut m, now);
    assert_eq!(join.instance_id.as_deref(), Some("instance-1"));
    assert_eq!(join.task_offsets, Some(offsets(5)));
    assert_eq!(join.task_end_offsets, Some(offsets(9)));
    m.handle_response(now, ok(1));

    m.set_task_offsets(offsets(6), offsets(9));
    now += INTERVAL;
    let hb = send(&mut m, now);
    assert_eq!(hb.instance_id.as_deref(), Some("instance-1"));
    assert!(hb.task_offsets.is_none(), "not before TaskOffsetIntervalMs");
    m.handle_response(now, ok(1));

    now += Duration::from_secs(60);
    assert_eq!(send(&mut m, now).task_offsets, Some(offsets(6)));
    m.handle_response(now, ok(1));
    now += Duration::from_secs(60);
    assert!(
        send(&mut m, now).task_offsets.is_none(),
        "unchanged: not resent"
    );
}

#[test]
fn leave_sends_epoch_minus_one_and_reports_left_when_answered() {
    let (mut m, now) = member_owning(1, &[0, 1]);
    m.leave(now);
    assert_eq!(m.state(), MemberState::Leaving);
    assert_eq!(m.member_epoch(), -1);
    let leave = send(&mut m, now);
    assert_eq!(leave.member_epoch, -1);
    assert_eq!(leave.member_id, MEMBER_ID);
    assert!(leave.topology.is_none() && leave.active_tasks.is_none());
    assert!(m.poll_request(now).is_none());
    m.handle_response(now, ok(-1));
    assert_eq!(drain(&mut m), vec![MembershipEvent::Left]);
    assert_eq!(m.state(), MemberState::Left);
    assert!(m.poll_request(now + Duration::from_secs(60)).is_none());
    assert_eq!(m.next_deadline(), None);
}

#[test]
fn an_unanswered_leave_ends_after_the_bound() {
    let (mut m, now) = member_owning(1, &[0]);
    m.leave(now);
    send(&mut m, now);
    assert_eq!(m.next_deadline(), Some(now + LEAVE_TIMEOUT));
    m.handle_timeout(now + LEAVE_TIMEOUT - Duration::from_millis(1));
    assert!(drain(&mut m).is_empty());
    m.handle_timeout(now + LEAVE_TIMEOUT);
    assert_eq!(drain(&mut m), vec![MembershipEvent::Left]);
    m.handle_response(now + LEAVE_TIMEOUT, ok(-1));
    assert!(drain(&mut m).is_empty(), "a late answer changes nothing");
}

#[test]
fn leave_during_a_heartbeat_waits_for_it_and_ignores_its_assignment() {
    let (mut m, now) = member_owning(1, &[0]);
    send(&mut m, now);
    m.leave(now);
    assert!(m.poll_request(now).is_none());
    m.handle_response(now, assign(3, &[0, 1], &[], &[]));
    assert!(drain(&mut m).is_empty());
    assert_eq!(send(&mut m, now).member_epoch, -1);
    m.handle_failure(now, FailureKind::Transport);
    assert_eq!(drain(&mut m), vec![MembershipEvent::Left]);
}

#[test]
fn leave_before_joining_ends_at_once() {
    let mut m = Membership::new(config(), 1);
    m.leave(Instant::now());
    assert_eq!(drain(&mut m), vec![MembershipEvent::Left]);
    assert!(m.poll_request(Instant::now()).is_none());
}
