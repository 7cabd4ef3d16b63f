//! The task manager with a fake clock and the driver's answers played by hand.

use super::*;
use std::time::Duration;

const INTERVAL: Duration = Duration::from_secs(1);
const CLEANUP: Duration = Duration::from_secs(600);

fn manager(exactly_once: bool) -> (TaskManager, Instant) {
    let now = Instant::now();
    let config = ManagerConfig {
        exactly_once,
        commit_interval: INTERVAL,
        cleanup_delay: CLEANUP,
        checkpoint: None,
    };
    (TaskManager::new(config, now), now)
}

fn drain(m: &mut TaskManager) -> Vec<Action> {
    std::iter::from_fn(|| m.poll_action()).collect()
}

fn set(tasks: &[Partition]) -> BTreeSet<Partition> {
    tasks.iter().copied().collect()
}

/// Assigns `tasks` and plays the driver until they run: their stores hold nothing, the
/// changelogs are empty, and `committed` is the group's offset of each.
fn running(m: &mut TaskManager, now: Instant, tasks: &[Partition], committed: Option<i64>) {
    m.handle_assignment(now, set(tasks), set(&[]));
    drain(m);
    for t in tasks {
        m.handle_created(*t, None);
        m.handle_restore_started(*t, None, 0);
    }
    let fetched: Vec<(Partition, Option<i64>)> = tasks.iter().map(|t| (*t, committed)).collect();
    m.handle_committed(&fetched);
    drain(m);
    for t in tasks {
        assert!(m.is_running(*t));
    }
}

/// Runs the commit cycle of `at` through the flush acknowledgement; returns the actions.
fn tick_and_ack(m: &mut TaskManager, at: Instant) -> Vec<Action> {
    m.handle_timeout(at);
    let mut actions = drain(m);
    let id = actions
        .iter()
        .find_map(|a| match a {
            Action::Flush { id, .. } => Some(*id),
            _ => None,
        })
        .expect("a flush");
    m.handle_flush_acked(at, id);
    actions.extend(drain(m));
    actions
}

#[test]
fn a_new_task_restores_to_the_end_then_processes_from_the_committed_offset() {
    let (mut m, now) = manager(false);
    m.handle_assignment(now, set(&[0]), set(&[]));
    assert_eq!(
        drain(&mut m),
        vec![Action::Create {
            task: 0,
            standby: false
        }]
    );
    m.handle_created(0, Some(9));
    assert_eq!(
        drain(&mut m),
        vec![Action::StartRestore {
            task: 0,
            after: Some(9)
        }]
    );
    m.handle_restore_started(0, Some(9), 20);
    m.handle_restored(0, 15);
    assert!(drain(&mut m).is_empty(), "not at the end yet");
    assert!(!m.is_running(0));
    assert_eq!(
        m.state(0),
        Some(TaskState::Restoring {
            position: Some(15),
            end: Some(20)
        })
    );
    m.handle_restored(0, 19);
    assert_eq!(
        drain(&mut m),
        vec![
            Action::StopRestore { task: 0 },
            Action::FetchCommitted { tasks: vec![0] }
        ]
    );
    m.handle_committed(&[(0, Some(500))]);
    assert_eq!(
        drain(&mut m),
        vec![Action::StartProcessing {
            task: 0,
            offset: Some(500)
        }]
    );
    assert!(m.is_running(0));
}

#[test]
fn flush_then_acknowledgement_then_commit_while_processing_goes_on() {
    let (mut m, now) = manager(false);
    running(&mut m, now, &[0, 1], None);
    for offset in 0..10 {
        m.handle_processed(0, offset);
    }
    let at = now + INTERVAL;
    m.handle_timeout(at);
    let actions = drain(&mut m);
    assert_eq!(
        actions,
        vec![Action::Flush {
            id: 1,
            tasks: vec![0, 1]
        }]
    );
    // Processing goes on while the flush is acknowledged; the commit holds the positions
    // noted at the flush, not later ones.
    m.handle_processed(0, 10);
    m.handle_processed(1, 0);
    assert!(
        drain(&mut m).is_empty(),
        "nothing is committed before the acks"
    );
    m.handle_flush_acked(at, 1);
    assert_eq!(
        drain(&mut m),
        vec![Action::CommitOffsets {
            offsets: vec![(0, 10)]
        }]
    );
    m.handle_commit_result(at, Ok(()));
    assert_eq!(m.snapshot()[0].committed, Some(10));
    let next = tick_and_ack(&mut m, at + INTERVAL);
    assert_eq!(
        next.last(),
        Some(&Action::CommitOffsets {
            offsets: vec![(0, 11), (1, 1)]
        })
    );
}

