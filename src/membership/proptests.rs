//! Random operation sequences against the machine: no panic, and no request that a broker
//! would reject for its shape (Topology off epoch 0, mixed task lists, v1-only fields on v0),
//! and no active task dropped from the reported lists before the runtime released it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::tests::{config, lists, ok};
use super::*;
use crate::protocol::{
    Status, StatusCode, StreamsGroupHeartbeatRequest, StreamsGroupHeartbeatResponse, TaskOffset,
};

#[derive(Debug, Clone)]
enum Op {
    Advance(u16),
    Poll,
    Respond(Box<StreamsGroupHeartbeatResponse>),
    Fail,
    Timeout,
    ReleaseRevoked,
    Leave,
    Offsets(i64),
}

fn partitions() -> impl Strategy<Value = Vec<i32>> {
    proptest::collection::vec(0..6i32, 0..5)
}

fn task_list() -> impl Strategy<Value = Option<Vec<crate::protocol::TaskIds>>> {
    proptest::option::of(partitions().prop_map(|p| lists(&p)))
}

fn response() -> impl Strategy<Value = StreamsGroupHeartbeatResponse> {
    let error = prop_oneof![
        6 => Just(0i16),
        1 => proptest::sample::select(vec![14i16, 15, 16, 25, 29, 30, 42, 110, 132, 999]),
    ];
    (
        error,
        -2..6i32,
        -5..2_000i32,
        (task_list(), task_list(), task_list()),
        proptest::option::of(proptest::collection::vec(-3..9i8, 0..3)),
    )
        .prop_map(
            |(error_code, epoch, interval, (active, standby, warmup), codes)| {
                StreamsGroupHeartbeatResponse {
                    error_code,
                    heartbeat_interval_ms: interval,
                    active_tasks: active,
                    standby_tasks: standby,
                    warmup_tasks: warmup,
                    status: codes.map(|codes| {
                        codes
                            .into_iter()
                            .map(|c| Status {
                                status_code: StatusCode(c),
                                status_detail: String::new(),
                            })
                            .collect()
                    }),
                    ..ok(epoch)
                }
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3_000u16).prop_map(Op::Advance),
        4 => Just(Op::Poll),
        4 => response().prop_map(|r| Op::Respond(Box::new(r))),
        1 => Just(Op::Fail),
        1 => Just(Op::Timeout),
        2 => Just(Op::ReleaseRevoked),
        1 => Just(Op::Leave),
        1 => any::<i64>().prop_map(Op::Offsets),
    ]
}

/// What the broker was told about active tasks, to check that a task leaves the reported
/// lists only after the runtime released it.
#[derive(Default)]
struct Reported {
    /// Active tasks in the latest request that carried lists.
    active: BTreeSet<TaskId>,
    /// Tasks revoked by a `Revoke` and released through `tasks_revoked` since.
    released: BTreeSet<TaskId>,
}

fn check_request(
    req: &StreamsGroupHeartbeatRequest,
    version: i16,
    reported: &mut Reported,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(req.topology.is_some(), req.member_epoch == 0, "{:?}", req);
    let present = [
        req.active_tasks.is_some(),
        req.standby_tasks.is_some(),
        req.warmup_tasks.is_some(),
    ];
    prop_assert!(
        present.iter().all(|p| *p == present[0]),
        "mixed lists: {:?}",
        req
    );
    prop_assert!(req.member_epoch >= -1);
    if version == 0 {
        prop_assert!(req.instance_id.is_none());
        prop_assert!(req.task_offsets.is_none() && req.task_end_offsets.is_none());
    }
    let Some(active) = &req.active_tasks else {
        return Ok(());
    };
    let sent: BTreeSet<TaskId> = active
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| TaskId::new(&*t.subtopology_id, *p))
        })
        .collect();
    if req.member_epoch > 0 {
        let dropped: BTreeSet<TaskId> = reported.active.difference(&sent).cloned().collect();
        prop_assert!(
            dropped.is_subset(&reported.released),
            "tasks {:?} reported released before the runtime released them",
            dropped.difference(&reported.released).collect::<Vec<_>>()
        );
    } else {
        prop_assert!(sent.is_empty(), "a join carries empty lists");
    }
    reported.released.retain(|t| !sent.contains(t));
    reported.active = sent;
    Ok(())
}

fn run(version: i16, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut m = Membership::new(config(), version);
    let mut now = Instant::now();
    let mut in_flight = false;
    let mut unreleased: BTreeSet<TaskId> = BTreeSet::new();
    let mut reported = Reported::default();
    let mut stopped = false;
    for op in ops {
        match op {
            Op::Advance(ms) => now += Duration::from_millis(u64::from(ms)),
            Op::Poll => {
                if let Some(req) = m.poll_request(now) {
                    prop_assert!(!in_flight, "second request while one is in flight");
                    prop_assert!(!stopped, "request after Left/Fatal: {:?}", req);
                    check_request(&req, version, &mut reported)?;
                    in_flight = true;
                }
            }
            Op::Respond(resp) if in_flight => {
                in_flight = false;
                m.handle_response(now, *resp);
            }
            Op::Fail if in_flight => {
                in_flight = false;
                m.handle_failure(now, FailureKind::Transport);
            }
            Op::Respond(_) | Op::Fail => {}
            Op::Timeout => m.handle_timeout(now),
            Op::ReleaseRevoked => {
                m.tasks_revoked(now, &unreleased);
                reported.released.append(&mut unreleased);
            }
            Op::Leave => m.leave(now),
            Op::Offsets(offset) => {
                let report = vec![TaskOffset {
                    subtopology_id: "0".into(),
                    partition: 0,
                    offset,
                }];
                m.set_task_offsets(report.clone(), report);
            }
        }
        while let Some(event) = m.poll_event() {
            match event {
                MembershipEvent::Revoke { tasks } => unreleased.extend(tasks),
                MembershipEvent::Lost => unreleased.clear(),
                MembershipEvent::Left | MembershipEvent::Fatal(_) => {
                    unreleased.clear();
                    stopped = true;
                }
                _ => {}
            }
        }
        if let Some(deadline) = m.next_deadline() {
            prop_assert!(!stopped);
            prop_assert!(deadline <= now + Duration::from_secs(3_600));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_response_sequences_keep_requests_well_formed(
        version in 0..=1i16,
        ops in proptest::collection::vec(op(), 0..80),
    ) {
        run(version, ops)?;
    }
}
