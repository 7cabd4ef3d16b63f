//! Every row of the heartbeat error table, and transport failures.

use std::time::{Duration, Instant};

use super::*;

#[test]
fn fencing_loses_all_tasks_and_rejoins_at_epoch_zero_with_the_same_member_id() {
    for code in [110, 25] {
        let (mut m, now) = member_owning(1, &[0, 1, 2]);
        send(&mut m, now);
        m.handle_response(now, assign(3, &[0], &[], &[]));
        assert_eq!(
            drain(&mut m),
            vec![MembershipEvent::Revoke {
                tasks: ids(&[1, 2])
            }]
        );
        let later = now + INTERVAL;
        send(&mut m, later);
        m.handle_response(later, error(code));
        assert_eq!(drain(&mut m), vec![MembershipEvent::Lost], "code {code}");
        assert!(m.owned_active().is_empty());
        assert_eq!(m.member_epoch(), 0);
        assert_eq!(m.state(), MemberState::Joining);

        let rejoin = send(&mut m, later);
        assert_eq!(rejoin.member_epoch, 0);
        assert_eq!(rejoin.member_id, MEMBER_ID);
        assert_eq!(rejoin.topology, Some(config().topology));
        assert_eq!(rejoin.active_tasks, Some(vec![]));
        m.tasks_revoked(later, &ids(&[1, 2]));
        assert!(drain(&mut m).is_empty(), "a stale release is ignored");
        m.handle_response(later, assign(5, &[0, 1], &[], &[]));
        assert_eq!(
            drain(&mut m),
            vec![MembershipEvent::Assigned {
                active: ids(&[0, 1]),
                standby: ids(&[]),
            }]
        );
        assert_eq!(m.member_epoch(), 5);
    }
}

#[test]
fn a_rejoin_asked_by_the_runtime_releases_every_task_at_once_without_an_event() {
    let (mut m, now) = member_owning(1, &[0, 1]);
    m.rejoin(now);
    assert!(
        drain(&mut m).is_empty(),
        "the runtime already closed its tasks"
    );
    assert!(m.owned_active().is_empty());
    assert_eq!(m.state(), MemberState::Joining);
    assert_eq!(m.next_deadline(), Some(now), "the rejoin is due at once");
    let rejoin = send(&mut m, now);
    assert_eq!(
        (rejoin.member_epoch, rejoin.member_id.as_str()),
        (0, MEMBER_ID)
    );
    assert_eq!(rejoin.active_tasks, Some(vec![]), "owning nothing");
    m.handle_response(now, assign(4, &[0, 1], &[], &[]));
    assert_eq!(
        drain(&mut m),
        vec![MembershipEvent::Assigned {
            active: ids(&[0, 1]),
            standby: ids(&[]),
        }]
    );
}

#[test]
fn coordinator_errors_ask_for_rediscovery_and_resend_full_state_without_backoff() {
    for code in [16, 15] {
        let (mut m, now) = member_owning(1, &[0, 1]);
        send(&mut m, now);
        m.handle_response(now, error(code));
        assert_eq!(drain(&mut m), vec![MembershipEvent::CoordinatorChanged]);
        assert_eq!(m.next_deadline(), Some(now));
        let hb = send(&mut m, now);
        assert_eq!(hb.member_epoch, 2);
        assert!(hb.topology.is_none());
        assert_eq!(sent_active(&hb), Some(ids(&[0, 1])), "full state again");
        assert_eq!(hb.standby_tasks, Some(vec![]));
        assert_eq!(hb.warmup_tasks, Some(vec![]));
    }
}

#[test]
fn coordinator_load_in_progress_retries_with_doubling_capped_backoff() {
    let (mut m, mut now) = member_owning(1, &[0]);
    let mut expected = [100, 200, 400, 800, 1000, 1000].into_iter();
    for _ in 0..6 {
        send(&mut m, now);
        m.handle_response(now, error(14));
        assert!(drain(&mut m).is_empty());
        let delay = Duration::from_millis(expected.next().unwrap());
        assert_eq!(m.next_deadline(), Some(now + delay));
        assert!(m
            .poll_request(now + delay - Duration::from_millis(1))
            .is_none());
        now += delay;
    }
    let hb = send(&mut m, now);
    assert_eq!(sent_active(&hb), Some(ids(&[0])));
    m.handle_response(now, ok(2));
    assert_eq!(
        m.next_deadline(),
        Some(now + INTERVAL),
        "a success resets the backoff"
    );
}

#[test]
fn topic_authorization_failure_is_reported_and_the_member_stays() {
    let (mut m, now) = member_owning(1, &[0]);
    send(&mut m, now);
    m.handle_response(now, error(29));
    assert_eq!(
        drain(&mut m),
        vec![MembershipEvent::Warning(MembershipError::Broker {
            error: ResponseError::TopicAuthorizationFailed,
            message: Some("error 29".into()),
        })]
    );
    assert_eq!(m.state(), MemberState::Stable);
    assert_eq!(m.member_epoch(), 2);
    let retry = now + RETRY_BACKOFF_INITIAL;
    assert_eq!(m.next_deadline(), Some(retry));
    assert_eq!(sent_active(&send(&mut m, retry)), Some(ids(&[0])));
}

#[test]
fn every_fatal_code_stops_the_member() {
    for code in [30, 42, 81, 130, 131, 132, 35, 69, 111, 31, -1, 999] {
        let (mut m, now) = member_owning(1, &[0]);
        send(&mut m, now);
        m.handle_response(now, error(code));
        let events = drain(&mut m);
        assert!(
            matches!(
                events.as_slice(),
                [MembershipEvent::Fatal(MembershipError::Broker { error, .. })]
                    if error.code() == code
            ),
            "code {code}: {events:?}"
        );
        assert_eq!(m.state(), MemberState::Fatal);
        assert_eq!(m.next_deadline(), None);
        for later in [now, now + Duration::from_secs(3600)] {
            m.handle_timeout(later);
            assert!(m.poll_request(later).is_none(), "code {code}");
        }
        m.leave(now);
        assert!(drain(&mut m).is_empty());
    }
}

#[test]
fn transport_failure_backs_off_then_resends_full_state() {
    let (mut m, now) = member_owning(1, &[0, 1]);
    let hb = send(&mut m, now);
    assert!(hb.active_tasks.is_none());
    m.handle_failure(now, FailureKind::Timeout);
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.next_deadline(), Some(now + RETRY_BACKOFF_INITIAL));
    assert!(m.poll_request(now).is_none());
    let retry = send(&mut m, now + RETRY_BACKOFF_INITIAL);
    assert_eq!(retry.member_epoch, 2);
    assert_eq!(sent_active(&retry), Some(ids(&[0, 1])));
    assert_eq!(retry.standby_tasks, Some(vec![]));
}

#[test]
fn a_failed_join_is_retried_as_a_join() {
    let mut m = Membership::new(config(), 1);
    let now = Instant::now();
    send(&mut m, now);
    m.handle_failure(now, FailureKind::Transport);
    let rejoin = send(&mut m, now + RETRY_BACKOFF_INITIAL);
    assert_eq!(rejoin.member_epoch, 0);
    assert!(rejoin.topology.is_some());
}