#[test]
fn a_task_taken_back_never_commits_below_the_offset_another_member_committed() {
    let (mut m, now) = manager(false);
    running(&mut m, now, &[0], None);
    for offset in 0..20 {
        m.handle_processed(0, offset);
    }
    m.handle_revoke(now, set(&[0]));
    let actions = drain(&mut m);
    assert_eq!(
        actions,
        vec![
            Action::StopProcessing { tasks: vec![0] },
            Action::Flush {
                id: 1,
                tasks: vec![0]
            }
        ]
    );
    m.handle_flush_acked(now, 1);
    assert_eq!(
        drain(&mut m),
        vec![Action::CommitOffsets {
            offsets: vec![(0, 20)]
        }]
    );
    m.handle_commit_result(now, Ok(()));
    assert_eq!(
        drain(&mut m),
        vec![
            Action::CloseClean { task: 0 },
            Action::AcknowledgeRevocation { tasks: set(&[0]) }
        ]
    );
    // Another member processed and committed up to 25; the task comes back, dormant store
    // and all, and starts there.
    m.handle_assignment(now, set(&[0]), set(&[]));
    drain(&mut m);
    m.handle_created(0, Some(7));
    m.handle_restore_started(0, Some(7), 9);
    m.handle_restored(0, 8);
    m.handle_committed(&[(0, Some(25))]);
    assert_eq!(
        drain(&mut m).last(),
        Some(&Action::StartProcessing {
            task: 0,
            offset: Some(25)
        })
    );
    let quiet = tick_and_ack(&mut m, now + INTERVAL);
    assert_eq!(
        quiet.last(),
        Some(&Action::CommitOffsets { offsets: vec![] }),
        "nothing processed: nothing committed, certainly not 20"
    );
    m.handle_commit_result(now + INTERVAL, Ok(()));
    m.handle_processed(0, 25);
    assert_eq!(
        tick_and_ack(&mut m, now + 2 * INTERVAL).last(),
        Some(&Action::CommitOffsets {
            offsets: vec![(0, 26)]
        })
    );
}

#[test]
fn a_revocation_during_a_restore_closes_the_task_without_a_commit() {
    let (mut m, now) = manager(false);
    running(&mut m, now, &[1], None);
    m.handle_assignment(now, set(&[0, 1]), set(&[]));
    drain(&mut m);
    m.handle_created(0, None);
    m.handle_restore_started(0, None, 1_000_000);
    m.handle_restored(0, 4_999);
    drain(&mut m);
    m.handle_revoke(now, set(&[0]));
    assert_eq!(
        drain(&mut m),
        vec![
            Action::StopRestore { task: 0 },
            Action::CloseClean { task: 0 },
            Action::AcknowledgeRevocation { tasks: set(&[0]) }
        ]
    );
    assert!(m.is_running(1), "the other task is untouched");
}

#[test]
fn a_refused_commit_closes_the_tasks_dirty_and_rejoins() {
    let (mut m, now) = manager(false);
    running(&mut m, now, &[0, 1], Some(3));
    m.handle_processed(0, 3);
    let actions = tick_and_ack(&mut m, now + INTERVAL);
    assert!(matches!(actions.last(), Some(Action::CommitOffsets { .. })));
    m.handle_commit_result(now + INTERVAL, Err(CommitFailure::Refused));
    assert_eq!(
        drain(&mut m),
        vec![
            Action::CloseDirty { task: 0 },
            Action::CloseDirty { task: 1 },
            Action::StopProcessing { tasks: vec![0, 1] },
            Action::Rejoin
        ]
    );
    assert!(m.snapshot().is_empty());
}

#[test]
fn exactly_once_commits_one_transaction_per_cycle_and_an_abort_loses_the_tasks() {
    let (mut m, now) = manager(true);
    running(&mut m, now, &[0], None);
    m.handle_processed(0, 0);
    m.handle_timeout(now + INTERVAL);
    assert_eq!(
        drain(&mut m),
        vec![
            Action::Flush {
                id: 1,
                tasks: vec![0]
            },
            Action::CommitTransaction {
                offsets: vec![(0, 1)]
            }
        ]
    );
    m.handle_commit_result(now + INTERVAL, Ok(()));
    m.handle_processed(0, 1);
    m.handle_timeout(now + 2 * INTERVAL);
    drain(&mut m);
    m.handle_commit_result(now + 2 * INTERVAL, Err(CommitFailure::Aborted));
    assert_eq!(
        drain(&mut m),
        vec![
            Action::AbortTransaction,
            Action::CloseDirty { task: 0 },
            Action::StopProcessing { tasks: vec![0] },
            Action::Rejoin
        ]
    );
}

#[test]
fn a_standby_follows_its_changelog_and_its_promotion_restores_only_the_tail() {
    let (mut m, now) = manager(false);
    m.handle_assignment(now, set(&[]), set(&[2]));
    assert_eq!(
        drain(&mut m),
        vec![Action::Create {
            task: 2,
            standby: true
        }]
    );
    m.handle_created(2, None);
    assert_eq!(
        drain(&mut m),
        vec![Action::StartRestore {
            task: 2,
            after: None
        }]
    );
    m.handle_restore_started(2, None, 1_000);
    m.handle_restored(2, 999);
    assert!(drain(&mut m).is_empty(), "a standby never finishes");
    m.handle_standby_end(2, 1_010);
    assert_eq!(
        m.state(2),
        Some(TaskState::Standby {
            position: Some(999),
            lag: Some(10)
        })
    );
    assert!(!m.is_running(2));
    m.handle_assignment(now, set(&[2]), set(&[]));
    assert_eq!(
        drain(&mut m),
        vec![
            Action::StopRestore { task: 2 },
            Action::StartRestore {
                task: 2,
                after: Some(999)
            }
        ],
        "only the tail after the standby's position"
    );
    m.handle_restore_started(2, Some(999), 1_010);
    m.handle_restored(2, 1_009);
    assert_eq!(
        drain(&mut m),
        vec![
            Action::StopRestore { task: 2 },
            Action::FetchCommitted { tasks: vec![2] }
        ]
    );
}

#[test]
fn a_shutdown_during_a_restore_stops_it_commits_the_running_tasks_and_leaves() {
    let (mut m, now) = manager(false);
    running(&mut m, now, &[0], None);
    m.handle_processed(0, 41);
    m.handle_assignment(now, set(&[0, 1]), set(&[]));
    drain(&mut m);
    m.handle_created(1, None);
    m.handle_restore_started(1, None, 1_000_000);
    drain(&mut m);
    m.shutdown(now);
    assert_eq!(
        drain(&mut m),
        vec![
            Action::StopRestore { task: 1 },
            Action::CloseClean { task: 1 },
            Action::StopProcessing { tasks: vec![0] },
            Action::Flush {
                id: 1,
                tasks: vec![0]
            },
        ]
    );
    m.handle_flush_acked(now, 1);
    assert_eq!(
        drain(&mut m),
        vec![Action::CommitOffsets {
            offsets: vec![(0, 42)]
        }]
    );
    assert!(!m.has_left());
    m.handle_commit_result(now, Ok(()));
    assert_eq!(
        drain(&mut m),
        vec![Action::CloseClean { task: 0 }, Action::Leave]
    );
    assert!(m.has_left());
}

#[test]
fn dormant_stores_are_dropped_after_the_cleanup_delay() {
    let (mut m, now) = manager(false);
    m.handle_assignment(now, set(&[0]), set(&[]));
    m.handle_created(0, None);
    m.handle_revoke(now, set(&[0]));
    drain(&mut m);
    assert_eq!(m.poll_timeout(), Some(now + INTERVAL));
    m.handle_timeout(now + CLEANUP - Duration::from_millis(1));
    assert!(!drain(&mut m).contains(&Action::DropDormant { task: 0 }));
    m.handle_timeout(now + CLEANUP);
    assert!(drain(&mut m).contains(&Action::DropDormant { task: 0 }));
    // Taken back before the delay: not dropped.
    m.handle_assignment(now + CLEANUP, set(&[1]), set(&[]));
    m.handle_created(1, None);
    m.handle_revoke(now + CLEANUP, set(&[1]));
    m.handle_assignment(now + CLEANUP, set(&[1]), set(&[]));
    m.handle_created(1, Some(3));
    drain(&mut m);
    m.handle_timeout(now + 3 * CLEANUP);
    assert!(!drain(&mut m).contains(&Action::DropDormant { task: 1 }));
}
